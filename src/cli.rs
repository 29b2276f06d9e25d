//! The command line. Every setting is a flag and an environment variable, declared once beside
//! the component that uses it (see `actors::config`) and flattened in here; `--help` lists them
//! with their defaults. A bad value stops startup with a message that names both the flag and
//! the variable.

use crate::settings::Settings;
use crate::telemetry::{LogConfig, LogFormat};
use actors::amqp::AmqpConfig;
use actors::broker::BrokerChoice;
use actors::consumer::RedeliveryPolicy;
use actors::messaging::QueuesConfig;
use actors::processor::DatabaseConfig;
use actors::servicebus::ServiceBusConfig;
use actors::status_writer::StatusConfig;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Asynchronous order worker: consumes orders from a queue, stores each once in PostgreSQL,
/// tracks its status in Redis and publishes OrderProcessed.
#[derive(Debug, Parser)]
#[command(name = "order-process", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of the worker when no subcommand is given.
    #[command(flatten)]
    pub run: Settings,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at startup
pub enum Command {
    /// Start the worker (the default).
    Run(Settings),
    /// Apply the database migrations and exit.
    Migrate(MigrateArgs),
    /// Inspect and operate the dead-letter queue.
    Dlq(DlqArgs),
    /// Where is an order? Everything the service knows about one CorrelationId: the stored
    /// order, its status in Redis, and its messages waiting in the inbound, retry or dead-letter
    /// queues. Reads only. Exit status 0 when found, 3 when found nowhere, 1 when a dependency
    /// cannot be reached, 2 on bad usage.
    Inspect(InspectArgs),
}

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// CorrelationId of the order (a UUID).
    pub correlation_id: uuid::Uuid,
    /// Print a JSON document (shape in docs/runbook.md) instead of a report.
    #[arg(long)]
    pub json: bool,
    /// Messages looked at per queue, from the head. Each is a round trip to the broker and held
    /// until its queue is done; a queue with more ready messages is reported as not fully
    /// looked through.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    #[command(flatten)]
    pub queues: QueuesConfig,
    #[command(flatten)]
    pub broker: BrokerChoice,
    #[command(flatten)]
    pub amqp: AmqpConfig,
    #[command(flatten)]
    pub servicebus: ServiceBusConfig,
    /// The retry delays name the retry queues.
    #[command(flatten)]
    pub redelivery: RedeliveryPolicy,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub status: StatusConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
    #[command(flatten)]
    pub queues: QueuesConfig,
    #[command(flatten)]
    pub broker: BrokerChoice,
    #[command(flatten)]
    pub amqp: AmqpConfig,
    #[command(flatten)]
    pub servicebus: ServiceBusConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqAction {
    /// Count the dead letters and show each: correlation id, reason, attempts, time, error.
    List {
        /// Show at most this many messages (the count is always the total).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back to the inbound queue, with their retry count reset.
    Replay {
        /// Replay only the messages of these orders.
        #[arg(long = "correlation-id", required_unless_present = "all", conflicts_with = "all")]
        correlation_ids: Vec<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter.
    Purge {
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

impl Command {
    /// Log levels when `RUST_LOG` is not set: the worker reports at info (sqlx reports every
    /// skipped "IF NOT EXISTS" of the migrations there, so it gets warn); the interactive
    /// commands, whose output is on stdout, only report errors. `inspect` looks for queues that
    /// may not exist, which lapin reports as a closed channel at error level: its own error says
    /// what matters.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Self::Run(_) | Self::Migrate(_) => "info,sqlx=warn",
            Self::Dlq(_) => "error",
            Self::Inspect(_) => "error,lapin=off",
        }
    }

    pub fn log_format(&self) -> LogFormat {
        match self {
            Self::Run(settings) => settings.log.log_format,
            Self::Migrate(args) => args.log.log_format,
            Self::Dlq(args) => args.log.log_format,
            Self::Inspect(args) => args.log.log_format,
        }
    }
}

impl Cli {
    /// The command to run: `run` when none was given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

/// The command line as clap sees it. Environment values are never shown by `--help`: they may
/// hold passwords.
pub fn command() -> clap::Command {
    fn hide_env_values(command: clap::Command) -> clap::Command {
        command.mut_args(|arg| arg.hide_env_values(true)).mut_subcommands(hide_env_values)
    }
    hide_env_values(Cli::command())
}

/// Parses `args` (the first one is the program name).
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// Parses the command line; on a bad value, exits with clap's message completed by the name of
/// the environment variable the setting can also come from.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|error| exit_naming_env(error))
}

fn exit_naming_env(error: clap::Error) -> ! {
    naming_env(error).exit()
}

/// Clap's error for a bad value, completed by the name of its environment variable, and with the
/// value it quotes made safe when the setting holds a secret: URLs with their passwords masked,
/// a connection string (a mistyped one still carries its key) not shown at all.
fn naming_env(mut error: clap::Error) -> clap::Error {
    if matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation)
        && let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg).cloned()
    {
        match secret_kind(&flag) {
            Some(Secret::Urls) => {
                if let Some(ContextValue::String(value)) = error.get(ContextKind::InvalidValue) {
                    let masked = actors::secret::redacted_list(value);
                    error.insert(ContextKind::InvalidValue, ContextValue::String(masked));
                }
            }
            Some(Secret::Opaque) => {
                let hidden = ContextValue::String("(not shown: it may hold a secret)".into());
                error.insert(ContextKind::InvalidValue, hidden);
            }
            None => {}
        }
        if let Some(env) = env_of(&flag) {
            let flag = format!("{flag} (environment variable {env})");
            error.insert(ContextKind::InvalidArg, ContextValue::String(flag));
        }
    }
    error
}

/// How a setting's value holds a secret.
enum Secret {
    /// URLs (one or a list) whose passwords can be masked.
    Urls,
    /// A value that cannot be shown in part (a connection string).
    Opaque,
}

/// Whether the setting behind a flag holds a secret, and of which kind.
fn secret_kind(flag: &str) -> Option<Secret> {
    let parser = find_arg(flag)?.get_value_parser().type_id();
    if parser == std::any::TypeId::of::<actors::secret::SecretUrl>()
        || parser == std::any::TypeId::of::<actors::amqp::AmqpUrls>()
    {
        Some(Secret::Urls)
    } else if parser == std::any::TypeId::of::<actors::servicebus::ConnectionString>() {
        Some(Secret::Opaque)
    } else {
        None
    }
}

/// The environment variable behind a flag as clap prints it (`--prefetch <PREFETCH>`).
fn env_of(flag: &str) -> Option<String> {
    Some(find_arg(flag)?.get_env()?.to_string_lossy().into_owned())
}

/// The declaration of a flag as clap prints it, in `run` or any subcommand.
fn find_arg(flag: &str) -> Option<clap::Arg> {
    let long = flag.trim_start_matches("--").split([' ', '=']).next()?;
    let mut command = command();
    command.build();
    command
        .get_arguments()
        .chain(command.get_subcommands().flat_map(|s| s.get_arguments()))
        .find(|arg| arg.get_long() == Some(long))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::consumer::ConsumerConfig;

    #[test]
    fn inspect_takes_a_uuid_and_the_workers_settings() {
        let cli = parse_args(&["inspect", "7D4C1C1E-7B0A-4C8E-9F41-2F0A3D3F5B11", "--retry-delays", "10m"]).unwrap();
        let Command::Inspect(args) = cli.into_command() else { panic!("inspect") };
        assert_eq!(args.correlation_id.to_string(), "7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11");
        assert_eq!(args.limit, 10_000);
        assert_eq!(args.redelivery.retry_delays.to_string(), "10m");
        assert!(parse_args(&["inspect", "order-42"]).is_err(), "not a UUID");
        assert!(parse_args(&["inspect"]).is_err(), "the id is required");
    }
    use std::time::Duration;

    fn parse_args(args: &[&str]) -> Result<Cli, clap::Error> {
        try_parse_from(std::iter::once("order-process").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_run_with_the_documented_defaults() {
        let Command::Run(settings) = parse_args(&[]).unwrap().into_command() else { panic!("run is the default") };
        assert_eq!(settings.worker.queues.inbound_queue, "OrderProcessed");
        assert_eq!(settings.worker.queues.outbound_queue, "OrdersProcessed");
        assert_eq!(settings.dead_letter_queue(), "OrderProcessed.dlq");
        assert_eq!(settings.worker.consumer, ConsumerConfig::default());
        assert_eq!(settings.worker.status.status_ttl_seconds, 3600);
        assert_eq!(settings.http.http_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(
            settings.worker.processor.database.database_url.expose(),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert!(settings.migrate_on_start);
    }

    #[test]
    fn flags_override_defaults() {
        let cli =
            parse_args(&["run", "--prefetch", "7", "--retry-delays", "2s,10s", "--sql-retry", "retries=1"]).unwrap();
        let Command::Run(settings) = cli.into_command() else { panic!() };
        assert_eq!(settings.worker.consumer.prefetch, 7);
        assert_eq!(
            *settings.worker.consumer.redelivery.retry_delays,
            [Duration::from_secs(2), Duration::from_secs(10)]
        );
        assert_eq!(settings.worker.processor.sql_retry.retries, 1);
    }

    #[test]
    fn bad_values_are_refused_and_the_env_name_is_found() {
        for bad in [
            &["--prefetch", "0"][..],
            &["--retry-delays", "soon"],
            &["--queue-type", "stream"],
            &["--sql-retry", "retries=x"],
            &["--amqp-url", "localhost"],
        ] {
            assert!(parse_args(bad).is_err(), "{bad:?}");
        }
        assert_eq!(env_of("--prefetch <PREFETCH>").as_deref(), Some("ORDER_PROCESS_PREFETCH"));
        assert_eq!(env_of("--database-url <DATABASE_URL>").as_deref(), Some("DATABASE_URL"));
    }

    #[test]
    fn a_bad_secret_is_refused_without_being_shown() {
        let key = "SharedAccessKeyName=Root;SharedAccessKey=hunter2";
        let error = parse_args(&["--servicebus-connection-string", key]).unwrap_err();
        let shown = naming_env(error).to_string();
        assert!(shown.contains("AZURE_SERVICEBUS_CONNECTION_STRING") && !shown.contains("hunter2"), "{shown}");
        let error = parse_args(&["--amqp-url", "guest:hunter2@rabbit"]).unwrap_err();
        let shown = naming_env(error).to_string();
        assert!(shown.contains("AMQP_URL") && !shown.contains("hunter2"), "{shown}");
        let error = parse_args(&["--prefetch", "zero"]).unwrap_err();
        assert!(naming_env(error).to_string().contains("'zero'"), "other values are shown");
    }
}
