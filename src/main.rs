use std::process::ExitCode;

#[actix::main]
async fn main() -> ExitCode {
    let command = order_process::cli::parse().into_command();
    let telemetry = match order_process::telemetry::init(command.log_format(), command.default_log_filter()) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = order_process::run(command).await;
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    telemetry.shutdown().await;
    result.unwrap_or(ExitCode::FAILURE)
}
