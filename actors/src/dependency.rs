//! The three dependencies the actors own, and how the consumer asks whether one answers.
//!
//! A failed call says either that the message's order failed or that the dependency is away
//! ([`crate::retry::Classify::is_outage`]). When a step fails with an outage, the consumer sends
//! [`Probe`] to the actor that owns the dependency, which makes the cheapest round trip it can
//! (PostgreSQL `SELECT 1`, Redis `PING`, an open publisher channel). If that fails too, the
//! dependency is down: the consumer pauses and holds its deliveries without spending their
//! attempts, probing until the dependency answers again. If the probe succeeds, the failure was
//! the message's own and counts an attempt as usual.

use crate::error::Cause;
use actix::Message;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dependency {
    /// The broker's publishing side (the consuming side pauses by itself when it goes).
    Broker,
    Database,
    Redis,
}

impl Dependency {
    pub const ALL: [Self; 3] = [Self::Broker, Self::Database, Self::Redis];

    /// As the `dependency` label names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Broker => "broker",
            Self::Database => "database",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Does your dependency answer? One attempt, within the actor's per-call timeout.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), Cause>")]
pub struct Probe;

/// The answer to a [`Probe`]: `probe` answered within `timeout`.
pub async fn answered<E>(timeout: Duration, probe: impl Future<Output = Result<(), E>>) -> Result<(), Cause>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, probe).await {
        Ok(answer) => answer.map_err(Cause::new),
        Err(_) => Err(Cause::text(format!("no answer within {timeout:?}"))),
    }
}
