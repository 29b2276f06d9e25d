//! `lab bench`: how fast the worker is on this machine, as a ratio of what the machine allows,
//! with a verified result.
//!
//! In one run, against the configured RabbitMQ, PostgreSQL and Redis (in a [`Sandbox`]: a fresh
//! database, queues and key prefix of its own, removed afterwards):
//! 1. the ceilings: a bare AMQP relay (consume, confirmed publish, ack) and the worker's batch
//!    insert statement alone;
//! 2. the worker (the `order-process` binary beside this one, as a child process, with the
//!    settings given to the bench) draining a preloaded backlog: sustained
//!    orders/s, worker CPU seconds per 1000 orders, peak RSS, server CPU per order;
//! 3. delivery-to-ack latency (the worker's own histogram) at 25 %, 50 % and 90 % of that
//!    maximum, offered at a fixed rate;
//! 4. a check that every order is stored once and announced once;
//! 5. optionally a sweep of batch size and prefetch, plotted as SVG.
//!
//! With `--broker servicebus` it measures the Service Bus path instead, against a
//! `servicebus-peer` in this process ([`servicebus`]).

mod ceilings;
mod plot;
pub(crate) mod process;
mod servicebus;

use crate::kit::Sandbox;
use crate::kit::worker::{WorkerProcess, worker_binary};
use crate::traffic;
use anyhow::Context;
use clap::Args;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use order_process::settings::Settings;
use sea_orm::ConnectionTrait;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Orders preloaded as the backlog the worker drains at full speed.
    #[arg(long, default_value_t = 100_000)]
    pub orders: usize,
    /// Messages (and orders) for each ceiling measurement.
    #[arg(long, default_value_t = 100_000)]
    pub ceiling_orders: usize,
    /// Seconds of traffic at each fixed rate for the latency measurements.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Also measure these batch size/prefetch pairs (e.g. `1/64,32/256,128/512`) and plot
    /// throughput and p99 latency to this SVG file.
    #[arg(long, value_name = "SVG")]
    pub sweep_plot: Option<PathBuf>,
    #[arg(long, default_value = "1/64,8/128,32/256,128/512,256/1024")]
    pub sweep: String,
    /// Offer these rates (orders/s) for the latency measurements instead of 25, 50 and 90 % of
    /// the measured maximum, e.g. to compare configurations at the same load.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also measure the worker's peak memory draining a backlog of this many messages of
    /// `--large-size` each (invalid orders: too large), all of which must end in the DLQ.
    #[arg(long, default_value_t = 0)]
    pub large_backlog: usize,
    /// Size of each message of `--large-backlog`.
    #[arg(long, default_value = "1MiB")]
    pub large_size: actors::config::ByteSize,
    /// RUST_LOG of the worker under test; by default it logs at its own default level (one line
    /// per settled delivery), as in production.
    #[arg(long, value_name = "FILTER")]
    pub worker_rust_log: Option<String>,
    /// The worker's settings (its batch size and prefetch also size the ceilings). Where the
    /// services are comes from them; the database, queues and keys are the bench's own.
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Serialize)]
struct Latency {
    offered_share: f64,
    offered_per_second: f64,
    orders: usize,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// p99 of each actor's handling time (per batch request), to see where the time goes.
    actor_p99_ms: BTreeMap<&'static str, Option<f64>>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine_cpus: usize,
    prefetch: u16,
    batch_size: u16,
    amqp_relay_per_second: f64,
    sql_batched_per_second: f64,
    backlog: usize,
    worker_per_second: f64,
    share_of_relay: f64,
    worker_cpu_seconds_per_1000: f64,
    worker_peak_rss_mib: f64,
    server_cpu_us_per_order: BTreeMap<&'static str, f64>,
    latency: Vec<Latency>,
    verified_rows: u64,
    verified_events: u32,
    sweep: Vec<SweepPoint>,
    large: Option<LargeBacklog>,
}

#[derive(Debug, Serialize)]
struct LargeBacklog {
    messages: usize,
    bytes_each: u64,
    in_flight_budget_bytes: u64,
    seconds: f64,
    worker_peak_rss_mib: f64,
}

#[derive(Debug, Serialize)]
struct SweepPoint {
    batch_size: u16,
    prefetch: u16,
    per_second: f64,
    p99_ms_at_half: Option<f64>,
}

/// One benchmark's private slice of the services, and the events it has seen.
struct Bench {
    args: BenchArgs,
    sandbox: Sandbox,
    events: traffic::EventCounter,
}

impl Bench {
    fn inbound(&self) -> String {
        self.sandbox.inbound()
    }

    fn worker(&self, batch_size: u16, prefetch: u16) -> anyhow::Result<WorkerProcess> {
        let mut settings = self.sandbox.settings.clone();
        settings.worker.consumer.batch_size = batch_size;
        settings.worker.consumer.prefetch = prefetch;
        let log =
            std::env::temp_dir().join(format!("order-process-bench-{}-{batch_size}-{prefetch}.log", self.sandbox.id));
        WorkerProcess::spawn(&worker_binary()?, &settings, self.args.worker_rust_log.as_deref(), log)
    }

    async fn start_worker(&self, batch_size: u16, prefetch: u16) -> anyhow::Result<WorkerProcess> {
        let worker = self.worker(batch_size, prefetch)?;
        worker.ready(Duration::from_secs(30)).await?;
        Ok(worker)
    }

    async fn ready(&self, queue: &str) -> anyhow::Result<u32> {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        Ok(self.sandbox.channel.queue_declare(queue.into(), passive, FieldTable::default()).await?.message_count())
    }

    /// Waits until `count` events have been consumed from the outbound queue.
    async fn wait_for_events(&self, count: u32, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.events.total() < count as usize {
            anyhow::ensure!(Instant::now() < deadline, "the worker did not publish {count} events within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn reset(&self) -> anyhow::Result<()> {
        self.events.reset();
        self.sandbox.db.execute_unprepared("TRUNCATE orders, order_items").await?;
        Ok(())
    }

    /// The backlog drained at full speed: orders/s, worker CPU and memory, server CPU.
    async fn drain_backlog(&self, orders: usize, batch_size: u16, prefetch: u16) -> anyhow::Result<Drained> {
        traffic::preload(&self.sandbox.channel, &self.inbound(), orders).await?;
        let worker = self.start_worker(batch_size, prefetch).await?;
        let (cpu_before, servers_before) = (process::cpu_seconds(worker.pid()).unwrap_or(0.0), process::servers_cpu());
        let started = Instant::now();
        self.wait_for_events(orders as u32, Duration::from_secs(600)).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = process::cpu_seconds(worker.pid()).unwrap_or(0.0) - cpu_before;
        let rss = process::peak_rss_mib(worker.pid()).unwrap_or(0.0);
        let servers = process::servers_cpu();
        let server_us = servers
            .iter()
            .map(|(name, after)| {
                (*name, (after - servers_before.get(name).copied().unwrap_or(0.0)) / orders as f64 * 1e6)
            })
            .collect();
        Ok(Drained {
            worker,
            per_second: orders as f64 / elapsed,
            cpu_per_1000: cpu / orders as f64 * 1000.0,
            rss,
            server_us,
        })
    }

    /// Delivery-to-ack percentiles while orders arrive at `rate` per second, and the p99 of each
    /// actor's handling time.
    async fn latency_at(
        &self,
        worker: &WorkerProcess,
        rate: f64,
        seconds: u64,
    ) -> anyhow::Result<(usize, [Option<f64>; 3], BTreeMap<&'static str, Option<f64>>)> {
        const END_TO_END: &str = "order_process_processing_duration_seconds";
        const ACTOR: &str = "order_process_actor_handling_duration_seconds";
        const ACTORS: [&str; 4] = ["consumer", "status_writer", "processor", "publisher"];
        let before = worker.get("/metrics").await?.1;
        let already = self.events.total() as u32;
        let sent = traffic::at_rate(&self.sandbox.channel, &self.inbound(), rate, Duration::from_secs(seconds)).await?;
        self.wait_for_events(already + sent as u32, Duration::from_secs(120)).await?;
        let after = worker.get("/metrics").await?.1;
        let ms = |name: &str, selector: &str, q| {
            crate::latency::quantile(
                &crate::latency::histogram(&before, name, selector),
                &crate::latency::histogram(&after, name, selector),
                q,
            )
            .map(|s| s * 1000.0)
        };
        let actors = ACTORS.iter().map(|a| (*a, ms(ACTOR, &format!("actor=\"{a}\""), 0.99))).collect();
        Ok((sent, [ms(END_TO_END, "", 0.5), ms(END_TO_END, "", 0.95), ms(END_TO_END, "", 0.99)], actors))
    }
}

impl Bench {
    /// Peak memory of a worker draining `count` messages of `size` bytes, each refused as too
    /// large and dead-lettered.
    async fn large_backlog(&self, count: usize, size: usize) -> anyhow::Result<LargeBacklog> {
        let padding = "x".repeat(size.saturating_sub(80));
        let messages = (0..count).map(|_| {
            let id = uuid::Uuid::new_v4().to_string();
            (format!(r#"{{"correlationId":"{id}","padding":"{padding}"}}"#).into_bytes(), id)
        });
        traffic::publish_all(&self.sandbox.channel, &self.inbound(), messages).await?;
        let consumer = &self.sandbox.settings.worker.consumer;
        let worker = self.start_worker(consumer.batch_size, consumer.prefetch).await?;
        let started = Instant::now();
        let dead_letters = self.sandbox.dead_letter();
        while self.ready(&dead_letters).await? < count as u32 {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "the large backlog was not dead-lettered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let rss = process::peak_rss_mib(worker.pid()).unwrap_or(0.0);
        worker.stop().await?;
        Ok(LargeBacklog {
            messages: count,
            bytes_each: size as u64,
            in_flight_budget_bytes: consumer.in_flight_bytes.0,
            seconds,
            worker_peak_rss_mib: rss,
        })
    }
}

struct Drained {
    worker: WorkerProcess,
    per_second: f64,
    cpu_per_1000: f64,
    rss: f64,
    server_us: BTreeMap<&'static str, f64>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.settings.broker.broker == actors::broker::BrokerSetting::Servicebus {
        return servicebus::run(args).await;
    }
    worker_binary()?; // before any work: the bench measures the production binary
    let sandbox = Sandbox::within("bench", args.settings.clone()).await?;
    order_process::startup::migrate(&sandbox.settings.worker.processor.database).await?;
    sandbox.channel.confirm_select(Default::default()).await?;
    let bench = Bench { args: args.clone(), sandbox, events: traffic::EventCounter::default() };
    let report = measure(&bench).await;
    bench.sandbox.cleanup().await;
    let report = report?;
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(path) = &args.sweep_plot {
        let points: Vec<plot::Point> = report
            .sweep
            .iter()
            .map(|p| plot::Point {
                label: format!("{}/{}", p.batch_size, p.prefetch),
                orders_per_second: p.per_second,
                p99_ms: p.p99_ms_at_half,
            })
            .collect();
        std::fs::write(path, plot::svg("order-process: throughput and p99 latency by batch size / prefetch", &points))?;
    }
    Ok(())
}

async fn measure(bench: &Bench) -> anyhow::Result<Report> {
    let args = &bench.args;
    let consumer = &args.settings.worker.consumer;
    let (batch_size, prefetch) = (consumer.batch_size, consumer.prefetch);
    let amqp_url = args.settings.amqp.amqp_url.first().expose();
    eprintln!("[bench] ceiling: AMQP relay of {} messages", args.ceiling_orders);
    let relay =
        ceilings::amqp_relay(amqp_url, &format!("bench.{}", bench.sandbox.id), args.ceiling_orders, prefetch).await?;
    eprintln!("[bench] ceiling: batched SQL inserts of {} orders", args.ceiling_orders);
    let sql = ceilings::sql_batches(&bench.sandbox.db, args.ceiling_orders, usize::from(batch_size)).await?;

    // A first start declares the worker's queues, so the backlog can be loaded before the
    // measured start.
    bench.start_worker(batch_size, prefetch).await?.stop().await?;
    // The events are consumed as a downstream service would, and counted per order.
    bench.events.consume(amqp_url, &bench.sandbox.outbound()).await?;
    eprintln!("[bench] worker: draining a backlog of {} orders", args.orders);
    let drained = bench.drain_backlog(args.orders, batch_size, prefetch).await?;
    let verified_rows: i64 = bench
        .sandbox
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(DISTINCT correlation_id) FROM orders",
        ))
        .await?
        .context("a count")?
        .try_get_by_index(0)?;
    let verified_events = bench.events.distinct() as u32;
    anyhow::ensure!(verified_rows as usize == args.orders, "{verified_rows} orders stored for {} sent", args.orders);
    anyhow::ensure!(
        verified_events as usize == args.orders && bench.events.total() == args.orders,
        "{} events for {verified_events} distinct orders, {} sent",
        bench.events.total(),
        args.orders
    );
    anyhow::ensure!(bench.ready(&bench.inbound()).await? == 0, "messages left in the inbound queue");
    bench.reset().await?;

    let mut latency = Vec::new();
    let rates: Vec<f64> = if args.rates.is_empty() {
        [0.25, 0.5, 0.9].iter().map(|share| drained.per_second * share).collect()
    } else {
        args.rates.clone()
    };
    for rate in rates {
        let share = rate / drained.per_second;
        eprintln!(
            "[bench] latency at {:.0} % of the maximum: {rate:.0} orders/s for {} s",
            share * 100.0,
            args.latency_seconds
        );
        let (orders, [p50, p95, p99], actor_p99_ms) =
            bench.latency_at(&drained.worker, rate, args.latency_seconds).await?;
        latency.push(Latency {
            offered_share: share,
            offered_per_second: rate,
            orders,
            p50_ms: p50,
            p95_ms: p95,
            p99_ms: p99,
            actor_p99_ms,
        });
    }
    drained.worker.stop().await?;
    bench.reset().await?;

    let mut sweep = Vec::new();
    if args.sweep_plot.is_some() {
        for pair in args.sweep.split(',') {
            let (batch, prefetch) = pair.split_once('/').context("--sweep takes batch/prefetch pairs")?;
            let (batch, prefetch): (u16, u16) = (batch.trim().parse()?, prefetch.trim().parse()?);
            eprintln!("[bench] sweep: batch {batch}, prefetch {prefetch}");
            let run = bench.drain_backlog(args.ceiling_orders, batch, prefetch).await?;
            bench.reset().await?;
            let (_, [_, _, p99], _) =
                bench.latency_at(&run.worker, run.per_second / 2.0, args.latency_seconds.min(5)).await?;
            run.worker.stop().await?;
            bench.reset().await?;
            sweep.push(SweepPoint { batch_size: batch, prefetch, per_second: run.per_second, p99_ms_at_half: p99 });
        }
    }

    let large = if args.large_backlog > 0 {
        eprintln!("[bench] memory: a backlog of {} messages of {} each", args.large_backlog, args.large_size);
        Some(bench.large_backlog(args.large_backlog, args.large_size.0 as usize).await?)
    } else {
        None
    };

    Ok(Report {
        machine_cpus: std::thread::available_parallelism().map_or(0, usize::from),
        prefetch,
        batch_size,
        amqp_relay_per_second: relay,
        sql_batched_per_second: sql,
        backlog: args.orders,
        worker_per_second: drained.per_second,
        share_of_relay: drained.per_second / relay,
        worker_cpu_seconds_per_1000: drained.cpu_per_1000,
        worker_peak_rss_mib: drained.rss,
        server_cpu_us_per_order: drained.server_us,
        latency,
        verified_rows: verified_rows as u64,
        verified_events,
        sweep,
        large,
    })
}

fn print_report(r: &Report) {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    println!("order-process bench ({} CPUs; batch {}, prefetch {})", r.machine_cpus, r.batch_size, r.prefetch);
    println!();
    println!("| measure | result |");
    println!("| --- | --- |");
    println!("| ceiling: bare AMQP relay (consume, confirmed publish, ack) | {:.0} msg/s |", r.amqp_relay_per_second);
    println!(
        "| ceiling: batched SQL inserts ({} per transaction) | {:.0} orders/s |",
        r.batch_size, r.sql_batched_per_second
    );
    println!(
        "| worker, draining a backlog of {} | {:.0} orders/s ({:.0} % of the relay) |",
        r.backlog,
        r.worker_per_second,
        r.share_of_relay * 100.0
    );
    println!("| worker CPU | {:.3} CPU-s per 1000 orders |", r.worker_cpu_seconds_per_1000);
    println!("| worker peak RSS | {:.1} MiB |", r.worker_peak_rss_mib);
    for (server, us) in &r.server_cpu_us_per_order {
        println!("| {server} CPU | {us:.0} µs per order |");
    }
    println!("| verified | {} orders stored once, one event each ({} distinct) |", r.verified_rows, r.verified_events);
    println!();
    println!("| offered load | orders | p50 ms | p95 ms | p99 ms | p99 per actor request (ms) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for l in &r.latency {
        let actors: Vec<String> = l.actor_p99_ms.iter().map(|(a, v)| format!("{a} {}", ms(*v))).collect();
        println!(
            "| {:.0} % ({:.0}/s) | {} | {} | {} | {} | {} |",
            l.offered_share * 100.0,
            l.offered_per_second,
            l.orders,
            ms(l.p50_ms),
            ms(l.p95_ms),
            ms(l.p99_ms),
            actors.join(", ")
        );
    }
    if let Some(large) = &r.large {
        println!();
        println!(
            "memory: {} messages of {} bytes dead-lettered in {:.1} s with an in-flight budget of {} bytes; worker peak RSS {:.1} MiB",
            large.messages, large.bytes_each, large.seconds, large.in_flight_budget_bytes, large.worker_peak_rss_mib
        );
    }
    if !r.sweep.is_empty() {
        println!();
        println!("| batch size | prefetch | orders/s | p99 ms at half that load |");
        println!("| --- | --- | --- | --- |");
        for p in &r.sweep {
            println!("| {} | {} | {:.0} | {} |", p.batch_size, p.prefetch, p.per_second, ms(p.p99_ms_at_half));
        }
    }
}
