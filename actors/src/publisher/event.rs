use crate::messaging::OutboundMessage;
use crate::order::{CorrelationId, OrderId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Namespace of the name-based (v5) message ids of this service's events.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5e0c_51a2_8f1d_4c3e_9b7a_0d52_4f6e_a1c3);

/// Published once an order is stored: `{"correlationId": "...", "orderId": 123}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderProcessed {
    pub correlation_id: CorrelationId,
    pub order_id: OrderId,
}

impl OrderProcessed {
    pub const TYPE: &'static str = "OrderProcessed";

    pub fn to_message(&self, destination: &str) -> OutboundMessage {
        OutboundMessage {
            destination: destination.to_owned(),
            body: serde_json::to_vec(self).expect("an event always serializes"),
            content_type: "application/json",
            message_type: Self::TYPE,
            message_id: event_message_id(self.correlation_id).to_string(),
            correlation_id: self.correlation_id.to_string(),
            headers: BTreeMap::new(),
        }
    }
}

/// The same for every event about one order, so consumers can de-duplicate redeliveries.
pub fn event_message_id(correlation_id: CorrelationId) -> Uuid {
    Uuid::new_v5(&EVENT_ID_NAMESPACE, format!("{}/{correlation_id}", OrderProcessed::TYPE).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_has_the_contracted_shape() {
        let cid = CorrelationId::new("7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11".parse().unwrap());
        let message = OrderProcessed { correlation_id: cid, order_id: OrderId(123) }.to_message("OrdersProcessed");
        let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(body, serde_json::json!({"correlationId": cid.to_string(), "orderId": 123}));
        assert_eq!((message.content_type, message.message_type), ("application/json", "OrderProcessed"));
        assert_eq!(message.correlation_id, cid.to_string());
        assert_eq!(message.destination, "OrdersProcessed");
    }

    #[test]
    fn message_ids_are_stable_per_order_and_distinct_between_orders() {
        let a = CorrelationId::new(Uuid::new_v4());
        let b = CorrelationId::new(Uuid::new_v4());
        assert_eq!(event_message_id(a), event_message_id(a));
        assert_ne!(event_message_id(a), event_message_id(b));
    }
}
