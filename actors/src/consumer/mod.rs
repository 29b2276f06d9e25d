//! Consumer: owns the subscription to the inbound queue and is the only component that settles
//! a delivery.
//!
//! - [`actor`]: subscribes (and re-subscribes after a lost connection), runs up to `prefetch`
//!   deliveries concurrently, and drains on shutdown ([`Drain`]).
//! - [`delivery`]: one delivery, from bytes to settlement: decode, walk the
//!   [`crate::pipeline`], decide, settle.
//! - [`disposition`]: the decision as a plain function: ack, retry later, or dead-letter.

mod actor;
mod config;
mod delivery;
mod disposition;

pub use actor::{Consumer, Drain, DrainReport};
pub use config::{ConsumerConfig, RedeliveryPolicy, format_delays, parse_delays};
pub use delivery::DeliveryHandler;
pub use disposition::{Disposition, Outcome, decide};
