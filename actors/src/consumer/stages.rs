//! The actors a delivery passes through after it is decoded, and how a failure along the way is
//! reported. Each step is one request for the whole batch to the actor that owns the dependency;
//! the replies are per order, so an order that fails drops out of the chain alone while its
//! neighbours go on.

use crate::dependency::{Dependency, Probe};
use crate::error::Cause;
use crate::processor::PersistOrders;
use crate::publisher::PublishEvents;
use crate::retry::Classify;
use crate::status_writer::SetStatuses;
use actix::{MailboxError, Recipient};
use std::fmt;

/// The actors a batch passes through, and how to ask each whether its dependency answers.
#[derive(Clone)]
pub struct Stages {
    pub status: Recipient<SetStatuses>,
    pub processor: Recipient<PersistOrders>,
    pub publisher: Recipient<PublishEvents>,
    pub probes: Probes,
}

/// The [`Probe`] recipient of each actor that owns a dependency.
#[derive(Clone)]
pub struct Probes {
    pub status: Recipient<Probe>,
    pub processor: Recipient<Probe>,
    pub publisher: Recipient<Probe>,
}

impl Stages {
    /// Whether `dependency` answers now.
    pub async fn probe(&self, dependency: Dependency) -> Result<(), Cause> {
        self.prober(dependency).send(Probe).await.unwrap_or_else(|error| Err(Cause::new(error)))
    }

    /// Whether the actor that owns `dependency` is still there (its mailbox open). One that
    /// panicked is gone for good: its supervisor does not restart it.
    pub fn owner_alive(&self, dependency: Dependency) -> bool {
        self.prober(dependency).connected()
    }

    fn prober(&self, dependency: Dependency) -> &Recipient<Probe> {
        match dependency {
            Dependency::Redis => &self.probes.status,
            Dependency::Database => &self.probes.processor,
            Dependency::Broker => &self.probes.publisher,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    MarkProcessing,
    Persist,
    MarkCompleted,
    Publish,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MarkProcessing => "mark_processing",
            Self::Persist => "persist",
            Self::MarkCompleted => "mark_completed",
            Self::Publish => "publish",
        }
    }

    /// The dependency the step calls.
    pub fn dependency(self) -> Dependency {
        match self {
            Self::MarkProcessing | Self::MarkCompleted => Dependency::Redis,
            Self::Persist => Dependency::Database,
            Self::Publish => Dependency::Broker,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step that failed for one order, after its own retries, with the error that failed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage} failed")]
pub struct StageFailure {
    pub stage: Stage,
    pub transient: bool,
    /// The step's dependency seemed away ([`Classify::is_outage`]); a probe tells whether it is.
    pub outage: bool,
    #[source]
    pub cause: Cause,
}

impl StageFailure {
    pub fn new<E: Classify + std::error::Error + Clone + Send + Sync + 'static>(stage: Stage, error: &E) -> Self {
        Self { stage, transient: error.is_transient(), outage: error.is_outage(), cause: Cause::new(error.clone()) }
    }

    /// The actor stopped or is restarting: the step may succeed on a later delivery.
    pub(super) fn unavailable(stage: Stage, error: MailboxError) -> Self {
        #[derive(Debug, thiserror::Error)]
        #[error("actor unavailable")]
        struct Unavailable(#[source] MailboxError);
        Self { stage, transient: true, outage: true, cause: Cause::new(Unavailable(error)) }
    }
}
