//! `order-process bench`: how fast the worker is on this machine, as a ratio of what the machine
//! allows, with a verified result.
//!
//! In one run, against the configured RabbitMQ, PostgreSQL and Redis (a fresh database, queues
//! and key prefix of its own, removed afterwards):
//! 1. the ceilings: a bare AMQP relay (consume, confirmed publish, ack) and the worker's batch
//!    insert statement alone;
//! 2. the worker (this binary, `run`, as a child process) draining a preloaded backlog: sustained
//!    orders/s, worker CPU seconds per 1000 orders, peak RSS, server CPU per order;
//! 3. delivery-to-ack latency (the worker's own histogram) at 25 %, 50 % and 90 % of that
//!    maximum, offered at a fixed rate;
//! 4. a check that every order is stored once and announced once;
//! 5. optionally a sweep of batch size and prefetch, plotted as SVG.

mod ceilings;
mod plot;
mod process;

use crate::traffic;
use anyhow::Context;
use clap::Args;
use fred::prelude::{ClientLike, KeysInterface};
use futures::StreamExt;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use process::Worker;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
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
    /// Deliveries in flight in the worker (and in the relay).
    #[arg(long, default_value_t = actors::consumer::ConsumerConfig::default().prefetch)]
    pub prefetch: u16,
    /// Orders per batch in the worker (and per transaction in the SQL ceiling).
    #[arg(long, default_value_t = actors::consumer::ConsumerConfig::default().batch_size)]
    pub batch_size: u16,
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
    /// Batch linger of the worker (ORDER_PROCESS_BATCH_LINGER).
    #[arg(long, default_value_t = actors::retry::format_duration(actors::consumer::ConsumerConfig::default().batch_linger))]
    pub batch_linger: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// AMQP broker.
    #[arg(long, env = "AMQP_URL", hide_env_values = true, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// PostgreSQL server; the benchmark creates (and drops) a database of its own there.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// Redis.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
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
}

#[derive(Debug, Serialize)]
struct SweepPoint {
    batch_size: u16,
    prefetch: u16,
    per_second: f64,
    p99_ms_at_half: Option<f64>,
}

/// One benchmark's private slice of the services.
struct Bench {
    args: BenchArgs,
    id: String,
    database_url: String,
    db: DatabaseConnection,
    amqp: lapin::Connection,
    channel: lapin::Channel,
    events: traffic::EventCounter,
}

impl Bench {
    fn inbound(&self) -> String {
        format!("bench.{}.orders", self.id)
    }
    fn outbound(&self) -> String {
        format!("bench.{}.processed", self.id)
    }
    fn key_prefix(&self) -> String {
        format!("bench:{}:", self.id)
    }

    fn worker_env(&self, batch_size: u16, prefetch: u16) -> Vec<(String, String)> {
        [
            ("AMQP_URL", self.args.amqp_url.clone()),
            ("DATABASE_URL", self.database_url.clone()),
            ("REDIS_URL", self.args.redis_url.clone()),
            ("ORDER_PROCESS_INBOUND_QUEUE", self.inbound()),
            ("ORDER_PROCESS_OUTBOUND_QUEUE", self.outbound()),
            ("ORDER_PROCESS_REDIS_KEY_PREFIX", self.key_prefix()),
            ("ORDER_PROCESS_PREFETCH", prefetch.to_string()),
            ("ORDER_PROCESS_BATCH_SIZE", batch_size.to_string()),
            ("ORDER_PROCESS_BATCH_LINGER", self.args.batch_linger.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    async fn ready(&self, queue: &str) -> anyhow::Result<u32> {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        Ok(self.channel.queue_declare(queue.into(), passive, FieldTable::default()).await?.message_count())
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
        self.db.execute_unprepared("TRUNCATE orders, order_items").await?;
        Ok(())
    }

    /// The backlog drained at full speed: orders/s, worker CPU and memory, server CPU.
    async fn drain_backlog(&self, orders: usize, batch_size: u16, prefetch: u16) -> anyhow::Result<Drained> {
        traffic::preload(&self.channel, &self.inbound(), orders).await?;
        let worker = Worker::start(&self.worker_env(batch_size, prefetch)).await?;
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
        worker: &Worker,
        rate: f64,
        seconds: u64,
    ) -> anyhow::Result<(usize, [Option<f64>; 3], BTreeMap<&'static str, Option<f64>>)> {
        const END_TO_END: &str = "order_process_processing_duration_seconds";
        const ACTOR: &str = "order_process_actor_handling_duration_seconds";
        const ACTORS: [&str; 4] = ["consumer", "status_writer", "processor", "publisher"];
        let before = worker.get("/metrics").await?.1;
        let already = self.events.total() as u32;
        let sent = traffic::at_rate(&self.channel, &self.inbound(), rate, Duration::from_secs(seconds)).await?;
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

    async fn cleanup(self) -> anyhow::Result<()> {
        let config = actors::amqp::AmqpConfig {
            inbound_queue: self.inbound(),
            outbound_queue: self.outbound(),
            ..Default::default()
        };
        let delays = actors::consumer::RedeliveryPolicy::default().delays;
        for queue in actors::amqp::Topology::new(&config, &delays).queues() {
            let _ = self.channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        }
        let _ = self.amqp.close(200, "bench done".into()).await;
        let redis =
            fred::prelude::Client::new(fred::types::config::Config::from_url(&self.args.redis_url)?, None, None, None);
        redis.init().await?;
        let mut scan = redis.scan_buffered(format!("{}*", self.key_prefix()), Some(1000), None);
        let mut keys = Vec::new();
        while let Some(Ok(key)) = scan.next().await {
            keys.push(key);
            if keys.len() == 1000 {
                let _: i64 = redis.del(std::mem::take(&mut keys)).await?;
            }
        }
        if !keys.is_empty() {
            let _: i64 = redis.del(keys).await?;
        }
        let _ = redis.quit().await;
        self.db.close().await?;
        let admin = Database::connect(&self.args.database_url).await?;
        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"op_bench_{}\" WITH (FORCE)", self.id)).await?;
        Ok(())
    }
}

struct Drained {
    worker: Worker,
    per_second: f64,
    cpu_per_1000: f64,
    rss: f64,
    server_us: BTreeMap<&'static str, f64>,
}

/// Replaces the database of a PostgreSQL URL.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").context("DATABASE_URL is not a URL")? + 3;
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    Ok(match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    })
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let admin = Database::connect(&args.database_url).await.context("DATABASE_URL")?;
    admin.execute_unprepared(&format!("CREATE DATABASE \"op_bench_{id}\"")).await?;
    admin.close().await?;
    let database_url = with_database(&args.database_url, &format!("op_bench_{id}"))?;
    crate::startup::migrate(&database_url).await?;
    let db = actors::processor::connect(&actors::processor::ProcessorConfig {
        database_url: actors::secret::SecretUrl::new(&database_url),
        ..Default::default()
    })
    .await?;
    let (amqp, channel) = traffic::confirming_channel(&args.amqp_url).await?;
    let events = traffic::EventCounter::default();
    let bench = Bench { args: args.clone(), id, database_url, db, amqp, channel, events };
    let report = measure(&bench).await;
    bench.cleanup().await?;
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
    eprintln!("[bench] ceiling: AMQP relay of {} messages", args.ceiling_orders);
    let relay =
        ceilings::amqp_relay(&args.amqp_url, &format!("bench.{}", bench.id), args.ceiling_orders, args.prefetch)
            .await?;
    eprintln!("[bench] ceiling: batched SQL inserts of {} orders", args.ceiling_orders);
    let sql = ceilings::sql_batches(&bench.db, args.ceiling_orders, usize::from(args.batch_size)).await?;

    // A first start declares the worker's queues, so the backlog can be loaded before the
    // measured start.
    Worker::start(&bench.worker_env(args.batch_size, args.prefetch)).await?.stop().await?;
    // The events are consumed as a downstream service would, and counted per order.
    bench.events.consume(&args.amqp_url, &bench.outbound()).await?;
    eprintln!("[bench] worker: draining a backlog of {} orders", args.orders);
    let drained = bench.drain_backlog(args.orders, args.batch_size, args.prefetch).await?;
    let verified_rows: i64 = bench
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

    Ok(Report {
        machine_cpus: std::thread::available_parallelism().map_or(0, usize::from),
        prefetch: args.prefetch,
        batch_size: args.batch_size,
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
    if !r.sweep.is_empty() {
        println!();
        println!("| batch size | prefetch | orders/s | p99 ms at half that load |");
        println!("| --- | --- | --- | --- |");
        for p in &r.sweep {
            println!("| {} | {} | {:.0} | {} |", p.batch_size, p.prefetch, p.per_second, ms(p.p99_ms_at_half));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "b").unwrap(), "postgres://u@h:5432/b");
        assert_eq!(with_database("postgres://u@h:5432", "b").unwrap(), "postgres://u@h:5432/b");
        assert_eq!(with_database("postgres://u@h/x?sslmode=require", "b").unwrap(), "postgres://u@h/b?sslmode=require");
    }
}
