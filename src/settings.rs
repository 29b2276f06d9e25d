//! The whole configuration, one part per component, each part defined beside its component.

use crate::http::HttpConfig;
use actors::amqp::AmqpConfig;
use actors::consumer::ConsumerConfig;
use actors::processor::ProcessorConfig;
use actors::publisher::PublisherConfig;
use actors::status_writer::StatusConfig;
use serde::{Deserialize, Serialize};

/// Serializes with passwords masked, so it can be logged at startup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub amqp: AmqpConfig,
    pub consumer: ConsumerConfig,
    pub processor: ProcessorConfig,
    pub status: StatusConfig,
    pub publisher: PublisherConfig,
    pub http: HttpConfig,
    /// Apply pending migrations before consuming.
    pub migrate_on_start: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            amqp: AmqpConfig::default(),
            consumer: ConsumerConfig::default(),
            processor: ProcessorConfig::default(),
            status: StatusConfig::default(),
            publisher: PublisherConfig::default(),
            http: HttpConfig::default(),
            migrate_on_start: true,
        }
    }
}

/// A combination of settings that cannot work, named so the operator knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{first} and {second} name the same queue {queue:?}; they must differ")]
    SameQueue { first: &'static str, second: &'static str, queue: String },
}

impl Settings {
    /// Checks what single values cannot: the queues must be distinct.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let queues = [
            ("ORDER_PROCESS_INBOUND_QUEUE", self.amqp.inbound_queue.clone()),
            ("ORDER_PROCESS_OUTBOUND_QUEUE", self.amqp.outbound_queue.clone()),
            ("ORDER_PROCESS_DEAD_LETTER_QUEUE", self.amqp.dead_letter_queue()),
        ];
        for (i, (first, a)) in queues.iter().enumerate() {
            if let Some((second, _)) = queues[i + 1..].iter().find(|(_, b)| a == b) {
                return Err(SettingsError::SameQueue { first, second, queue: a.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_secrets_are_masked_when_logged() {
        let mut settings = Settings::default();
        settings.amqp.url = actors::secret::SecretUrl::new("amqp://u:hunter2@h/%2f");
        settings.validate().unwrap();
        let logged = serde_json::to_string(&settings).unwrap();
        assert!(!logged.contains("hunter2"), "{logged}");
    }

    #[test]
    fn queues_must_be_distinct() {
        let mut settings = Settings::default();
        settings.amqp.outbound_queue = settings.amqp.inbound_queue.clone();
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("ORDER_PROCESS_INBOUND_QUEUE and ORDER_PROCESS_OUTBOUND_QUEUE"), "{error}");
    }
}
