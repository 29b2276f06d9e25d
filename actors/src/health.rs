//! What the readiness and liveness probes report, shared by the actors that know it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Ready means: the consumer is attached to the inbound queue and the worker is not draining.
/// Dependencies are deliberately not probed: a replica whose database is down pauses and holds
/// its deliveries until the database answers, which another replica could not do better, and a
/// readiness that follows dependencies would take every replica out at once. Live means: the
/// process runs and no actor is gone for good (an actor that panicked is not restarted by its
/// supervisor; the process must be, and a failing liveness probe makes Kubernetes do it).
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Flags>);

#[derive(Debug, Default)]
struct Flags {
    consumer_attached: AtomicBool,
    draining: AtomicBool,
    broken: AtomicBool,
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
        self.consumer_attached() && !self.draining() && self.live()
    }

    /// An actor is gone and will not come back: only a restart of the process helps.
    pub fn set_broken(&self) {
        self.0.broken.store(true, Ordering::Relaxed);
    }

    pub fn live(&self) -> bool {
        !self.0.broken.load(Ordering::Relaxed)
    }
}
