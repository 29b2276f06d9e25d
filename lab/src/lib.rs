//! The lab: what order-process is tried and measured with, kept out of the production binary.
//!
//! - [`kit`]: the test kit the integration tests, the chaos suite, the benchmark and the demo
//!   share: a private sandbox on the real services, the worker as a child process configured from
//!   the same settings type, queue helpers.
//! - [`traffic`]: synthetic orders put on a queue (a backlog, or a fixed rate) and events counted
//!   as a downstream service would.
//! - [`demo`]: `lab demo`, the pipeline at work in one command, embedded when the services are
//!   absent.
//! - [`bench`]: `lab bench`, throughput, latency, CPU and memory, as a share of what the machine
//!   allows.
//! - [`logcost`]: `lab log-cost`, what the delivery spans and the settled line cost per delivery,
//!   away from the services that blur it in `lab bench`.
//! - [`latency`]: percentiles from the worker's own Prometheus histograms.

pub mod bench;
pub mod demo;
pub mod kit;
pub mod latency;
pub mod logcost;
pub mod traffic;
