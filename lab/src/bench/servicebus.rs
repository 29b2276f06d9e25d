//! `lab bench --broker servicebus`: the worker's throughput, CPU, memory and latency on the
//! Service Bus path, against a `servicebus-peer` in this process (no Azure here). The figures say
//! what the adapter and the worker cost with an AMQP 1.0 server that answers at once on
//! loopback; they say nothing of a real namespace's latency, throttling or TLS.
//!
//! In one run, in a [`ServiceBusSandbox`] (a database and key prefix of its own, a peer with the
//! sandbox's session inbound queue and outbound queue):
//! 1. a backlog preloaded over [`SESSIONS`] sessions, drained by the worker (child process):
//!    orders/s, worker CPU per 1000 orders, peak RSS;
//! 2. delivery-to-ack latency (the worker's histogram) at fixed offered rates;
//! 3. every order stored once and announced once; nothing left in the inbound queue or the DLQ.

use super::{BenchArgs, process};
use crate::kit::Sandbox;
use crate::kit::servicebus::ServiceBusSandbox;
use crate::kit::worker::{WorkerProcess, worker_binary};
use crate::traffic::order_body;
use anyhow::Context;
use sea_orm::ConnectionTrait;
use serde::Serialize;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Sessions (customers) the orders are spread over: more than the worker takes at once, so the
/// session receivers are always busy.
const SESSIONS: usize = 32;

#[derive(Debug, Serialize)]
struct Report {
    broker: &'static str,
    max_sessions: u16,
    batch_size: u16,
    backlog: usize,
    worker_per_second: f64,
    worker_cpu_seconds_per_1000: f64,
    worker_peak_rss_mib: f64,
    latency: Vec<Latency>,
    verified_rows: u64,
    verified_events: usize,
}

#[derive(Debug, Serialize)]
struct Latency {
    offered_per_second: f64,
    orders: usize,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    worker_binary()?;
    let sandbox = Sandbox::within("bench", args.settings.clone()).await?;
    // Service Bus's default lock duration; the worker's settings are the bench's (defaults unless
    // given), only the connection string points at the peer.
    let bus = ServiceBusSandbox::with_peer(sandbox, Duration::from_secs(60)).await?;
    order_process::startup::migrate(&bus.sandbox.settings.worker.processor.database).await?;
    let report = measure(&bus, &args).await;
    bus.cleanup().await;
    let report = report?;
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn send_orders(bus: &ServiceBusSandbox, count: usize, first: usize) {
    for i in first..first + count {
        let id = Uuid::new_v4();
        bus.send(&order_body(id), &id.to_string(), &format!("customer-{}", i % SESSIONS));
    }
}

async fn wait_for_events(bus: &ServiceBusSandbox, count: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while bus.events_count() < count {
        anyhow::ensure!(Instant::now() < deadline, "the worker did not publish {count} events within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn measure(bus: &ServiceBusSandbox, args: &BenchArgs) -> anyhow::Result<Report> {
    let settings = &bus.sandbox.settings;
    eprintln!("[bench] servicebus: draining a backlog of {} orders over {SESSIONS} sessions", args.orders);
    send_orders(bus, args.orders, 0);
    let log = std::env::temp_dir().join(format!("order-process-bench-servicebus-{}.log", bus.sandbox.id));
    let worker = WorkerProcess::spawn(&worker_binary()?, settings, args.worker_rust_log.as_deref(), log)?;
    worker.ready(Duration::from_secs(30)).await?;
    let cpu_before = process::cpu_seconds(worker.pid()).unwrap_or(0.0);
    let started = Instant::now();
    wait_for_events(bus, args.orders, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process::cpu_seconds(worker.pid()).unwrap_or(0.0) - cpu_before;
    let rss = process::peak_rss_mib(worker.pid()).unwrap_or(0.0);
    let per_second = args.orders as f64 / elapsed;

    let rates = if args.rates.is_empty() { vec![per_second * 0.25, per_second * 0.5] } else { args.rates.clone() };
    let mut latency = Vec::new();
    let mut sent_total = args.orders;
    for rate in rates {
        eprintln!("[bench] servicebus: latency at {rate:.0} orders/s for {} s", args.latency_seconds);
        let before = worker.get("/metrics").await?.1;
        let sent = at_rate(bus, rate, Duration::from_secs(args.latency_seconds), sent_total).await;
        sent_total += sent;
        wait_for_events(bus, sent_total, Duration::from_secs(120)).await?;
        let after = worker.get("/metrics").await?.1;
        let q = |q| {
            const END_TO_END: &str = "order_process_processing_duration_seconds";
            crate::latency::quantile(
                &crate::latency::histogram(&before, END_TO_END, ""),
                &crate::latency::histogram(&after, END_TO_END, ""),
                q,
            )
            .map(|s| s * 1000.0)
        };
        latency.push(Latency {
            offered_per_second: rate,
            orders: sent,
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
        });
    }
    worker.stop().await?;

    let db = &bus.sandbox.db;
    let rows: i64 = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT count(DISTINCT correlation_id) FROM orders",
        ))
        .await?
        .context("a count")?
        .try_get_by_index(0)?;
    let events = bus.events_count();
    anyhow::ensure!(rows as usize == sent_total, "{rows} orders stored for {sent_total} sent");
    anyhow::ensure!(events == sent_total, "{events} events for {sent_total} orders");
    anyhow::ensure!(
        bus.inbound_left() == 0 && bus.dead_letters().is_empty(),
        "messages left in the inbound queue or the DLQ"
    );
    Ok(Report {
        broker: "servicebus-peer",
        max_sessions: settings.servicebus.servicebus_max_sessions,
        batch_size: settings.worker.consumer.batch_size,
        backlog: args.orders,
        worker_per_second: per_second,
        worker_cpu_seconds_per_1000: cpu / args.orders as f64 * 1000.0,
        worker_peak_rss_mib: rss,
        latency,
        verified_rows: rows as u64,
        verified_events: events,
    })
}

/// Offers orders at `rate` per second for `length`, in 10 ms ticks; returns how many it sent.
async fn at_rate(bus: &ServiceBusSandbox, rate: f64, length: Duration, first: usize) -> usize {
    let started = Instant::now();
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while started.elapsed() < length {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as usize;
        if due > sent {
            send_orders(bus, due - sent, first + sent);
            sent = due;
        }
    }
    sent
}

fn print_report(r: &Report) {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    println!("order-process bench on Service Bus ({}; batch {}, sessions {})", r.broker, r.batch_size, r.max_sessions);
    println!();
    println!("| measure | result |");
    println!("| --- | --- |");
    println!("| worker, draining a backlog of {} | {:.0} orders/s |", r.backlog, r.worker_per_second);
    println!("| worker CPU | {:.3} CPU-s per 1000 orders |", r.worker_cpu_seconds_per_1000);
    println!("| worker peak RSS | {:.1} MiB |", r.worker_peak_rss_mib);
    println!("| verified | {} orders stored once, {} events |", r.verified_rows, r.verified_events);
    println!();
    println!("| offered load | orders | p50 | p95 | p99 |");
    println!("| --- | --- | --- | --- | --- |");
    for l in &r.latency {
        println!(
            "| {:.0}/s | {} | {} ms | {} ms | {} ms |",
            l.offered_per_second,
            l.orders,
            ms(l.p50_ms),
            ms(l.p95_ms),
            ms(l.p99_ms)
        );
    }
}
