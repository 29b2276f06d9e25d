//! order-process: the composition root.
//!
//! The actors, their ports and adapters live in the `actors` crate; the schema in `migration`.
//! This crate reads the configuration ([`cli`], [`settings`]), sets up logging
//! ([`telemetry`]), serves the health endpoints ([`http`]) and starts and stops the worker
//! ([`startup`]); the operators' commands are [`dlq`] and [`inspect`]. `main.rs` only calls [`run`].

pub mod cli;
pub mod dlq;
pub mod http;
pub mod inspect;
pub mod settings;
pub mod startup;
pub mod telemetry;

use cli::Command;

/// Runs the command the user asked for; the exit status is success unless the command says
/// otherwise (`inspect` of an order found nowhere).
pub async fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    let success = std::process::ExitCode::SUCCESS;
    match command {
        Command::Run(settings) => {
            let mut shutdown = std::pin::pin!(startup::shutdown_signal());
            // A signal during startup (waiting for the database, migrating) ends the process
            // cleanly: nothing has been consumed yet.
            let app = tokio::select! {
                app = startup::Application::build(settings) => app?,
                () = &mut shutdown => return Ok(success),
            };
            app.run_until_stopped(shutdown).await.map(|()| success)
        }
        Command::Dlq(args) => dlq::run(args).await.map(|()| success),
        Command::Inspect(args) => inspect::run(args).await,
        Command::Migrate(args) => {
            startup::migrate(&args.database).await?;
            tracing::info!("migrations applied");
            Ok(success)
        }
    }
}
