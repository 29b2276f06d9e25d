//! The `$cbs` node and each entity's `$management` node: request/response operations.
//!
//! Implemented exactly as the two clients call them (read from azservicebus 0.25.1's
//! `amqp_request_message` / `amqp_response_message` modules and azure-servicebus 7.15's
//! `_common/mgmt_handlers.py` / `_servicebus_receiver.py`): the operation name in the
//! `operation` application property, an AMQP-value map body with kebab-case keys, and a reply
//! whose `statusCode` / `statusDescription` application properties carry an HTTP status
//! (`status-code` / `status-description` on `$cbs`), correlated by the request's message-id.
//! Failures carry `errorCondition` as Service Bus does (`com.microsoft:message-lock-lost` with
//! 410 for a lost lock).
//!
//! Lock tokens in these bodies are AMQP uuids in RFC 4122 byte order, as Service Bus (.NET)
//! encodes a `Guid`; the delivery tag, by contrast, is the .NET `Guid.ToByteArray()` order.

use fe2o3_amqp_types::messaging::message::__private::Deserializable;
use fe2o3_amqp_types::messaging::{AmqpValue, ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp_types::primitives::{Array, Binary, OrderedMap, SimpleValue, Timestamp, Value};
use uuid::Uuid;

use crate::broker::{self, Broker, LockError, Settlement};
use crate::connection::Node;

const OK: i32 = 200;
const ACCEPTED: i32 = 202;
const NO_CONTENT: i32 = 204;
const BAD_REQUEST: i32 = 400;
const NOT_FOUND: i32 = 404;
const GONE: i32 = 410;
const NOT_IMPLEMENTED: i32 = 501;

/// A reply before encoding.
struct Reply {
    status: i32,
    description: String,
    condition: Option<&'static str>,
    body: Value,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self { status: OK, description: "OK".into(), condition: None, body }
    }

    fn fail(status: i32, condition: &'static str, description: impl Into<String>) -> Self {
        Self { status, description: description.into(), condition: Some(condition), body: Value::Null }
    }

    fn lock(error: &LockError) -> Self {
        match error {
            LockError::LockLost => Self::fail(GONE, "com.microsoft:message-lock-lost", error.to_string()),
            LockError::SessionLockLost => Self::fail(GONE, "com.microsoft:session-lock-lost", error.to_string()),
            LockError::NotFound(_) => Self::fail(NOT_FOUND, "com.microsoft:entity-not-found", error.to_string()),
        }
    }
}

/// Handles one request and returns the encoded reply message.
pub(crate) fn handle(broker: &Broker, node: &Node, request: &Message<Body<Value>>, owner: u64) -> Vec<u8> {
    let operation = request
        .application_properties
        .as_ref()
        .and_then(|p| p.0.get("operation"))
        .and_then(|value| match value {
            SimpleValue::String(text) => Some(text.clone()),
            SimpleValue::Symbol(symbol) => Some(symbol.as_str().to_string()),
            _ => None,
        })
        .unwrap_or_default();
    let body = match &request.body {
        Body::Value(AmqpValue(Value::Map(map))) => map.clone(),
        _ => OrderedMap::new(),
    };
    let (reply, cbs) = match node {
        Node::Cbs => {
            let reply = if operation == "put-token" {
                Reply { status: ACCEPTED, description: "Accepted".into(), condition: None, body: Value::Null }
            } else {
                Reply::fail(BAD_REQUEST, "amqp:not-implemented", format!("unsupported $cbs operation '{operation}'"))
            };
            (reply, true)
        }
        Node::Management(entity) | Node::Entity(entity) => (operate(broker, entity, &operation, &body, owner), false),
    };
    encode_reply(request, reply, cbs)
}

fn encode_reply(request: &Message<Body<Value>>, reply: Reply, cbs: bool) -> Vec<u8> {
    let (code_key, description_key) =
        if cbs { ("status-code", "status-description") } else { ("statusCode", "statusDescription") };
    let mut properties = ApplicationProperties::default();
    properties.0.insert(code_key.into(), SimpleValue::Int(reply.status));
    properties.0.insert(description_key.into(), SimpleValue::String(reply.description));
    if let Some(condition) = reply.condition {
        properties.0.insert("errorCondition".into(), SimpleValue::Symbol(condition.into()));
    }
    let correlation_id = request.properties.as_ref().and_then(|p| p.message_id.clone());
    let message = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties { correlation_id, ..Default::default() }),
        application_properties: Some(properties),
        body: Body::Value(AmqpValue(reply.body)),
        footer: None,
    };
    broker::encode_message(&message)
}

fn key_is(key: &Value, name: &str) -> bool {
    match key {
        Value::String(text) => text == name,
        Value::Symbol(symbol) => symbol.as_str() == name,
        Value::Binary(bytes) => bytes.as_slice() == name.as_bytes(),
        _ => false,
    }
}

fn get<'a>(map: &'a OrderedMap<Value, Value>, name: &str) -> Option<&'a Value> {
    map.iter().find(|(key, _)| key_is(key, name)).map(|(_, value)| value)
}

fn string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Symbol(symbol) => Some(symbol.as_str().to_string()),
        Value::Binary(bytes) => String::from_utf8(bytes.to_vec()).ok(),
        _ => None,
    }
}

fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Long(v) => Some(*v),
        Value::Int(v) => Some(i64::from(*v)),
        Value::Uint(v) => Some(i64::from(*v)),
        Value::Ulong(v) => i64::try_from(*v).ok(),
        Value::Short(v) => Some(i64::from(*v)),
        Value::Ushort(v) => Some(i64::from(*v)),
        Value::Byte(v) => Some(i64::from(*v)),
        Value::Ubyte(v) => Some(i64::from(*v)),
        _ => None,
    }
}

fn items(value: Option<&Value>) -> Vec<Value> {
    match value {
        Some(Value::Array(array)) => array.0.clone(),
        Some(Value::List(list)) => list.clone(),
        Some(single) => vec![single.clone()],
        None => Vec::new(),
    }
}

fn lock_tokens(body: &OrderedMap<Value, Value>) -> Vec<Uuid> {
    items(get(body, "lock-tokens"))
        .into_iter()
        .filter_map(|value| match value {
            Value::Uuid(uuid) => Some(Uuid::from_bytes(uuid.into_inner())),
            _ => None,
        })
        .collect()
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut map = OrderedMap::new();
    for (key, value) in entries {
        map.insert(Value::String(key.to_string()), value);
    }
    Value::Map(map)
}

fn decode(bytes: &[u8]) -> Option<Message<Body<Value>>> {
    serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(bytes).ok().map(|message| message.0)
}

fn operate(broker: &Broker, entity: &str, operation: &str, body: &OrderedMap<Value, Value>, owner: u64) -> Reply {
    let session_id = string(get(body, "session-id"));
    match operation {
        "com.microsoft:renew-lock" => match broker.renew_locks(entity, &lock_tokens(body)) {
            Ok(expirations) => Reply::ok(map(vec![(
                "expirations",
                Value::Array(Array(
                    expirations.into_iter().map(|at| Value::Timestamp(Timestamp::from_milliseconds(at))).collect(),
                )),
            )])),
            Err(error) => Reply::lock(&error),
        },
        "com.microsoft:schedule-message" => {
            let mut messages = Vec::new();
            for item in items(get(body, "messages")) {
                let Value::Map(entry) = item else { continue };
                let bytes = match get(&entry, "message") {
                    Some(Value::Binary(bytes)) => bytes.to_vec(),
                    _ => return Reply::fail(BAD_REQUEST, "amqp:invalid-field", "schedule-message without a message"),
                };
                let Some(message) = decode(&bytes) else {
                    return Reply::fail(BAD_REQUEST, "amqp:decode-error", "the scheduled message could not be decoded");
                };
                let at = message
                    .message_annotations
                    .as_ref()
                    .and_then(|a| a.0.iter().find(|(k, _)| matches!(k, fe2o3_amqp_types::messaging::annotations::OwnedKey::Symbol(s) if s.as_str() == broker::annotation::SCHEDULED_ENQUEUE_TIME)))
                    .and_then(|(_, value)| match value {
                        Value::Timestamp(at) => Some(at.milliseconds()),
                        _ => None,
                    })
                    .unwrap_or_else(broker::now_ms);
                messages.push((message, at));
            }
            match broker.schedule(entity, messages) {
                Ok(numbers) => Reply::ok(map(vec![(
                    "sequence-numbers",
                    Value::Array(Array(numbers.into_iter().map(Value::Long).collect())),
                )])),
                Err(refusal) => Reply::fail(BAD_REQUEST, "amqp:not-allowed", refusal.to_string()),
            }
        }
        "com.microsoft:cancel-scheduled-message" => {
            let numbers: Vec<i64> =
                items(get(body, "sequence-numbers")).iter().filter_map(|v| integer(Some(v))).collect();
            match broker.cancel_scheduled(entity, &numbers) {
                Ok(()) => Reply::ok(Value::Null),
                Err(error) => Reply::lock(&error),
            }
        }
        "com.microsoft:peek-message" => {
            let from = integer(get(body, "from-sequence-number")).unwrap_or(1);
            let count = integer(get(body, "message-count")).unwrap_or(1).max(0) as usize;
            match broker.peek(entity, from, count, session_id.as_deref()) {
                Ok(messages) if messages.is_empty() => {
                    Reply { status: NO_CONTENT, description: "No Content".into(), condition: None, body: map(vec![]) }
                }
                Ok(messages) => Reply::ok(map(vec![(
                    "messages",
                    Value::List(
                        messages
                            .into_iter()
                            .map(|bytes| map(vec![("message", Value::Binary(Binary::from(bytes)))]))
                            .collect(),
                    ),
                )])),
                Err(error) => Reply::lock(&error),
            }
        }
        "com.microsoft:renew-session-lock" => {
            let Some(session) = session_id else {
                return Reply::fail(BAD_REQUEST, "amqp:invalid-field", "session-id is required");
            };
            match broker.renew_session(entity, &session) {
                Ok(until) => {
                    Reply::ok(map(vec![("expiration", Value::Timestamp(Timestamp::from_milliseconds(until)))]))
                }
                Err(error) => Reply::lock(&error),
            }
        }
        "com.microsoft:get-session-state" => {
            let Some(session) = session_id else {
                return Reply::fail(BAD_REQUEST, "amqp:invalid-field", "session-id is required");
            };
            match broker.session_state(entity, &session) {
                Ok(state) => Reply::ok(map(vec![(
                    "session-state",
                    state.map(|bytes| Value::Binary(Binary::from(bytes))).unwrap_or(Value::Null),
                )])),
                Err(error) => Reply::lock(&error),
            }
        }
        "com.microsoft:set-session-state" => {
            let Some(session) = session_id else {
                return Reply::fail(BAD_REQUEST, "amqp:invalid-field", "session-id is required");
            };
            let state = match get(body, "session-state") {
                Some(Value::Binary(bytes)) => Some(bytes.to_vec()),
                Some(Value::String(text)) => Some(text.as_bytes().to_vec()),
                _ => None,
            };
            match broker.set_session_state(entity, &session, state) {
                Ok(()) => Reply::ok(Value::Null),
                Err(error) => Reply::lock(&error),
            }
        }
        "com.microsoft:receive-by-sequence-number" => {
            let numbers: Vec<i64> =
                items(get(body, "sequence-numbers")).iter().filter_map(|v| integer(Some(v))).collect();
            // receiver-settle-mode 0 (first) is receive-and-delete, 1 (second) peek-lock.
            let remove = integer(get(body, "receiver-settle-mode")) == Some(0);
            match broker.receive_deferred(entity, &numbers, owner, remove) {
                Ok(delivered) => Reply::ok(map(vec![(
                    "messages",
                    Value::List(
                        delivered
                            .into_iter()
                            .map(|d| {
                                map(vec![
                                    ("lock-token", Value::Uuid((*d.lock_token.as_bytes()).into())),
                                    ("message", Value::Binary(Binary::from(d.payload))),
                                ])
                            })
                            .collect(),
                    ),
                )])),
                Err(error) => Reply::lock(&error),
            }
        }
        "com.microsoft:update-disposition" => {
            let status = string(get(body, "disposition-status")).unwrap_or_default();
            let properties: Vec<(String, SimpleValue)> = match get(body, "properties-to-modify") {
                Some(Value::Map(entries)) => entries
                    .iter()
                    .filter_map(|(k, v)| Some((string(Some(k))?, SimpleValue::try_from(v.clone()).ok()?)))
                    .collect(),
                _ => Vec::new(),
            };
            let settlement = match status.to_ascii_lowercase().as_str() {
                "completed" => Settlement::Complete,
                "abandoned" => Settlement::Abandon(properties),
                "defered" | "deferred" => Settlement::Defer(properties),
                "suspended" => Settlement::DeadLetter {
                    reason: string(get(body, "deadletter-reason")),
                    description: string(get(body, "deadletter-description")),
                    properties,
                },
                other => {
                    return Reply::fail(
                        BAD_REQUEST,
                        "amqp:invalid-field",
                        format!("unknown disposition-status '{other}'"),
                    );
                }
            };
            for token in lock_tokens(body) {
                if let Err(error) = broker.settle(entity, token, settlement.clone()) {
                    return Reply::lock(&error);
                }
            }
            Reply::ok(Value::Null)
        }
        other => Reply::fail(
            NOT_IMPLEMENTED,
            "amqp:not-implemented",
            format!("servicebus-peer does not implement the management operation '{other}'"),
        ),
    }
}
