//! `lab demo`, `lab bench` and `lab log-cost`: see the crate documentation.

use clap::{Parser, Subcommand};
use order_process::telemetry::{self, LogFormat};
use std::process::ExitCode;

/// The order-process lab: the demo and the benchmark.
#[derive(Debug, Parser)]
#[command(name = "lab")]
struct Lab {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Watch the pipeline work: publish synthetic orders, process them, print a verified summary.
    Demo(lab::demo::DemoArgs),
    /// Measure throughput, latency, CPU and memory against the configured services.
    Bench(lab::bench::BenchArgs),
    /// Measure what the worker's telemetry (delivery spans, the settled line) costs per delivery,
    /// on the in-memory ports.
    LogCost(lab::logcost::LogCostArgs),
}

#[actix::main]
async fn main() -> ExitCode {
    let lab = Lab::parse();
    // Output is on stdout; only errors are logged (the demo runs the worker in this process).
    let telemetry = match telemetry::init(LogFormat::Pretty, "error") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = match lab.command {
        Command::Demo(args) => lab::demo::run(args).await,
        Command::Bench(args) => lab::bench::run(args).await,
        Command::LogCost(args) => lab::logcost::run(args).await,
    };
    if let Err(error) = &result {
        eprintln!("error: {error:#}");
    }
    telemetry.shutdown().await;
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
