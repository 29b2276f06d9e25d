//! Which broker the worker and its commands talk to: RabbitMQ ([`crate::amqp`]) or Azure Service
//! Bus (`crate::servicebus`). One setting chooses; when it is not given, the broker whose own
//! settings are given is meant (the AMQP URL has a default, so RabbitMQ is the fallback).

use clap::{Args, ValueEnum};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BrokerSetting {
    /// `servicebus` when a Service Bus connection string or namespace is given, else `rabbitmq`.
    Auto,
    /// the RabbitMQ of `AMQP_URL`.
    Rabbitmq,
    /// the Azure Service Bus namespace of the `AZURE_SERVICEBUS_*` settings.
    Servicebus,
}

/// The broker in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// RabbitMQ (AMQP 0-9-1).
    Rabbitmq,
    /// Azure Service Bus (AMQP 1.0).
    Servicebus,
}

/// The broker setting.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct BrokerChoice {
    /// Broker of the queues.
    #[arg(long, env = "ORDER_PROCESS_BROKER", value_enum, default_value_t = BrokerSetting::Auto)]
    pub broker: BrokerSetting,
}

impl Default for BrokerChoice {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// The broker setting asks for something this binary cannot do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerChoiceError {
    #[error(
        "ORDER_PROCESS_BROKER=servicebus needs AZURE_SERVICEBUS_CONNECTION_STRING or AZURE_SERVICEBUS_FULLY_QUALIFIED_NAMESPACE"
    )]
    ServiceBusNotConfigured,
    #[error("ORDER_PROCESS_BROKER=servicebus: this binary was built without the `servicebus` feature")]
    ServiceBusNotBuilt,
}

impl BrokerChoice {
    /// The broker meant, given whether any Service Bus namespace setting is present.
    pub fn resolve(&self, servicebus_given: bool) -> Result<BrokerKind, BrokerChoiceError> {
        let kind = match self.broker {
            BrokerSetting::Rabbitmq => BrokerKind::Rabbitmq,
            BrokerSetting::Servicebus => BrokerKind::Servicebus,
            BrokerSetting::Auto if servicebus_given => BrokerKind::Servicebus,
            BrokerSetting::Auto => BrokerKind::Rabbitmq,
        };
        if kind == BrokerKind::Servicebus {
            if !cfg!(feature = "servicebus") {
                return Err(BrokerChoiceError::ServiceBusNotBuilt);
            }
            if !servicebus_given {
                return Err(BrokerChoiceError::ServiceBusNotConfigured);
            }
        }
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_is_inferred_from_the_settings_given() {
        let unset = BrokerChoice::default();
        assert_eq!(unset.resolve(false), Ok(BrokerKind::Rabbitmq));
        assert_eq!(unset.resolve(true), Ok(BrokerKind::Servicebus));
        let rabbit = BrokerChoice { broker: BrokerSetting::Rabbitmq };
        assert_eq!(rabbit.resolve(true), Ok(BrokerKind::Rabbitmq), "an explicit choice wins");
        let bus = BrokerChoice { broker: BrokerSetting::Servicebus };
        assert_eq!(bus.resolve(false), Err(BrokerChoiceError::ServiceBusNotConfigured));
    }
}
