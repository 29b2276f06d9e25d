//! `lab demo`: the whole pipeline at work, on a laptop, in one command.
//!
//! Publishes synthetic orders (with a share of duplicates and of invalid messages), runs the
//! worker in this process, shows progress, and prints a summary: orders/s, delivery-to-ack
//! latency, duplicates, dead letters, and a check that the database holds exactly one order per
//! correlation id and that an event was published for each.
//!
//! On the configured RabbitMQ, PostgreSQL and Redis (in a [`Sandbox`] of its own: a database
//! that is kept afterwards for you to look at, queues and keys that are removed), or embedded:
//! the in-process adapters of every port (a queue, an order store and a status store in memory).
//! Embedded is chosen with `--embedded`, or when a configured service cannot be reached, which
//! the demo says.

use crate::kit::Sandbox;
use crate::kit::memory::InMemory;
use actors::{Health, Worker};
use anyhow::Context;
use clap::Args;
use order_process::settings::Settings;
use order_process::telemetry::MetricsExporter;
use sea_orm::{ConnectionTrait, Statement};
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Distinct orders to publish (plus about 5 % sent twice and 2 % invalid messages).
    #[arg(long, default_value_t = 1000)]
    pub orders: usize,
    /// Run without any service: the worker's in-process adapters of every port.
    #[arg(long)]
    pub embedded: bool,
    #[command(flatten)]
    pub settings: Settings,
}

/// The messages of a demo run.
struct Load {
    messages: Vec<(Vec<u8>, String)>,
    valid: Vec<String>,
    duplicates: usize,
    invalid: usize,
}

fn load(orders: usize) -> Load {
    let mut messages = Vec::with_capacity(orders + orders / 10);
    let mut valid = Vec::with_capacity(orders);
    let (mut duplicates, mut invalid) = (0, 0);
    for i in 0..orders {
        let id = Uuid::new_v4();
        let body = crate::traffic::order_body(id);
        messages.push((body.clone(), id.to_string()));
        valid.push(id.to_string());
        if i % 20 == 7 {
            messages.push((body, id.to_string()));
            duplicates += 1;
        }
        if i % 50 == 13 {
            let bad = Uuid::new_v4().to_string();
            let body = format!(r#"{{"correlationId":"{bad}","customerId":"","currency":"eur","items":[]}}"#);
            messages.push((body.into_bytes(), bad));
            invalid += 1;
        }
    }
    Load { messages, valid, duplicates, invalid }
}

/// What the demo needs from either setup.
struct Outcome {
    events: Vec<String>,
    dead_letters: usize,
    stored: i64,
    stored_distinct: i64,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let load = load(args.orders);
    let unreachable = if args.embedded { None } else { first_unreachable(&args.settings).await };
    if let Some(what) = &unreachable {
        eprintln!("{what}: running embedded instead (in-process queue, order store and status store)");
    }
    let (where_, outcome, elapsed, latency) = if args.embedded || unreachable.is_some() {
        embedded(&load).await?
    } else {
        with_services(args.settings, &load).await?
    };
    summary(&load, &outcome, elapsed, latency, &where_)
}

/// The first configured service that does not answer, if any.
async fn first_unreachable(settings: &Settings) -> Option<String> {
    let services = [
        ("RabbitMQ", settings.amqp.amqp_url.first().expose(), 5672),
        ("PostgreSQL", settings.worker.processor.database.database_url.expose(), 5432),
        ("Redis", settings.worker.status.redis_url.expose(), 6379),
    ];
    for (name, url, default_port) in services {
        let address = host_port(url, default_port);
        let connected = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(&address)).await;
        if !matches!(connected, Ok(Ok(_))) {
            return Some(format!("{name} cannot be reached at {address}"));
        }
    }
    None
}

/// `host:port` of a service URL.
fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    }
}

type Run = (String, Outcome, Duration, [Option<f64>; 3]);

async fn embedded(load: &Load) -> anyhow::Result<Run> {
    let memory = InMemory::default();
    let (exporter, metrics) = MetricsExporter::new()?;
    let worker = Worker::start(memory.ports(), memory.config.clone(), Health::default(), metrics);
    let before = exporter.render();
    let started = Instant::now();
    memory.publish(&load.messages);
    let total = load.messages.len();
    progress(total, || async { memory.settled() }).await;
    let elapsed = started.elapsed();
    worker.drain(Duration::from_secs(5)).await?;
    let latency = percentiles(&before, &exporter.render());
    let events = memory.broker.take_all(memory.outbound()).into_iter().filter_map(|m| m.correlation_id).collect();
    let stored = memory.orders.orders();
    let distinct: HashSet<_> = stored.iter().map(|o| o.correlation_id).collect();
    let outcome = Outcome {
        events,
        dead_letters: memory.broker.len(memory.dead_letter()),
        stored: stored.len() as i64,
        stored_distinct: distinct.len() as i64,
    };
    Ok(("embedded; the orders were kept in memory".to_owned(), outcome, elapsed, latency))
}

async fn with_services(settings: Settings, load: &Load) -> anyhow::Result<Run> {
    let sandbox = Sandbox::within("demo", settings).await?;
    let app = sandbox.spawn_app().await;
    while !app.health().ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = crate::traffic::EventCounter::default();
    events.consume(sandbox.settings.amqp.amqp_url.first().expose(), &sandbox.outbound()).await?;
    let before = app.metrics_text();
    let started = Instant::now();
    crate::traffic::publish_all(&sandbox.channel, &sandbox.inbound(), load.messages.iter().cloned()).await?;
    let dead_letter = sandbox.dead_letter();
    let queue_depth = |queue: String| {
        let channel = sandbox.channel.clone();
        async move {
            let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
            let declared = channel.queue_declare(queue.as_str().into(), passive, Default::default()).await;
            declared.map_or(0, |q| q.message_count() as usize)
        }
    };
    progress(load.messages.len(), || async { events.total() + queue_depth(dead_letter.clone()).await }).await;
    let elapsed = started.elapsed();
    let latency = percentiles(&before, &app.metrics_text());
    let dead_letters = queue_depth(dead_letter.clone()).await;
    let (stored, stored_distinct) = counts(&sandbox, &load.valid).await?;
    app.run_until_stopped(async {}).await?;
    let where_ = format!(
        "on the configured services; the orders are in the database op_demo_{} (kept; drop it when done)",
        sandbox.id
    );
    sandbox.cleanup_but_keep_database().await;
    let outcome = Outcome { events: events.correlation_ids(), dead_letters, stored, stored_distinct };
    Ok((where_, outcome, elapsed, latency))
}

/// Shows a progress bar until `settled` reaches `total`.
async fn progress<F, Fut>(total: usize, settled: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    loop {
        let done = settled().await.min(total);
        if terminal {
            let filled = done * 40 / total.max(1);
            eprint!("\r[{}{}] {done}/{total} messages", "#".repeat(filled), " ".repeat(40 - filled));
            let _ = std::io::stderr().flush();
        } else if last_line.elapsed() >= Duration::from_secs(1) || done == total {
            eprintln!("{done}/{total} messages settled");
            last_line = Instant::now();
        }
        if done >= total {
            if terminal {
                eprintln!();
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentiles(before: &str, after: &str) -> [Option<f64>; 3] {
    const HISTOGRAM: &str = "order_process_processing_duration_seconds";
    let (before, after) =
        (crate::latency::histogram(before, HISTOGRAM, ""), crate::latency::histogram(after, HISTOGRAM, ""));
    [0.5, 0.95, 0.99].map(|q| crate::latency::quantile(&before, &after, q).map(|s| s * 1000.0))
}

/// Rows, and distinct correlation ids, among `ids`.
async fn counts(sandbox: &Sandbox, ids: &[String]) -> anyhow::Result<(i64, i64)> {
    let statement = Statement::from_sql_and_values(
        sandbox.db.get_database_backend(),
        "SELECT count(*), count(DISTINCT correlation_id) FROM orders WHERE correlation_id::text = ANY($1)",
        [sea_orm::Value::from(ids.to_vec())],
    );
    let row = sandbox.db.query_one_raw(statement).await?.context("a count")?;
    Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?))
}

fn summary(
    load: &Load,
    outcome: &Outcome,
    elapsed: Duration,
    latency: [Option<f64>; 3],
    where_: &str,
) -> anyhow::Result<()> {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    let announced: HashSet<&String> = outcome.events.iter().collect();
    let valid: HashSet<&String> = load.valid.iter().collect();
    let rate = load.valid.len() as f64 / elapsed.as_secs_f64();
    println!("order-process demo, {where_}");
    println!("  {} orders processed in {:.2} s: {rate:.0} orders/s", load.valid.len(), elapsed.as_secs_f64());
    println!("  delivery-to-ack latency: p50 {}, p95 {}, p99 {}", ms(latency[0]), ms(latency[1]), ms(latency[2]));
    println!("  duplicates: {} sent twice, stored once, announced again", load.duplicates);
    println!("  dead letters: {} (of {} invalid messages sent)", outcome.dead_letters, load.invalid);
    let one_row_each = outcome.stored == load.valid.len() as i64 && outcome.stored_distinct == outcome.stored;
    let announced_each = valid.iter().all(|id| announced.contains(id)) && announced.len() == valid.len();
    let dead_lettered = outcome.dead_letters == load.invalid;
    println!(
        "  verified: {} rows for {} orders, one per correlation id: {}; an OrderProcessed event for each: {}; every invalid message dead-lettered: {}",
        outcome.stored,
        load.valid.len(),
        yes(one_row_each),
        yes(announced_each),
        yes(dead_lettered)
    );
    anyhow::ensure!(one_row_each && announced_each && dead_lettered, "the demo's verification failed");
    Ok(())
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn service_addresses_come_from_the_urls() {
        assert_eq!(host_port("amqp://guest:guest@127.0.0.1:5672/%2f", 5672), "127.0.0.1:5672");
        assert_eq!(host_port("postgres://postgres@db/orders", 5432), "db:5432");
        assert_eq!(host_port("redis://127.0.0.1:6379", 6379), "127.0.0.1:6379");
    }
}
