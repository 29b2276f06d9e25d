//! `lab log-cost`: what the worker's telemetry costs per delivery, alone.
//!
//! `lab bench` shows the cost of the per-delivery log line only blurred: the broker shares the
//! two cores and is the bottleneck, and two runs of the same binary differ by as much as the
//! line costs. Here the worker runs in this process on the in-memory ports (no broker, database
//! or Redis beside it), under the very subscriber the worker installs
//! ([`order_process::telemetry::subscriber`]: the trace layer, JSON lines, the masking writer), with
//! the lines going to a file, so each is a `write(2)` as when stderr is collected. It drains the
//! same backlog once at `warn` (no delivery spans, no settled line) and once at the worker's
//! default level, in turns, and reports CPU time per delivery for each and their difference: the
//! price of the spans and the line, which is what the default level adds.

use crate::bench::process::cpu_seconds;
use crate::kit::memory::InMemory;
use actors::{Health, Metrics, Worker};
use anyhow::Context;
use clap::Args;
use order_process::telemetry::{self, MaskingWriter};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

#[derive(Debug, Clone, Args)]
pub struct LogCostArgs {
    /// Orders in each drained backlog.
    #[arg(long, default_value_t = 100_000)]
    pub orders: usize,
    /// Drains at each level, taken in turns.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The level that carries the per-delivery telemetry: the worker's default.
    #[arg(long, default_value = "info,sqlx=warn")]
    pub level: String,
    /// The level it is compared with.
    #[arg(long, default_value = "warn")]
    pub baseline: String,
}

/// One drain: CPU and wall time per delivery, log bytes per delivery.
struct Drain {
    cpu_us: f64,
    wall_us: f64,
    log_bytes: f64,
}

pub async fn run(args: LogCostArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.orders > 0 && args.rounds > 0, "--orders and --rounds must be above 0");
    let bodies = Arc::new(backlog(args.orders));
    println!("{} orders per drain, in-memory ports, lines to a file; CPU time per delivery:", args.orders);
    let (mut at_level, mut at_baseline) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        for (filter, into) in [(&args.baseline, &mut at_baseline), (&args.level, &mut at_level)] {
            let drain = drain_on_thread(filter.clone(), bodies.clone()).await?;
            println!(
                "  round {round}, {filter:<16} {:>6.2} µs CPU  {:>6.2} µs wall  {:>5.0} log bytes",
                drain.cpu_us, drain.wall_us, drain.log_bytes
            );
            into.push(drain);
        }
    }
    let median = |drains: &[Drain]| {
        let mut cpu: Vec<f64> = drains.iter().map(|d| d.cpu_us).collect();
        cpu.sort_by(f64::total_cmp);
        cpu[cpu.len() / 2]
    };
    let (level, baseline) = (median(&at_level), median(&at_baseline));
    println!(
        "median: {} {level:.2} µs, {} {baseline:.2} µs: the telemetry of `{}` costs {:.2} µs per delivery ({:.0} % more CPU)",
        args.level,
        args.baseline,
        args.level,
        level - baseline,
        (level / baseline - 1.0) * 100.0
    );
    Ok(())
}

/// `orders` valid orders, each with its correlation id.
fn backlog(orders: usize) -> Vec<(Vec<u8>, String)> {
    (0..orders).map(|_| Uuid::new_v4()).map(|id| (crate::traffic::order_body(id), id.to_string())).collect()
}

/// A drain on a thread of its own: the subscriber is that thread's default, and the worker runs
/// on that thread's actix system, so nothing else logs into the measurement.
async fn drain_on_thread(filter: String, bodies: Arc<Vec<(Vec<u8>, String)>>) -> anyhow::Result<Drain> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(drain(&filter, &bodies));
    });
    result.await.context("the drain's thread panicked")?
}

fn drain(filter: &str, bodies: &[(Vec<u8>, String)]) -> anyhow::Result<Drain> {
    let path = std::env::temp_dir().join(format!("lab-log-cost-{}.log", Uuid::new_v4()));
    let file = Arc::new(std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    let tracer_provider = telemetry::tracer_provider(false)?;
    let subscriber = telemetry::subscriber(EnvFilter::new(filter), &tracer_provider, true, MaskingWriter(file));
    let measured = tracing::subscriber::with_default(subscriber, || {
        actix_rt::System::new().block_on(async {
            let memory = InMemory::default();
            memory.publish(bodies);
            let (cpu, wall) = (cpu_seconds(std::process::id()).context("reading /proc/self/stat")?, Instant::now());
            // Metrics are recorded at both levels alike: left out, they are not in the difference.
            let worker = Worker::start(memory.ports(), memory.config.clone(), Health::default(), Metrics::disabled());
            while memory.settled() < bodies.len() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let (cpu, wall) = (cpu_seconds(std::process::id()).unwrap_or(cpu) - cpu, wall.elapsed());
            worker.drain(Duration::from_secs(5)).await?;
            let dead = memory.broker.len(memory.dead_letter());
            anyhow::ensure!(dead == 0, "{dead} orders were dead-lettered");
            anyhow::Ok((cpu, wall))
        })
    });
    let log_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    let (cpu, wall) = measured?;
    let per = |total: f64| total / bodies.len() as f64 * 1e6;
    Ok(Drain { cpu_us: per(cpu), wall_us: per(wall.as_secs_f64()), log_bytes: log_bytes as f64 / bodies.len() as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two levels differ by what is measured: a line per delivery at the default level, none
    /// at `warn`.
    #[test]
    fn a_drain_writes_one_line_per_delivery_at_the_default_level_and_none_at_warn() {
        let bodies = backlog(200);
        let at_info = drain("info,sqlx=warn", &bodies).unwrap();
        let at_warn = drain("warn", &bodies).unwrap();
        assert_eq!(at_warn.log_bytes, 0.0);
        // A settled line is about 500 bytes; the worker's start and stop add a few lines.
        assert!((300.0..1000.0).contains(&at_info.log_bytes), "{} bytes per delivery", at_info.log_bytes);
    }
}
