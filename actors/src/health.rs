//! What the readiness and liveness probes report, shared by the actors that know it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Ready means: the consumer is attached to the inbound queue and the worker is not draining.
/// Dependencies are deliberately not probed: a replica whose database is down still takes
/// deliveries and hands them back for a later retry, and probing would only add load.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Flags>);

#[derive(Debug, Default)]
struct Flags {
    consumer_attached: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    pub fn set_consumer_attached(&self, attached: bool) {
        self.0.consumer_attached.store(attached, Ordering::Relaxed);
    }

    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    pub fn consumer_attached(&self) -> bool {
        self.0.consumer_attached.load(Ordering::Relaxed)
    }

    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    pub fn ready(&self) -> bool {
        self.consumer_attached() && !self.draining()
    }
}
