use crate::retry::{format_duration, parse_duration};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Configuration of the consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerConfig {
    /// Deliveries in flight at once (AMQP prefetch). Bounds the memory a backlog can take.
    pub prefetch: u16,
    /// Most deliveries processed together: one status write, one transaction and one round of
    /// publishes for all of them.
    pub batch_size: u16,
    /// How long a batch waits for more deliveries after its first one before it starts anyway:
    /// the latency paid at low traffic for fewer round trips at high traffic.
    #[serde(with = "duration_text")]
    pub batch_linger: Duration,
    /// How failed messages come back.
    pub redelivery: RedeliveryPolicy,
    /// On shutdown, how long in-flight deliveries may take to finish before the rest is left to
    /// the broker to redeliver.
    #[serde(with = "duration_text")]
    pub drain_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            prefetch: 512,
            batch_size: 128,
            batch_linger: Duration::from_millis(1),
            redelivery: RedeliveryPolicy::default(),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// Broker-side redelivery of messages whose processing failed after the in-process retries:
/// the n-th failure waits `delays[n-1]` (the last delay repeats); failure number `max_attempts`
/// dead-letters the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedeliveryPolicy {
    pub max_attempts: u32,
    #[serde(with = "durations_text")]
    pub delays: Vec<Duration>,
}

impl Default for RedeliveryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, delays: [1, 4, 16, 60].map(Duration::from_secs).to_vec() }
    }
}

impl RedeliveryPolicy {
    /// The wait before redelivery after failure number `attempts` (1-based).
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let index = (attempts.max(1) as usize - 1).min(self.delays.len().saturating_sub(1));
        self.delays.get(index).copied().unwrap_or(Duration::from_secs(1))
    }
}

/// Parses `1s,4s,16s,60s`.
pub fn parse_delays(text: &str) -> Result<Vec<Duration>, String> {
    let delays = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() || delays.iter().any(Duration::is_zero) {
        return Err("needs at least one delay, each greater than zero".into());
    }
    Ok(delays)
}

pub fn format_delays(delays: &[Duration]) -> String {
    delays.iter().map(|d| format_duration(*d)).collect::<Vec<_>>().join(",")
}

mod duration_text {
    use crate::retry::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_duration(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

mod durations_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_delays(d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        super::parse_delays(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_repeat_the_last() {
        let policy = RedeliveryPolicy { max_attempts: 9, delays: parse_delays("1s, 4s,16s").unwrap() };
        let delays: Vec<_> = (1..=5).map(|n| policy.delay_after(n).as_secs()).collect();
        assert_eq!(delays, [1, 4, 16, 16, 16]);
    }

    #[test]
    fn delay_lists_parse_and_print_alike() {
        assert_eq!(format_delays(&parse_delays("500ms,2s,1m").unwrap()), "500ms,2s,1m");
        assert!(parse_delays("").is_err());
        assert!(parse_delays("1s,0s").is_err());
        assert!(parse_delays("1s,soon").unwrap_err().contains("soon"));
    }

    #[test]
    fn config_round_trips_through_serde() {
        let config = ConsumerConfig::default();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["drain_timeout"], "20s");
        assert_eq!(json["redelivery"]["delays"], "1s,4s,16s,1m");
        assert_eq!(serde_json::from_value::<ConsumerConfig>(json).unwrap(), config);
        let partial: ConsumerConfig = serde_json::from_str(r#"{"prefetch": 8}"#).unwrap();
        assert_eq!(partial.prefetch, 8);
        assert_eq!(partial.redelivery, RedeliveryPolicy::default());
    }
}
