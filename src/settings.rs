//! The whole configuration of `order-process run`: the parts declared beside their components,
//! side by side. Nothing here declares a setting again; it only says which parts the worker
//! needs and checks what single values cannot (the queues must be distinct).

use crate::http::HttpConfig;
use crate::telemetry::LogConfig;
use actors::WorkerConfig;
use actors::amqp::AmqpConfig;
use actors::broker::{BrokerChoice, BrokerChoiceError, BrokerKind};
use actors::servicebus::ServiceBusConfig;
use clap::{ArgAction, Args};
use serde::Serialize;

/// Serializes with passwords masked, so it can be logged at startup.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct Settings {
    #[command(flatten)]
    pub worker: WorkerConfig,
    #[command(flatten)]
    pub broker: BrokerChoice,
    #[command(flatten)]
    pub amqp: AmqpConfig,
    #[command(flatten)]
    pub servicebus: ServiceBusConfig,
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub log: LogConfig,
    /// Apply database migrations at startup (turn off when a separate job runs them).
    #[arg(long, env = "ORDER_PROCESS_MIGRATE_ON_START", default_value_t = true, action = ArgAction::Set)]
    pub migrate_on_start: bool,
}

impl Default for Settings {
    fn default() -> Self {
        actors::config::defaults()
    }
}

/// A combination of settings that cannot work, named so the operator knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{first} and {second} name the same queue {queue:?}; they must differ")]
    SameQueue { first: &'static str, second: &'static str, queue: String },
    #[error(transparent)]
    Broker(#[from] BrokerChoiceError),
}

/// The broker `choice` means beside the Service Bus settings `servicebus`.
pub fn broker_kind(choice: &BrokerChoice, servicebus: &ServiceBusConfig) -> Result<BrokerKind, BrokerChoiceError> {
    choice.resolve(servicebus.is_given())
}

impl Settings {
    /// The dead-letter queue the worker uses on RabbitMQ.
    pub fn dead_letter_queue(&self) -> String {
        self.amqp.dead_letter_queue_of(&self.worker.queues.inbound_queue)
    }

    /// The broker meant: `ORDER_PROCESS_BROKER`, or inferred from the settings given.
    pub fn broker_kind(&self) -> Result<BrokerKind, BrokerChoiceError> {
        broker_kind(&self.broker, &self.servicebus)
    }

    /// Checks what single values cannot: the broker must be configured and the queues distinct
    /// (on Service Bus the dead letters are the inbound queue's own sub-queue).
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.broker_kind()? == BrokerKind::Servicebus {
            let (inbound, outbound) = (&self.worker.queues.inbound_queue, &self.worker.queues.outbound_queue);
            if inbound == outbound {
                let (first, second) = ("ORDER_PROCESS_INBOUND_QUEUE", "ORDER_PROCESS_OUTBOUND_QUEUE");
                return Err(SettingsError::SameQueue { first, second, queue: inbound.clone() });
            }
            return Ok(());
        }
        let queues = [
            ("ORDER_PROCESS_INBOUND_QUEUE", self.worker.queues.inbound_queue.clone()),
            ("ORDER_PROCESS_OUTBOUND_QUEUE", self.worker.queues.outbound_queue.clone()),
            ("ORDER_PROCESS_DEAD_LETTER_QUEUE", self.dead_letter_queue()),
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
        settings.amqp.amqp_url = "amqp://u:hunter2@h/%2f,amqp://v:hunter3@h2/%2f".parse().unwrap();
        settings.validate().unwrap();
        let logged = serde_json::to_string(&settings).unwrap();
        assert!(!logged.contains("hunter2") && !logged.contains("hunter3"), "{logged}");
    }

    #[test]
    fn service_bus_settings_choose_service_bus_and_its_key_is_masked() {
        let mut settings = Settings::default();
        assert_eq!(settings.broker_kind().unwrap(), BrokerKind::Rabbitmq);
        let key = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=hunter2";
        settings.servicebus.servicebus_connection_string =
            Some(actors::servicebus::parse_connection_string(key).unwrap());
        assert_eq!(settings.broker_kind().unwrap(), BrokerKind::Servicebus);
        settings.validate().unwrap();
        let logged = serde_json::to_string(&settings).unwrap();
        assert!(!logged.contains("hunter2") && logged.contains("sb://ns.servicebus.windows.net/"), "{logged}");
        settings.servicebus.servicebus_connection_string = None;
        settings.broker.broker = actors::broker::BrokerSetting::Servicebus;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("AZURE_SERVICEBUS_CONNECTION_STRING"), "{error}");
    }

    #[test]
    fn queues_must_be_distinct() {
        let mut settings = Settings::default();
        settings.worker.queues.outbound_queue = settings.worker.queues.inbound_queue.clone();
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("ORDER_PROCESS_INBOUND_QUEUE and ORDER_PROCESS_OUTBOUND_QUEUE"), "{error}");
    }
}
