//! Command line and environment: every setting is a flag and an environment variable, with the
//! defaults of the component configs (shown by `--help`). A bad value stops startup with a
//! message that names both the flag and the variable.

use crate::http::HttpConfig;
use crate::settings::Settings;
use crate::telemetry::LogFormat;
use actors::amqp::{AmqpConfig, QueueType};
use actors::consumer::{ConsumerConfig, RedeliveryPolicy};
use actors::processor::ProcessorConfig;
use actors::publisher::PublisherConfig;
use actors::retry::{RetryPolicy, format_duration, parse_duration};
use actors::secret::SecretUrl;
use actors::status_writer::StatusConfig;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

/// Asynchronous order worker: consumes orders from a queue, stores each once in PostgreSQL,
/// tracks its status in Redis and publishes OrderProcessed.
#[derive(Debug, Parser)]
#[command(name = "order-process", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of the worker when no subcommand is given.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at startup
pub enum Command {
    /// Start the worker (the default).
    Run(RunArgs),
    /// Apply the database migrations and exit.
    Migrate(MigrateArgs),
    /// Inspect and operate the dead-letter queue.
    Dlq(DlqArgs),
    /// Measure throughput, latency, CPU and memory against the configured services.
    Bench(crate::bench::BenchArgs),
    /// Watch the pipeline work: publish synthetic orders, process them, print a verified summary.
    Demo(crate::demo::DemoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub log: LogArgs,
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
pub struct LogArgs {
    /// Log format: json, pretty, or auto (pretty on a terminal, json otherwise). Levels come
    /// from RUST_LOG (default: info).
    #[arg(long, env = "ORDER_PROCESS_LOG_FORMAT", hide_env_values = true, default_value = "auto")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value_t = default_url(ProcessorConfig::default().database_url), value_parser = parse_url)]
    pub database_url: String,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// AMQP 0-9-1 broker URL.
    #[arg(long, env = "AMQP_URL", hide_env_values = true, default_value_t = default_url(AmqpConfig::default().url), value_parser = parse_url)]
    pub amqp_url: String,

    /// Queue the orders arrive on.
    #[arg(long, env = "ORDER_PROCESS_INBOUND_QUEUE", hide_env_values = true, default_value_t = AmqpConfig::default().inbound_queue, value_parser = parse_queue_name)]
    pub inbound_queue: String,

    /// Dead-letter queue [default: <inbound-queue>.dlq].
    #[arg(long, env = "ORDER_PROCESS_DEAD_LETTER_QUEUE", hide_env_values = true, value_parser = parse_queue_name)]
    pub dead_letter_queue: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value_t = default_url(ProcessorConfig::default().database_url), value_parser = parse_url)]
    pub database_url: String,

    /// Redis URL.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, default_value_t = default_url(StatusConfig::default().redis_url), value_parser = parse_url)]
    pub redis_url: String,

    /// Queue the OrderProcessed events are published to.
    #[arg(long, env = "ORDER_PROCESS_OUTBOUND_QUEUE", hide_env_values = true, default_value_t = AmqpConfig::default().outbound_queue, value_parser = parse_queue_name)]
    pub outbound_queue: String,

    /// Type of the queues this service declares: classic or quorum.
    #[arg(long, env = "ORDER_PROCESS_QUEUE_TYPE", hide_env_values = true, default_value = "classic")]
    pub queue_type: QueueType,

    /// Quorum queues: deliveries of one message before the broker dead-letters it.
    #[arg(long, env = "ORDER_PROCESS_DELIVERY_LIMIT", hide_env_values = true, default_value_t = AmqpConfig::default().delivery_limit, value_parser = clap::value_parser!(u32).range(1..))]
    pub delivery_limit: u32,

    /// Strict order across replicas: one replica consumes, the others stand by (RabbitMQ single
    /// active consumer on the inbound queue).
    #[arg(long, env = "ORDER_PROCESS_SINGLE_ACTIVE_CONSUMER", hide_env_values = true, default_value_t = AmqpConfig::default().single_active_consumer, action = clap::ArgAction::Set)]
    pub single_active_consumer: bool,

    /// Deliveries processed at once (AMQP prefetch).
    #[arg(long, env = "ORDER_PROCESS_PREFETCH", hide_env_values = true, default_value_t = ConsumerConfig::default().prefetch, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,

    /// Most deliveries processed together (one status write, one transaction, one round of
    /// publishes).
    #[arg(long, env = "ORDER_PROCESS_BATCH_SIZE", hide_env_values = true, default_value_t = ConsumerConfig::default().batch_size, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_size: u16,

    /// How long a batch waits for more deliveries after its first one.
    #[arg(long, env = "ORDER_PROCESS_BATCH_LINGER", hide_env_values = true, default_value_t = format_duration(ConsumerConfig::default().batch_linger), value_parser = parse_duration_text)]
    pub batch_linger: String,

    /// Failed attempts after which a message is dead-lettered.
    #[arg(long, env = "ORDER_PROCESS_MAX_ATTEMPTS", hide_env_values = true, default_value_t = RedeliveryPolicy::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,

    /// Broker-side delays before the 1st, 2nd, ... redelivery of a failed message (the last one
    /// repeats). One retry queue is declared per delay.
    #[arg(long, env = "ORDER_PROCESS_RETRY_DELAYS", hide_env_values = true, default_value_t = actors::consumer::format_delays(&RedeliveryPolicy::default().delays), value_parser = parse_delays)]
    pub retry_delays: String,

    /// On SIGTERM/SIGINT, how long deliveries in flight may take to finish.
    #[arg(long, env = "ORDER_PROCESS_DRAIN_TIMEOUT", hide_env_values = true, default_value_t = format_duration(ConsumerConfig::default().drain_timeout), value_parser = parse_positive_duration)]
    pub drain_timeout: String,

    /// Lifetime of an order's status key in Redis, in seconds.
    #[arg(long, env = "ORDER_PROCESS_STATUS_TTL_SECONDS", hide_env_values = true, default_value_t = StatusConfig::default().ttl_seconds, value_parser = clap::value_parser!(u64).range(1..))]
    pub status_ttl_seconds: u64,

    /// Prefix of every Redis key (`{prefix}order:status:{id}`).
    #[arg(long, env = "ORDER_PROCESS_REDIS_KEY_PREFIX", hide_env_values = true, default_value = "")]
    pub redis_key_prefix: String,

    /// SQL transaction: timeout per attempt, retries, backoff.
    #[arg(long, env = "ORDER_PROCESS_SQL_RETRY", hide_env_values = true, default_value_t = ProcessorConfig::default().retry)]
    pub sql_retry: RetryPolicy,

    /// Redis status write: timeout per attempt, retries, backoff.
    #[arg(long, env = "ORDER_PROCESS_REDIS_RETRY", hide_env_values = true, default_value_t = StatusConfig::default().retry)]
    pub redis_retry: RetryPolicy,

    /// Event publish (until the broker's confirm): timeout per attempt, retries, backoff.
    #[arg(long, env = "ORDER_PROCESS_PUBLISH_RETRY", hide_env_values = true, default_value_t = PublisherConfig::default().retry)]
    pub publish_retry: RetryPolicy,

    /// Most orders in one transaction: requests that pile up while one commits are committed
    /// together (group commit).
    #[arg(long, env = "ORDER_PROCESS_GROUP_COMMIT_MAX", hide_env_values = true, default_value_t = ProcessorConfig::default().max_group as u16, value_parser = clap::value_parser!(u16).range(1..))]
    pub group_commit_max: u16,

    /// Most connections in the database pool.
    #[arg(long, env = "ORDER_PROCESS_DB_MAX_CONNECTIONS", hide_env_values = true, default_value_t = ProcessorConfig::default().max_connections, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: u32,

    /// Address of the health endpoints (and metrics).
    #[arg(long, env = "ORDER_PROCESS_HTTP_ADDR", hide_env_values = true, default_value_t = HttpConfig::default().addr)]
    pub http_addr: SocketAddr,

    /// Apply database migrations at startup (turn off when a separate job runs them).
    #[arg(long, env = "ORDER_PROCESS_MIGRATE_ON_START", hide_env_values = true, default_value_t = Settings::default().migrate_on_start, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    #[command(flatten)]
    pub log: LogArgs,
}

impl BrokerArgs {
    /// The broker part of the configuration; the rest at its defaults.
    pub fn into_config(self) -> AmqpConfig {
        AmqpConfig {
            url: SecretUrl::new(self.amqp_url),
            inbound_queue: self.inbound_queue,
            dead_letter_queue: self.dead_letter_queue.unwrap_or_default(),
            ..AmqpConfig::default()
        }
    }
}

impl RunArgs {
    pub fn into_settings(self) -> Settings {
        let amqp = AmqpConfig {
            outbound_queue: self.outbound_queue,
            queue_type: self.queue_type,
            delivery_limit: self.delivery_limit,
            single_active_consumer: self.single_active_consumer,
            ..self.broker.into_config()
        };
        let consumer = ConsumerConfig {
            prefetch: self.prefetch,
            batch_size: self.batch_size,
            batch_linger: parse_duration(&self.batch_linger).expect("validated by clap"),
            redelivery: RedeliveryPolicy {
                max_attempts: self.max_attempts,
                delays: actors::consumer::parse_delays(&self.retry_delays).expect("validated by clap"),
            },
            drain_timeout: parse_duration(&self.drain_timeout).expect("validated by clap"),
        };
        Settings {
            amqp,
            consumer,
            processor: ProcessorConfig {
                database_url: SecretUrl::new(self.database_url),
                max_connections: self.db_max_connections,
                max_group: self.group_commit_max.into(),
                retry: self.sql_retry,
            },
            status: StatusConfig {
                redis_url: SecretUrl::new(self.redis_url),
                key_prefix: self.redis_key_prefix,
                ttl_seconds: self.status_ttl_seconds,
                retry: self.redis_retry,
            },
            publisher: PublisherConfig { retry: self.publish_retry },
            http: HttpConfig { addr: self.http_addr },
            migrate_on_start: self.migrate_on_start,
        }
    }
}

impl Command {
    /// Log levels when `RUST_LOG` is not set: the worker reports at info (sqlx reports every
    /// skipped "IF NOT EXISTS" of the migrations there, so it gets warn); the interactive
    /// commands, whose output is on stdout, only report errors.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Self::Run(_) | Self::Migrate(_) => "info,sqlx=warn",
            Self::Dlq(_) | Self::Bench(_) | Self::Demo(_) => "error",
        }
    }

    pub fn log_format(&self) -> LogFormat {
        match self {
            Self::Run(args) => args.log.log_format,
            Self::Migrate(args) => args.log.log_format,
            Self::Dlq(args) => args.log.log_format,
            Self::Bench(_) => LogFormat::Pretty,
            Self::Demo(args) => args.run.log.log_format,
        }
    }
}

impl Cli {
    /// The command to run: `run` when none was given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

/// Parses the command line; on a bad value, exits with clap's message completed by the name of
/// the environment variable the setting can also come from.
pub fn parse() -> Cli {
    Cli::try_parse().unwrap_or_else(|error| exit_naming_env(error))
}

fn exit_naming_env(mut error: clap::Error) -> ! {
    if matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation)
        && let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg)
        && let Some(env) = env_of(flag)
    {
        let flag = format!("{flag} (environment variable {env})");
        error.insert(ContextKind::InvalidArg, ContextValue::String(flag));
    }
    error.exit()
}

/// The environment variable behind a flag as clap prints it (`--prefetch <PREFETCH>`).
fn env_of(flag: &str) -> Option<String> {
    let long = flag.trim_start_matches("--").split([' ', '=']).next()?;
    let mut command = <Cli as CommandFactory>::command();
    command.build();
    let found = command
        .get_arguments()
        .chain(command.get_subcommands().flat_map(|s| s.get_arguments()))
        .find(|arg| arg.get_long() == Some(long))?
        .get_env()?
        .to_string_lossy()
        .into_owned();
    Some(found)
}

fn default_url(url: SecretUrl) -> String {
    url.expose().to_owned()
}

fn parse_url(text: &str) -> Result<String, String> {
    text.parse::<SecretUrl>().map(|url| url.expose().to_owned())
}

fn parse_queue_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 255 {
        return Err("must be 1 to 255 bytes".into());
    }
    Ok(text.to_owned())
}

fn parse_delays(text: &str) -> Result<String, String> {
    actors::consumer::parse_delays(text).map(|_| text.to_owned())
}

fn parse_duration_text(text: &str) -> Result<String, String> {
    parse_duration(text).map(|_| text.to_owned())
}

fn parse_positive_duration(text: &str) -> Result<String, String> {
    match parse_duration(text)? {
        d if d == Duration::ZERO => Err("must be greater than zero".into()),
        _ => Ok(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("order-process").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_is_consistent() {
        <Cli as CommandFactory>::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_run_with_the_documented_defaults() {
        let Command::Run(args) = parse_args(&[]).unwrap().into_command() else { panic!("run is the default") };
        let settings = args.into_settings();
        assert_eq!(settings.amqp.inbound_queue, "OrderProcessed");
        assert_eq!(settings.amqp.outbound_queue, "OrdersProcessed");
        assert_eq!(settings.amqp.dead_letter_queue(), "OrderProcessed.dlq");
        assert_eq!(settings.consumer, ConsumerConfig::default());
        assert_eq!(settings.status.ttl_seconds, 3600);
        assert_eq!(settings.http.addr.to_string(), "0.0.0.0:8080");
        assert_eq!(settings.processor.database_url.expose(), "postgres://postgres@127.0.0.1:5432/postgres");
        assert!(settings.migrate_on_start);
    }

    #[test]
    fn flags_override_defaults() {
        let cli =
            parse_args(&["run", "--prefetch", "7", "--retry-delays", "2s,10s", "--sql-retry", "retries=1"]).unwrap();
        let Command::Run(args) = cli.into_command() else { panic!() };
        let settings = args.into_settings();
        assert_eq!(settings.consumer.prefetch, 7);
        assert_eq!(settings.consumer.redelivery.delays, [Duration::from_secs(2), Duration::from_secs(10)]);
        assert_eq!(settings.processor.retry.retries, 1);
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
}
