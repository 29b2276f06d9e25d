//! Consumer: owns the subscription to the inbound queue and is the only component that settles
//! a delivery. The whole life of a delivery is told here:
//!
//! - `actor`: gathers deliveries into batches (up to `batch_size`, or what arrived within
//!   `batch_linger`), runs batches concurrently within the prefetch limit, re-subscribes after a
//!   lost connection, and drains on shutdown ([`Drain`]).
//! - `delivery`: one batch from bytes to settlement: decode, `PROCESSING`, persist, `COMPLETED`,
//!   publish, then ack, retry later, or `FAILED` and dead-letter each delivery on its own.
//! - `stages`: the actors the chain asks, and how a failed step is reported.
//! - `turns`: batches persist in the order they were formed.
//! - `disposition`: the decision as a plain function: ack, retry later, or dead-letter.
//! - `events`: what becomes of a delivery, logged and counted together.
//! - `config`: the consumer's settings.

mod actor;
mod budget;
mod config;
mod delivery;
mod disposition;
mod events;
mod stages;
mod turns;

pub use actor::{Consumer, Drain, DrainReport};
pub use budget::PrefetchBudget;
pub use config::{ConsumerConfig, RedeliveryPolicy};
pub use delivery::DeliveryHandler;
pub use disposition::{Disposition, Outcome, decide};
pub use stages::{Probes, Stage, StageFailure, Stages};
pub use turns::{Sequencer, Turn};
