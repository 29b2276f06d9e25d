//! What happens inside the worker, one type per thing that happens, after Vector's internal
//! events: emitting one writes its log line and moves its counters together, so the logs and the
//! metrics can never disagree (a count without its line, a line without its count).
//!
//! The events every actor shares are here; those of one actor live beside it
//! (`consumer::events`). Each takes the [`ActorMetrics`] of the actor it happened in, which
//! carries the `actor` and `dependency` labels.

use crate::error::Chain;
use crate::metrics::ActorMetrics;
use std::time::Instant;

/// Something that happened: [`Event::emit`] logs it and counts it.
pub trait Event {
    fn emit(self, metrics: &ActorMetrics);
}

/// The supervisor restarts an actor that stopped (its dependency broke).
pub struct ActorRestarted;

impl Event for ActorRestarted {
    fn emit(self, metrics: &ActorMetrics) {
        tracing::warn!(actor = metrics.actor().as_str(), "restarting");
        metrics.count_restart();
    }
}

/// One call to the actor's dependency failed (every attempt counts, before any retry).
pub struct DependencyFailed<'a> {
    /// The error's kind (`timeout`, `unavailable`, ...): the `error_kind` label.
    pub kind: &'static str,
    pub error: &'a dyn std::error::Error,
}

impl Event for DependencyFailed<'_> {
    fn emit(self, metrics: &ActorMetrics) {
        // At debug: a retry follows, and what finally fails is logged where it is settled.
        tracing::debug!(dependency = metrics.actor().dependency(), error_kind = self.kind, error = %Chain(self.error), "dependency call failed");
        metrics.count_dependency_error(self.kind);
    }
}

/// A connection to the actor's dependency was made again after it was lost.
pub struct DependencyReconnected;

impl Event for DependencyReconnected {
    fn emit(self, metrics: &ActorMetrics) {
        tracing::info!(dependency = metrics.actor().dependency(), "reconnected");
        metrics.count_reconnect();
    }
}

/// An actor finished one request of `items` (deliveries, status changes, orders, events); of
/// these, `failures` failed after their retries: how many of each error kind.
pub struct BatchHandled<'a> {
    pub items: usize,
    pub started: Instant,
    pub failures: &'a [(&'static str, usize)],
}

impl Event for BatchHandled<'_> {
    fn emit(self, metrics: &ActorMetrics) {
        let elapsed = self.started.elapsed();
        let failed: usize = self.failures.iter().map(|(_, n)| n).sum();
        tracing::trace!(actor = metrics.actor().as_str(), items = self.items, failed, ?elapsed, "batch handled");
        metrics.count_handled(self.items, elapsed);
        for (kind, count) in self.failures {
            metrics.count_failure(kind, *count);
        }
    }
}
