//! `order-process inspect <correlation-id>`: where is an order? Everything the service knows
//! about one CorrelationId, from every place it can be, read only: the stored order (PostgreSQL),
//! its status key (Redis) and its messages in the worker's queues (the broker, through the
//! [`QueueInspector`] port, which looks without consuming, removing or reordering).
//!
//! The three are asked at once, with the worker's own settings for where they are. The report
//! goes to stdout (a short text, or with `--json` the [`Report`] document); the exit status says
//! found ([`FOUND`]) or not ([`NOT_FOUND`]); a dependency that cannot be reached is an error
//! naming its setting (exit 1).

use crate::cli::InspectArgs;
use crate::settings::broker_kind;
use actors::amqp::{AmqpQueueInspector, Topology};
use actors::broker::BrokerKind;
use actors::messaging::{QueueInspector, QueueRole, QueueScan, Sighting};
use actors::order::CorrelationId;
use actors::processor::{self, DatabaseConfig, StoredOrder};
use actors::status_writer::{self, RedisStatusStore, StatusConfig, StoredStatus};
use anyhow::Context;
use fred::interfaces::ClientLike;
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit status when the order was found somewhere.
pub const FOUND: u8 = 0;
/// Exit status when the order was found nowhere (1 is an error, 2 bad usage).
pub const NOT_FOUND: u8 = 3;

/// How long each dependency may take to answer the first time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `--json` document. Fields are always present (null when empty), so scripts can rely on
/// the shape.
#[derive(Debug, Serialize)]
pub struct Report {
    pub correlation_id: String,
    /// Stored, or a status, or a message seen.
    pub found: bool,
    pub verdict: Verdict,
    /// The stored order, or null.
    pub order: Option<StoredOrder>,
    /// The Redis status key, or null.
    pub status: Option<StoredStatus>,
    /// Every queue looked into, and how far.
    pub queues: Vec<QueueScan>,
    /// The order's messages seen in those queues.
    pub messages: Vec<Sighting>,
}

/// The one-word answer, from the facts in the report; the runbook says what to do for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Stored, status COMPLETED.
    Completed,
    /// Stored, with another status or none (expired, or not written yet).
    Stored,
    /// Not stored; a message is in the dead-letter queue.
    DeadLettered,
    /// Not stored; a message waits in a retry queue for its next attempt.
    Retrying,
    /// Not stored; a message waits in the inbound queue.
    Waiting,
    /// Not stored, no message ready, status PROCESSING: a worker holds it now (or held it and
    /// crashed; the broker then delivers it again).
    InProgress,
    /// Not stored, no message seen, status FAILED: dead-lettered, then purged or replayed, or
    /// beyond the part of the dead-letter queue that was looked at.
    Failed,
    /// Not stored, no message seen, and a status that is none of the above.
    StatusOnly,
    /// Nothing anywhere.
    NotFound,
}

impl Report {
    fn new(
        correlation_id: CorrelationId,
        order: Option<StoredOrder>,
        status: Option<StoredStatus>,
        search: actors::messaging::QueueSearch,
    ) -> Self {
        let messages = search.sightings;
        let seen_in = |wanted: fn(&QueueRole) -> bool| messages.iter().any(|m| wanted(&m.role));
        let status_is = |value: &str| status.as_ref().is_some_and(|s| s.value == value);
        let verdict = if order.is_some() {
            if status_is("COMPLETED") { Verdict::Completed } else { Verdict::Stored }
        } else if seen_in(|r| *r == QueueRole::DeadLetter) {
            Verdict::DeadLettered
        } else if seen_in(|r| matches!(r, QueueRole::Retry { .. })) {
            Verdict::Retrying
        } else if seen_in(|r| *r == QueueRole::Inbound) {
            Verdict::Waiting
        } else if status_is("PROCESSING") {
            Verdict::InProgress
        } else if status_is("FAILED") {
            Verdict::Failed
        } else if status.is_some() {
            Verdict::StatusOnly
        } else {
            Verdict::NotFound
        };
        Self {
            correlation_id: correlation_id.to_string(),
            found: verdict != Verdict::NotFound,
            verdict,
            order,
            status,
            queues: search.queues,
            messages,
        }
    }
}

/// The queue inspector of the broker the arguments choose, and how to name that broker in an
/// error.
fn queue_inspector(args: &InspectArgs) -> anyhow::Result<(Box<dyn QueueInspector>, String)> {
    match broker_kind(&args.broker, &args.servicebus)? {
        BrokerKind::Rabbitmq => {
            let topology = Arc::new(Topology::new(&args.queues, &args.amqp, &args.redelivery.retry_delays));
            let name = format!("RabbitMQ at {} (AMQP_URL, --amqp-url)", args.amqp.amqp_url);
            Ok((Box::new(AmqpQueueInspector::new(args.amqp.amqp_url.clone(), topology)), name))
        }
        #[cfg(feature = "servicebus")]
        BrokerKind::Servicebus => {
            let config = Arc::new(args.servicebus.clone());
            let name = format!("Service Bus at {}", config.target());
            let inspector = actors::servicebus::ServiceBusQueueInspector::new(config, &args.queues.inbound_queue);
            Ok((Box::new(inspector), name))
        }
        #[cfg(not(feature = "servicebus"))]
        BrokerKind::Servicebus => Err(actors::broker::BrokerChoiceError::ServiceBusNotBuilt.into()),
    }
}

pub async fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let id = CorrelationId::new(args.correlation_id);
    let (inspector, broker_name) = queue_inspector(&args)?;
    let broker = async {
        let search = inspector.find(&id.to_string(), args.limit).await;
        search.with_context(|| broker_name.clone())
    };
    let (order, status, search) = tokio::join!(stored_order(&args.database, id), status(&args.status, id), broker);
    let errors: Vec<String> = [order.as_ref().err(), status.as_ref().err(), search.as_ref().err()]
        .into_iter()
        .flatten()
        .map(|e| format!("{e:#}"))
        .collect();
    if !errors.is_empty() {
        anyhow::bail!("cannot inspect {id}: {}", errors.join("; "));
    }
    let report = Report::new(id, order?, status?, search?);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write_report(&mut out, &report, args.limit)?;
    }
    Ok(ExitCode::from(if report.found { FOUND } else { NOT_FOUND }))
}

async fn stored_order(config: &DatabaseConfig, id: CorrelationId) -> anyhow::Result<Option<StoredOrder>> {
    let context = || format!("PostgreSQL at {} (DATABASE_URL, --database-url)", config.database_url);
    let db = processor::connect(config, CONNECT_TIMEOUT).await.with_context(context)?;
    let order = processor::find_order(&db, id).await.with_context(context);
    let _ = db.close().await;
    order
}

async fn status(config: &StatusConfig, id: CorrelationId) -> anyhow::Result<Option<StoredStatus>> {
    let context = || format!("Redis at {} (REDIS_URL, --redis-url)", config.redis_url);
    let client = status_writer::redis_client(config).with_context(context)?;
    // The client reconnects forever by itself; here the first connection must come soon.
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, client.init()).await;
    let read = match connected {
        Ok(Ok(_)) => RedisStatusStore::new(client.clone(), config).read(id).await.map_err(anyhow::Error::from),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(anyhow::anyhow!("no connection within {CONNECT_TIMEOUT:?}")),
    };
    let _ = client.quit().await;
    read.with_context(context)
}

fn write_report(out: &mut impl Write, report: &Report, limit: u32) -> std::io::Result<()> {
    writeln!(out, "order {}: {}", report.correlation_id, headline(report))?;
    match &report.order {
        Some(order) => {
            writeln!(
                out,
                "stored   order {} for customer {}: {} {}, {} line(s)",
                order.order_id,
                order.customer_id,
                order.total,
                order.currency,
                order.lines.len()
            )?;
            let time = |t: &Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".into(), |t| t.to_rfc3339());
            writeln!(
                out,
                "         created {}, accepted {}, identity {}",
                order.created_at.to_rfc3339(),
                time(&order.accepted_at),
                order.identity_subject.as_deref().unwrap_or("-")
            )?;
            for line in &order.lines {
                writeln!(
                    out,
                    "         {:>3}  {:<24} {:>6} x {}",
                    line.line_number, line.sku, line.quantity, line.unit_price
                )?;
            }
        }
        None => writeln!(out, "stored   no")?,
    }
    match &report.status {
        Some(status) => {
            let ttl = status.ttl_seconds.map_or("no expiry".into(), |s| format!("expires in {s} s"));
            writeln!(out, "status   {} ({ttl}; key {})", status.value, status.key)?;
        }
        None => writeln!(out, "status   none (never set, or expired)")?,
    }
    for (i, scan) in report.queues.iter().enumerate() {
        let label = if i == 0 { "queues" } else { "" };
        let looked = if !scan.exists {
            "does not exist".to_owned()
        } else if scan.complete {
            format!("{} ready, all looked at", scan.ready)
        } else {
            format!("{} ready, looked at {}: NOT FULLY LOOKED THROUGH", scan.ready, scan.scanned)
        };
        writeln!(out, "{label:<8} {:<40} {:<14} {looked}", scan.queue, role(&scan.role))?;
        if !scan.complete
            && let Some(note) = &scan.note
        {
            writeln!(out, "{:<8} {:<40} {:<14} ({note})", "", "", "")?;
        }
    }
    if report.queues.iter().any(|q| !q.complete && q.scanned == limit) {
        writeln!(out, "         raise --limit to look further")?;
    }
    for message in &report.messages {
        let failure = &message.failure;
        let mut line =
            format!("message  in {} ({}) at position {}", message.queue, role(&message.role), message.position);
        if let Some(reason) = &failure.reason {
            line += &format!(", reason {reason}");
        }
        line += &format!(", {} failed attempt(s)", failure.attempts);
        if message.matched_on == actors::messaging::MatchedOn::Body {
            line += ", found by the body's correlationId (no correlation_id property)";
        }
        writeln!(out, "{line}")?;
        if let Some(error) = &failure.error {
            writeln!(
                out,
                "         error: {}{}",
                failure.error_kind.as_deref().map_or(String::new(), |k| format!("({k}) ")),
                error
            )?;
        }
        if failure.first_failure.is_some() || failure.last_failure.is_some() {
            writeln!(
                out,
                "         first failure {}, last failure {}",
                failure.first_failure.as_deref().unwrap_or("-"),
                failure.last_failure.as_deref().unwrap_or("-")
            )?;
        }
    }
    Ok(())
}

fn headline(report: &Report) -> String {
    let status = report.status.as_ref().map_or("none", |s| s.value.as_str());
    let first = |wanted: fn(&QueueRole) -> bool| report.messages.iter().find(|m| wanted(&m.role));
    let incomplete = report.queues.iter().any(|q| !q.complete);
    match report.verdict {
        Verdict::Completed => "COMPLETED: stored and done".into(),
        Verdict::Stored => format!("STORED, status {status}"),
        Verdict::DeadLettered => {
            let reason = first(|r| *r == QueueRole::DeadLetter).and_then(|m| m.failure.reason.clone());
            format!(
                "DEAD-LETTERED ({}): needs an operator, see docs/runbook.md",
                reason.as_deref().unwrap_or("unknown")
            )
        }
        Verdict::Retrying => {
            let queue = first(|r| matches!(r, QueueRole::Retry { .. })).map_or("", |m| m.queue.as_str());
            format!("RETRYING: waits in {queue} for its next attempt")
        }
        Verdict::Waiting => "WAITING in the inbound queue for a worker".into(),
        Verdict::InProgress => {
            "IN PROGRESS: status PROCESSING, not stored yet, no message ready (a worker holds it)".into()
        }
        Verdict::Failed => {
            "FAILED: status FAILED, not stored, no dead letter seen (purged, replayed, or not looked at)".into()
        }
        Verdict::StatusOnly => format!("status {status} only: not stored, no message seen"),
        Verdict::NotFound if incomplete => {
            "NOT FOUND in what was looked at (some queues were not looked through completely)".into()
        }
        Verdict::NotFound => "NOT FOUND: not stored, no status, no message in the worker's queues".into(),
    }
}

fn role(role: &QueueRole) -> String {
    match role {
        QueueRole::Inbound => "inbound".into(),
        QueueRole::Retry { delay } => format!("retry {}", actors::config::format_duration(*delay)),
        QueueRole::DeadLetter => "dead-letter".into(),
    }
}
