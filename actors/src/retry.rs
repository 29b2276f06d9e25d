//! In-process retries of one dependency call: a short timeout per attempt, a bounded number of
//! retries with exponential backoff and full jitter, and only for failures that can pass.
//!
//! Each actor owns a [`RetryPolicy`] for its dependency (SQL, Redis, broker publish). When the
//! retries are spent the error goes back to the consumer, which hands the message back to the
//! broker for a delayed redelivery: an in-process retry must stay short, because it holds a
//! delivery and a prefetch slot while it waits.

use crate::config::{format_duration, parse_duration};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;
use tokio_retry::RetryIf;
use tokio_retry::strategy::{ExponentialBackoff, jitter};

/// What kind of failure an error is: whether it may pass if the same call is made again (a lost
/// connection, a timeout, a serialization failure) or will fail the same way every time (a
/// constraint, a bad value), whether it says the dependency itself is unavailable, and a short
/// name for metrics and logs.
pub trait Classify {
    fn is_transient(&self) -> bool;
    /// The dependency is unavailable (refused or lost connection, timeout, shutting down, a
    /// failover in progress): the call says nothing about the message it was made for. The worker
    /// then pauses instead of spending the message's attempts. Implies [`Self::is_transient`].
    fn is_outage(&self) -> bool {
        false
    }
    /// A short, stable name (`timeout`, `unavailable`, `rejected`, ...): the `error_kind` label.
    fn kind(&self) -> &'static str;
}

/// What a call that ran out of time or retries reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Attempted<E> {
    #[error(transparent)]
    Failed(E),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

impl<E: Classify> Classify for Attempted<E> {
    fn is_transient(&self) -> bool {
        match self {
            Self::Failed(e) => e.is_transient(),
            Self::TimedOut(_) => true,
        }
    }
    fn is_outage(&self) -> bool {
        match self {
            Self::Failed(e) => e.is_outage(),
            Self::TimedOut(_) => true,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::Failed(e) => e.kind(),
            Self::TimedOut(_) => "timeout",
        }
    }
}

/// Timeout per attempt, number of retries after the first attempt, and the backoff between them.
///
/// Written as `timeout=2s,retries=3,backoff=50ms..1s` in flags and environment variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct RetryPolicy {
    pub timeout: Duration,
    pub retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            retries: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The waits between attempts: `initial × 2^n`, capped, each scaled by a random factor in
    /// [0, 1) so that replicas which failed together do not retry together.
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        let factor = (self.initial_backoff.as_millis() as u64 / 2).max(1);
        ExponentialBackoff::from_millis(2)
            .factor(factor)
            .max_delay(self.max_backoff)
            .map(jitter)
            .take(self.retries as usize)
    }

    /// Runs `call` until it succeeds, fails permanently, or the retries are spent.
    pub async fn run<T, E, F, Fut>(&self, call: F) -> Result<T, Attempted<E>>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_reporting(call, |_| ()).await
    }

    /// Like [`Self::run`], and tells `report` about every failed attempt (timeouts included),
    /// e.g. to count dependency errors.
    pub async fn run_reporting<T, E, F, Fut>(
        &self,
        mut call: F,
        report: impl Fn(&Attempted<E>),
    ) -> Result<T, Attempted<E>>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let timeout = self.timeout;
        let report = &report;
        RetryIf::start(
            self.backoff(),
            || {
                let attempt = call();
                async move {
                    let result = match tokio::time::timeout(timeout, attempt).await {
                        Ok(result) => result.map_err(Attempted::Failed),
                        Err(_) => Err(Attempted::TimedOut(timeout)),
                    };
                    if let Err(error) = &result {
                        report(error);
                    }
                    result
                }
            },
            |error: &Attempted<E>| error.is_transient(),
        )
        .await
    }
}

impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timeout={},retries={},backoff={}..{}",
            format_duration(self.timeout),
            self.retries,
            format_duration(self.initial_backoff),
            format_duration(self.max_backoff)
        )
    }
}

impl FromStr for RetryPolicy {
    type Err = String;

    /// Parses `timeout=2s,retries=3,backoff=50ms..1s`; omitted keys keep their defaults.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut policy = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("expected key=value, got {part:?}"))?;
            match key.trim() {
                "timeout" => policy.timeout = parse_duration(value)?,
                "retries" => {
                    policy.retries =
                        value.trim().parse().map_err(|_| format!("retries must be a whole number, got {value:?}"))?
                }
                "backoff" => {
                    let (initial, max) = value
                        .split_once("..")
                        .ok_or_else(|| format!("backoff must be written initial..max, got {value:?}"))?;
                    policy.initial_backoff = parse_duration(initial)?;
                    policy.max_backoff = parse_duration(max)?;
                }
                other => return Err(format!("unknown key {other:?} (expected timeout, retries, backoff)")),
            }
        }
        if policy.timeout.is_zero() {
            return Err("timeout must be greater than zero".into());
        }
        if policy.initial_backoff > policy.max_backoff {
            return Err("backoff initial must not exceed its max".into());
        }
        Ok(policy)
    }
}

impl From<RetryPolicy> for String {
    fn from(policy: RetryPolicy) -> Self {
        policy.to_string()
    }
}

/// The waits between tries to reach a dependency that is away: 100 ms growing to 10 s,
/// jittered, for ever.
pub fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBackoff::from_millis(2).factor(50).max_delay(Duration::from_secs(10)).map(jitter)
}

/// Calls `connect` until it succeeds: for (re)connecting to a dependency, which an actor must do
/// however long the dependency is away. Each try gets `CONNECT_TIMEOUT`; the waits between tries
/// grow from 100 ms to 10 s, jittered, and every failure is logged.
pub async fn until_ok<T, E, F, Fut>(what: &str, mut connect: F) -> T
where
    E: std::error::Error,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    let mut waits = reconnect_backoff();
    for attempt in 1.. {
        let error = match tokio::time::timeout(CONNECT_TIMEOUT, connect()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(e)) => crate::error::Chain(&e).to_string(),
            Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
        };
        let wait = waits.next().unwrap_or(Duration::from_secs(10));
        tracing::warn!(attempt, %error, retry_in = ?wait, "{what} failed");
        tokio::time::sleep(wait).await;
    }
    unreachable!("the attempts never run out")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    struct Failure(bool);
    impl Classify for Failure {
        fn is_transient(&self) -> bool {
            self.0
        }
        fn kind(&self) -> &'static str {
            "test"
        }
    }

    fn fast(retries: u32) -> RetryPolicy {
        RetryPolicy {
            timeout: Duration::from_millis(50),
            retries,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[test]
    fn policy_text_round_trips_and_names_its_errors() {
        let policy: RetryPolicy = "timeout=2s,retries=5,backoff=50ms..1m".parse().unwrap();
        assert_eq!(policy.timeout, Duration::from_secs(2));
        assert_eq!(policy.retries, 5);
        assert_eq!(policy.max_backoff, Duration::from_secs(60));
        assert_eq!(policy.to_string().parse::<RetryPolicy>().unwrap(), policy);
        assert_eq!("retries=1".parse::<RetryPolicy>().unwrap().timeout, RetryPolicy::default().timeout);
        assert!("timeout=fast".parse::<RetryPolicy>().unwrap_err().contains("got \"fast\""));
        assert!("timeout=0s".parse::<RetryPolicy>().unwrap_err().contains("greater than zero"));
        assert!("tries=3".parse::<RetryPolicy>().unwrap_err().contains("unknown key"));
        assert!("backoff=2s..1s".parse::<RetryPolicy>().unwrap_err().contains("must not exceed"));
    }

    #[test]
    fn backoff_is_bounded_in_count_and_size() {
        let policy: RetryPolicy = "retries=10,backoff=100ms..400ms".parse().unwrap();
        let waits: Vec<_> = policy.backoff().collect();
        assert_eq!(waits.len(), 10);
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(400)));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = fast(3)
            .run(|| async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 2 { Err(Failure(true)) } else { Ok(n) }
            })
            .await;
        assert_eq!(result, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = fast(3)
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure(false))
            })
            .await;
        assert_eq!(result, Err(Attempted::Failed(Failure(false))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_are_bounded_and_slow_attempts_time_out() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Attempted<Failure>> = fast(2)
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await;
        assert_eq!(result, Err(Attempted::TimedOut(Duration::from_millis(50))));
        assert_eq!(calls.load(Ordering::SeqCst), 3, "first attempt and two retries");
    }
}
