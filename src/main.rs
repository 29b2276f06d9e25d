use std::process::ExitCode;

#[actix::main]
async fn main() -> ExitCode {
    let cli = order_process::cli::parse();
    let command = cli.into_command();
    order_process::telemetry::init(command.log_format());
    match order_process::run(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
