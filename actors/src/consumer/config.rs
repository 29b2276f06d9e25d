use crate::config::{ByteSize, Durations, duration_text, parse_duration, parse_positive_duration};
use clap::{Args, value_parser};
use serde::Serialize;
use std::time::Duration;

/// Configuration of the consumer.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct ConsumerConfig {
    /// Deliveries in flight at once (AMQP prefetch) while messages are small.
    #[arg(long, env = "ORDER_PROCESS_PREFETCH", default_value_t = 512, value_parser = value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Memory budget for the message bodies in flight: with large messages the consumer asks the
    /// broker for fewer at a time, so memory stays bounded whatever the message size.
    #[arg(long, env = "ORDER_PROCESS_IN_FLIGHT_BYTES", default_value = "32MiB")]
    pub in_flight_bytes: ByteSize,
    /// Most deliveries processed together (one status write, one transaction, one round of
    /// publishes).
    #[arg(long, env = "ORDER_PROCESS_BATCH_SIZE", default_value_t = 128, value_parser = value_parser!(u16).range(1..))]
    pub batch_size: u16,
    /// How long a batch waits for more deliveries after its first one: the latency paid at low
    /// traffic for fewer round trips at high traffic.
    #[arg(long, env = "ORDER_PROCESS_BATCH_LINGER", default_value = "1ms", value_parser = parse_duration)]
    #[serde(with = "duration_text")]
    pub batch_linger: Duration,
    #[command(flatten)]
    pub redelivery: RedeliveryPolicy,
    /// On SIGTERM/SIGINT, how long deliveries in flight may take to finish; the rest goes back to
    /// the queue.
    #[arg(long, env = "ORDER_PROCESS_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_positive_duration)]
    #[serde(with = "duration_text")]
    pub drain_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// Broker-side redelivery of messages whose processing failed after the in-process retries:
/// the n-th failure waits `retry_delays[n-1]` (the last delay repeats); failure number
/// `max_attempts` dead-letters the message.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct RedeliveryPolicy {
    /// Failed attempts after which a message is dead-lettered.
    #[arg(long, env = "ORDER_PROCESS_MAX_ATTEMPTS", default_value_t = 5, value_parser = value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Broker-side delays before the 1st, 2nd, ... redelivery of a failed message (the last one
    /// repeats). One retry queue is declared per delay.
    #[arg(long, env = "ORDER_PROCESS_RETRY_DELAYS", default_value = "1s,4s,16s,1m")]
    pub retry_delays: Durations,
}

impl Default for RedeliveryPolicy {
    fn default() -> Self {
        crate::config::defaults()
    }
}

impl RedeliveryPolicy {
    /// The wait before redelivery after failure number `attempts` (1-based).
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let delays = &self.retry_delays;
        let index = (attempts.max(1) as usize - 1).min(delays.len().saturating_sub(1));
        delays.get(index).copied().unwrap_or(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_repeat_the_last() {
        let policy = RedeliveryPolicy { max_attempts: 9, retry_delays: "1s, 4s,16s".parse().unwrap() };
        let delays: Vec<_> = (1..=5).map(|n| policy.delay_after(n).as_secs()).collect();
        assert_eq!(delays, [1, 4, 16, 16, 16]);
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = ConsumerConfig::default();
        assert_eq!((config.prefetch, config.batch_size), (512, 128));
        assert_eq!((config.batch_linger, config.drain_timeout), (Duration::from_millis(1), Duration::from_secs(20)));
        assert_eq!(config.redelivery.max_attempts, 5);
        assert_eq!(config.redelivery.retry_delays.to_string(), "1s,4s,16s,1m");
    }
}
