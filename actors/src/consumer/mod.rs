//! Consumer: owns the subscription to the inbound queue and is the only component that settles
//! a delivery.
//!
//! - [`actor`]: subscribes (and re-subscribes after a lost connection), gathers deliveries into
//!   batches (up to `batch_size`, or what arrived within `batch_linger`), runs batches
//!   concurrently within the prefetch limit, and drains on shutdown ([`Drain`]).
//! - [`batch`]: one batch, from bytes to settlement: decode, walk the [`crate::pipeline`] with the
//!   valid orders together, decide and settle each delivery on its own.
//! - [`disposition`]: the decision as a plain function: ack, retry later, or dead-letter.

mod actor;
mod batch;
mod config;
mod disposition;

pub use actor::{Consumer, Drain, DrainReport};
pub use batch::BatchHandler;
pub use config::{ConsumerConfig, RedeliveryPolicy};
pub use disposition::{Disposition, Outcome, decide};
