//! The in-memory queues and their Service Bus semantics, apart from any wire protocol.
//!
//! Everything a Service Bus queue decides lives here: sequence numbers, peek-lock locks and their
//! expiry, delivery counts, `MaxDeliveryCountExceeded`, dead-lettering into the queue's
//! `$deadletterqueue`, deferral, scheduled messages, sessions (one lock holder each, session
//! state) and duplicate detection. The AMQP engine (`connection`) and the management node
//! (`management`) only translate frames into these calls, so both clients, the tests' inspection
//! API and the fault injection see one consistent state behind one mutex.
//!
//! Guarantees: a message leaves a queue only by being completed, received in
//! receive-and-delete mode, dead-lettered (it then appears in the DLQ) or cancelled while
//! scheduled; an expired lock always puts its message back (or into the DLQ) with the delivery
//! count raised.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp_types::messaging::message::__private::Serializable;
use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, DeliveryAnnotations, Header, Message, MessageAnnotations, MessageId,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Timestamp, Value};
use uuid::Uuid;

/// Message annotation keys Service Bus puts on (or reads from) a message.
pub(crate) mod annotation {
    pub const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
    pub const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
    pub const LOCKED_UNTIL: &str = "x-opt-locked-until";
    pub const SCHEDULED_ENQUEUE_TIME: &str = "x-opt-scheduled-enqueue-time";
    pub const LOCK_TOKEN: &str = "x-opt-lock-token";
}

/// Application property names of a dead-lettered message.
pub const DEAD_LETTER_REASON: &str = "DeadLetterReason";
/// Application property names of a dead-lettered message.
pub const DEAD_LETTER_ERROR_DESCRIPTION: &str = "DeadLetterErrorDescription";
/// The reason Service Bus gives a message that reached its queue's MaxDeliveryCount.
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";
/// The sub-queue suffix of a queue's dead-letter queue.
pub const DLQ_SUFFIX: &str = "/$deadletterqueue";

/// How one queue behaves; fixed when the queue is created, as on Service Bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// The queue's name (entity path); matched case-insensitively like Service Bus does.
    pub name: String,
    /// `RequiresSession`: every message needs a SessionId, receivers must lock a session.
    pub requires_session: bool,
    /// Deliveries after which a message moves to the DLQ (`MaxDeliveryCountExceeded`).
    pub max_delivery_count: u32,
    /// Peek-lock duration of a message (and of a session lock).
    pub lock_duration: Duration,
    /// Duplicate detection on MessageId within this window, if set.
    pub duplicate_detection: Option<Duration>,
}

impl QueueConfig {
    /// A queue with Service Bus's defaults: no sessions, MaxDeliveryCount 10, 30 s locks.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            requires_session: false,
            max_delivery_count: 10,
            lock_duration: Duration::from_secs(30),
            duplicate_detection: None,
        }
    }

    /// Sets `RequiresSession`.
    pub fn sessions(mut self, requires_session: bool) -> Self {
        self.requires_session = requires_session;
        self
    }

    /// Sets MaxDeliveryCount.
    pub fn max_delivery_count(mut self, count: u32) -> Self {
        self.max_delivery_count = count;
        self
    }

    /// Sets the lock duration.
    pub fn lock_duration(mut self, duration: Duration) -> Self {
        self.lock_duration = duration;
        self
    }

    /// Turns duplicate detection on with the given window.
    pub fn duplicate_detection(mut self, window: Duration) -> Self {
        self.duplicate_detection = Some(window);
        self
    }
}

/// Where a message stands in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Receivable (or locked by a receiver right now).
    Active,
    /// Deferred: only receivable by sequence number.
    Deferred,
    /// Scheduled: becomes active at this time (milliseconds since the Unix epoch).
    Scheduled(i64),
}

/// A message as the inspection API shows it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Sequence number within its queue (or DLQ).
    pub sequence_number: i64,
    /// The message exactly as it was sent, without the annotations the peer adds on delivery.
    pub message: Message<Body<Value>>,
    /// Prior unsuccessful deliveries (the AMQP header's `delivery-count`).
    pub delivery_count: u32,
    /// Enqueue time, milliseconds since the Unix epoch.
    pub enqueued_at: i64,
    /// Active, deferred or scheduled.
    pub state: MessageState,
    /// Whether a receiver holds its lock right now.
    pub locked: bool,
}

impl StoredMessage {
    /// The body's bytes when the body is one Data section (as both SDKs send it), the AMQP
    /// value's string when it is a string value.
    pub fn body_bytes(&self) -> Option<Vec<u8>> {
        match &self.message.body {
            Body::Data(batch) => Some(batch.iter().flat_map(|data| data.0.iter().copied()).collect()),
            Body::Value(value) => match &value.0 {
                Value::String(text) => Some(text.as_bytes().to_vec()),
                Value::Binary(bytes) => Some(bytes.to_vec()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The message's SessionId (the AMQP `group-id`).
    pub fn session_id(&self) -> Option<&str> {
        self.message.properties.as_ref()?.group_id.as_deref()
    }

    /// The message's MessageId rendered as text.
    pub fn message_id(&self) -> Option<String> {
        self.message.properties.as_ref()?.message_id.as_ref().map(message_id_text)
    }

    /// A string application property.
    pub fn application_property(&self, name: &str) -> Option<&SimpleValue> {
        self.message.application_properties.as_ref()?.0.get(name)
    }
}

/// Why a send was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendRefusal {
    /// No such queue.
    #[error("The messaging entity '{0}' could not be found.")]
    NotFound(String),
    /// A message without SessionId sent to a queue that requires sessions.
    #[error(
        "The SessionId was not set on a message, and it cannot be sent to the entity. Entities that have session support enabled can only receive messages that have the SessionId set to a valid value."
    )]
    SessionIdMissing,
    /// Sending straight into a dead-letter queue.
    #[error("Cannot send a message to a dead-letter queue '{0}'.")]
    DeadLetterQueue(String),
}

/// What happened to a message that was accepted for sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored with this sequence number.
    Stored(i64),
    /// Dropped: its MessageId was seen within the duplicate-detection window.
    Duplicate,
}

/// How a receiver settles a locked message.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Accepted: the message is removed.
    Complete,
    /// Modified: back to the queue with its delivery count raised.
    Abandon(Vec<(String, SimpleValue)>),
    /// Modified with undeliverable-here: deferred.
    Defer(Vec<(String, SimpleValue)>),
    /// Rejected: moved to the dead-letter queue.
    DeadLetter {
        /// `DeadLetterReason`.
        reason: Option<String>,
        /// `DeadLetterErrorDescription`.
        description: Option<String>,
        /// Further application properties to set.
        properties: Vec<(String, SimpleValue)>,
    },
    /// Released: back to the queue without counting a delivery.
    Release,
}

/// Why a lock-based operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The lock expired, was never held, or the message is gone.
    #[error(
        "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue."
    )]
    LockLost,
    /// The session lock expired or is held by another receiver.
    #[error("The session lock has expired on the MessageSession. Accept a new MessageSession.")]
    SessionLockLost,
    /// No such queue.
    #[error("The messaging entity '{0}' could not be found.")]
    NotFound(String),
}

/// Why a session could not be locked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Another receiver holds that session.
    #[error("The requested session '{0}' cannot be accepted. It may be locked by another receiver.")]
    Locked(String),
    /// No session with available messages right now.
    #[error("No unlocked sessions with messages are available.")]
    NoneAvailable,
    /// No such queue, or not a session queue.
    #[error("{0}")]
    NotAllowed(String),
}

/// A message locked (or removed) for delivery, encoded with the annotations Service Bus adds.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    pub lock_token: Uuid,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Lock {
    token: Uuid,
    until: i64,
    owner: u64,
}

#[derive(Debug)]
struct Entry {
    sequence_number: i64,
    message: Message<Body<Value>>,
    delivery_count: u32,
    enqueued_at: i64,
    state: MessageState,
    lock: Option<Lock>,
}

impl Entry {
    fn session_id(&self) -> Option<&str> {
        self.message.properties.as_ref()?.group_id.as_deref()
    }

    fn snapshot(&self) -> StoredMessage {
        StoredMessage {
            sequence_number: self.sequence_number,
            message: self.message.clone(),
            delivery_count: self.delivery_count,
            enqueued_at: self.enqueued_at,
            state: self.state,
            locked: self.lock.is_some(),
        }
    }
}

#[derive(Debug, Default)]
struct SessionEntry {
    state: Option<Vec<u8>>,
    lock: Option<(u64, i64)>,
}

#[derive(Debug)]
struct Queue {
    config: QueueConfig,
    /// The queue's DLQ; `None` for a DLQ itself.
    is_dlq: bool,
    messages: BTreeMap<i64, Entry>,
    next_sequence_number: i64,
    sessions: HashMap<String, SessionEntry>,
    seen_message_ids: HashMap<String, i64>,
}

impl Queue {
    fn new(config: QueueConfig, is_dlq: bool) -> Self {
        Self {
            config,
            is_dlq,
            messages: BTreeMap::new(),
            next_sequence_number: 1,
            sessions: HashMap::new(),
            seen_message_ids: HashMap::new(),
        }
    }

    fn sessionful(&self) -> bool {
        self.config.requires_session && !self.is_dlq
    }

    fn push(
        &mut self,
        message: Message<Body<Value>>,
        delivery_count: u32,
        state: MessageState,
        enqueued_at: i64,
    ) -> i64 {
        let sequence_number = self.next_sequence_number;
        self.next_sequence_number += 1;
        self.messages.insert(
            sequence_number,
            Entry { sequence_number, message, delivery_count, enqueued_at, state, lock: None },
        );
        sequence_number
    }

    fn find_locked(&self, token: Uuid) -> Option<i64> {
        self.messages
            .values()
            .find(|entry| entry.lock.as_ref().is_some_and(|lock| lock.token == token))
            .map(|entry| entry.sequence_number)
    }
}

/// The broker: every queue and its DLQ behind one mutex, plus a change counter that wakes the
/// connections when something became deliverable.
#[derive(Debug)]
pub(crate) struct Broker {
    queues: Mutex<HashMap<String, Queue>>,
    changes: tokio::sync::watch::Sender<u64>,
    lock_token_annotation: bool,
}

/// Milliseconds since the Unix epoch, the unit of every time the broker keeps.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or_default()
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn message_id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(text) => text.clone(),
        MessageId::Ulong(number) => number.to_string(),
        MessageId::Uuid(uuid) => Uuid::from_bytes(*uuid.as_inner()).to_string(),
        MessageId::Binary(bytes) => bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn set_properties(message: &mut Message<Body<Value>>, properties: Vec<(String, SimpleValue)>) {
    if properties.is_empty() {
        return;
    }
    let map = &mut message.application_properties.get_or_insert_with(ApplicationProperties::default).0;
    for (name, value) in properties {
        map.insert(name, value);
    }
}

fn scheduled_time(message: &Message<Body<Value>>) -> Option<i64> {
    let value = message
        .message_annotations
        .as_ref()?
        .0
        .iter()
        .find(|(key, _)| annotation_key_is(key, annotation::SCHEDULED_ENQUEUE_TIME))
        .map(|(_, value)| value)?;
    match value {
        Value::Timestamp(timestamp) => Some(timestamp.milliseconds()),
        _ => None,
    }
}

fn annotation_key_is(key: &fe2o3_amqp_types::messaging::annotations::OwnedKey, name: &str) -> bool {
    matches!(key, fe2o3_amqp_types::messaging::annotations::OwnedKey::Symbol(symbol) if symbol.as_str() == name)
}

/// What the connection layer needs to deliver one message: a stable encoding with Service Bus's
/// annotations, its lock token and (in peek-lock) its lock expiry.
fn encode_for_delivery(entry: &Entry, locked_until: Option<i64>, lock_token: Option<Uuid>) -> Vec<u8> {
    let mut message = entry.message.clone();
    let mut header = message.header.take().unwrap_or_default();
    header.delivery_count = entry.delivery_count;
    let annotations = &mut message.message_annotations.get_or_insert_with(MessageAnnotations::default).0;
    annotations.insert(annotation::SEQUENCE_NUMBER.into(), Value::Long(entry.sequence_number));
    annotations
        .insert(annotation::ENQUEUED_TIME.into(), Value::Timestamp(Timestamp::from_milliseconds(entry.enqueued_at)));
    if let Some(until) = locked_until {
        annotations.insert(annotation::LOCKED_UNTIL.into(), Value::Timestamp(Timestamp::from_milliseconds(until)));
    }
    if let Some(token) = lock_token {
        message
            .delivery_annotations
            .get_or_insert_with(DeliveryAnnotations::default)
            .0
            .insert(annotation::LOCK_TOKEN.into(), Value::Uuid((*token.as_bytes()).into()));
    }
    let mut payload = encode_header(&header);
    payload.extend(encode_message(&message));
    payload
}

/// The header section with every field written out. serde_amqp leaves trailing default fields
/// off a list, so a `delivery-count` of 0 would vanish, and Microsoft's Python SDK then reports
/// the delivery count as `None`; Service Bus always sends it.
fn encode_header(header: &Header) -> Vec<u8> {
    let section = serde_amqp::described::Described {
        descriptor: serde_amqp::descriptor::Descriptor::Code(0x70),
        value: Value::List(vec![
            Value::Bool(header.durable),
            Value::Ubyte(header.priority.0),
            header.ttl.map_or(Value::Null, Value::Uint),
            Value::Bool(header.first_acquirer),
            Value::Uint(header.delivery_count),
        ]),
    };
    // Encoding plain values cannot fail.
    serde_amqp::to_vec(&section).unwrap_or_default()
}

/// Encodes a message (its sections in order). Encoding a message that was decoded from the wire
/// cannot fail; an empty payload would only make the client report a decode error.
pub(crate) fn encode_message(message: &Message<Body<Value>>) -> Vec<u8> {
    serde_amqp::to_vec(&Serializable(message.clone())).unwrap_or_default()
}

impl Broker {
    pub(crate) fn new(queues: &[QueueConfig], lock_token_annotation: bool) -> Self {
        let mut map = HashMap::new();
        for config in queues {
            let dlq = QueueConfig {
                name: format!("{}{DLQ_SUFFIX}", config.name),
                requires_session: false,
                max_delivery_count: u32::MAX,
                lock_duration: config.lock_duration,
                duplicate_detection: None,
            };
            map.insert(key(&dlq.name), Queue::new(dlq, true));
            map.insert(key(&config.name), Queue::new(config.clone(), false));
        }
        let (changes, _) = tokio::sync::watch::channel(0);
        Self { queues: Mutex::new(map), changes, lock_token_annotation }
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|version| *version = version.wrapping_add(1));
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Queue>) -> T) -> T {
        let mut queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut queues)
    }

    /// Whether an entity (queue or DLQ) exists.
    pub(crate) fn exists(&self, entity: &str) -> bool {
        self.with(|queues| queues.contains_key(&key(entity)))
    }

    /// Whether receivers of this entity must lock a session.
    pub(crate) fn requires_session(&self, entity: &str) -> bool {
        self.with(|queues| queues.get(&key(entity)).is_some_and(Queue::sessionful))
    }

    /// Accepts a message from a sender (or the inspection API).
    pub(crate) fn enqueue(&self, entity: &str, message: Message<Body<Value>>) -> Result<Enqueued, SendRefusal> {
        let mut outcomes = self.enqueue_batch(entity, vec![message])?;
        Ok(outcomes.pop().unwrap_or(Enqueued::Duplicate))
    }

    /// Accepts a batch (one transfer of format 0x80013700) all or nothing, as Service Bus does.
    pub(crate) fn enqueue_batch(
        &self,
        entity: &str,
        messages: Vec<Message<Body<Value>>>,
    ) -> Result<Vec<Enqueued>, SendRefusal> {
        let now = now_ms();
        let result = self.with(|queues| {
            let queue = queues.get_mut(&key(entity)).ok_or_else(|| SendRefusal::NotFound(entity.to_string()))?;
            if queue.is_dlq {
                return Err(SendRefusal::DeadLetterQueue(entity.to_string()));
            }
            for message in &messages {
                let session_id = message.properties.as_ref().and_then(|p| p.group_id.as_ref());
                if queue.config.requires_session && session_id.is_none_or(|id| id.is_empty()) {
                    return Err(SendRefusal::SessionIdMissing);
                }
            }
            let mut outcomes = Vec::with_capacity(messages.len());
            for message in messages {
                if let Some(window) = queue.config.duplicate_detection {
                    let window = millis(window);
                    queue.seen_message_ids.retain(|_, seen| now - *seen < window);
                    let id = message.properties.as_ref().and_then(|p| p.message_id.as_ref()).map(message_id_text);
                    if let Some(id) = id {
                        if queue.seen_message_ids.contains_key(&id) {
                            outcomes.push(Enqueued::Duplicate);
                            continue;
                        }
                        queue.seen_message_ids.insert(id, now);
                    }
                }
                let state = match scheduled_time(&message) {
                    Some(at) if at > now => MessageState::Scheduled(at),
                    _ => MessageState::Active,
                };
                outcomes.push(Enqueued::Stored(queue.push(message, 0, state, now)));
            }
            Ok(outcomes)
        });
        if result.as_ref().is_ok_and(|outcomes| outcomes.iter().any(|o| matches!(o, Enqueued::Stored(_)))) {
            self.changed();
        }
        result
    }

    /// `com.microsoft:schedule-message`: stores messages that become active at `at`.
    pub(crate) fn schedule(
        &self,
        entity: &str,
        messages: Vec<(Message<Body<Value>>, i64)>,
    ) -> Result<Vec<i64>, SendRefusal> {
        let now = now_ms();
        let result = self.with(|queues| {
            let queue = queues.get_mut(&key(entity)).ok_or_else(|| SendRefusal::NotFound(entity.to_string()))?;
            if queue.is_dlq {
                return Err(SendRefusal::DeadLetterQueue(entity.to_string()));
            }
            let mut numbers = Vec::with_capacity(messages.len());
            for (message, at) in messages {
                if queue.config.requires_session
                    && message.properties.as_ref().and_then(|p| p.group_id.as_ref()).is_none()
                {
                    return Err(SendRefusal::SessionIdMissing);
                }
                let state = if at > now { MessageState::Scheduled(at) } else { MessageState::Active };
                numbers.push(queue.push(message, 0, state, now));
            }
            Ok(numbers)
        });
        self.changed();
        result
    }

    /// `com.microsoft:cancel-scheduled-message`: removes messages that are still scheduled.
    pub(crate) fn cancel_scheduled(&self, entity: &str, sequence_numbers: &[i64]) -> Result<(), LockError> {
        self.with(|queues| {
            let queue = queues.get_mut(&key(entity)).ok_or_else(|| LockError::NotFound(entity.to_string()))?;
            for number in sequence_numbers {
                if matches!(queue.messages.get(number).map(|e| e.state), Some(MessageState::Scheduled(_))) {
                    queue.messages.remove(number);
                }
            }
            Ok(())
        })
    }

    /// Locks (peek-lock) or removes (receive-and-delete) the next deliverable message.
    /// `session` restricts to that session's messages; the caller must hold its lock.
    pub(crate) fn next_delivery(
        &self,
        entity: &str,
        owner: u64,
        session: Option<&str>,
        remove: bool,
    ) -> Option<Delivered> {
        let now = now_ms();
        let annotate = self.lock_token_annotation;

        self.with(|queues| {
            let queue = queues.get_mut(&key(entity))?;
            // In a session, a message's lock is the session's lock (as on Service Bus, where a
            // session receiver renews the session lock, not message locks).
            let mut session_until = None;
            if let Some(id) = session {
                let held = queue
                    .sessions
                    .get(id)
                    .and_then(|s| s.lock)
                    .filter(|(holder, until)| *holder == owner && *until > now);
                let (_, until) = held?;
                session_until = Some(until);
            }
            let lock_duration = millis(queue.config.lock_duration);
            let sessionful = queue.sessionful();
            let entry = queue.messages.values_mut().find(|entry| {
                entry.state == MessageState::Active
                    && entry.lock.is_none()
                    && (!sessionful || entry.session_id() == session)
            })?;
            let token = Uuid::new_v4();
            if remove {
                let payload = encode_for_delivery(entry, None, None);
                let number = entry.sequence_number;
                queue.messages.remove(&number);
                return Some(Delivered { lock_token: token, payload });
            }
            let until = session_until.unwrap_or(now + lock_duration);
            entry.lock = Some(Lock { token, until, owner });
            let payload = encode_for_delivery(entry, Some(until), annotate.then_some(token));
            Some(Delivered { lock_token: token, payload })
        })
    }

    /// Settles a locked message. `owner` is checked when given (link settlement); the management
    /// node's update-disposition passes `None`.
    pub(crate) fn settle(&self, entity: &str, token: Uuid, settlement: Settlement) -> Result<(), LockError> {
        let now = now_ms();
        let result = self.with(|queues| {
            let queue_key = key(entity);
            let queue = queues.get_mut(&queue_key).ok_or_else(|| LockError::NotFound(entity.to_string()))?;
            let number = queue.find_locked(token).ok_or(LockError::LockLost)?;
            let expired = queue.messages[&number].lock.as_ref().is_some_and(|lock| lock.until <= now);
            if expired {
                release_expired(queues, &queue_key, number, now);
                return Err(LockError::LockLost);
            }
            apply_settlement(queues, &queue_key, number, settlement, now);
            Ok(())
        });
        self.changed();
        result
    }

    /// `com.microsoft:renew-lock`: new expiry per token, or lock lost if any is gone.
    pub(crate) fn renew_locks(&self, entity: &str, tokens: &[Uuid]) -> Result<Vec<i64>, LockError> {
        let now = now_ms();
        self.with(|queues| {
            let queue = queues.get_mut(&key(entity)).ok_or_else(|| LockError::NotFound(entity.to_string()))?;
            let duration = millis(queue.config.lock_duration);
            let mut expirations = Vec::with_capacity(tokens.len());
            for token in tokens {
                let number = queue.find_locked(*token).ok_or(LockError::LockLost)?;
                let lock =
                    queue.messages.get_mut(&number).and_then(|entry| entry.lock.as_mut()).ok_or(LockError::LockLost)?;
                if lock.until <= now {
                    return Err(LockError::LockLost);
                }
                lock.until = now + duration;
                expirations.push(lock.until);
            }
            Ok(expirations)
        })
    }

    /// Locks a session for `owner`: the given one, or the first unlocked session with an active
    /// message. Returns the session id and its lock expiry.
    pub(crate) fn lock_session(
        &self,
        entity: &str,
        session: Option<&str>,
        owner: u64,
    ) -> Result<(String, i64), SessionError> {
        let now = now_ms();
        self.with(|queues| {
            let queue = queues
                .get_mut(&key(entity))
                .ok_or_else(|| SessionError::NotAllowed(format!("The messaging entity '{entity}' could not be found.")))?;
            if !queue.sessionful() {
                return Err(SessionError::NotAllowed(format!(
                    "It is not possible for an entity that does not require sessions ('{entity}') to create a sessionful message receiver."
                )));
            }
            let duration = millis(queue.config.lock_duration);
            let id = match session {
                Some(id) => id.to_string(),
                None => {
                    let free = |id: &str| {
                        queue
                            .sessions
                            .get(id)
                            .and_then(|s| s.lock)
                            .is_none_or(|(_, until)| until <= now)
                    };
                    queue
                        .messages
                        .values()
                        .filter(|e| e.state == MessageState::Active && e.lock.is_none())
                        .filter_map(Entry::session_id)
                        .find(|id| free(id))
                        .map(str::to_string)
                        .ok_or(SessionError::NoneAvailable)?
                }
            };
            let entry = queue.sessions.entry(id.clone()).or_default();
            if let Some((holder, until)) = entry.lock
                && holder != owner && until > now {
                    return Err(SessionError::Locked(id));
                }
            let until = now + duration;
            entry.lock = Some((owner, until));
            Ok((id, until))
        })
    }

    /// Releases the session locks `owner` holds (its link detached or its connection dropped).
    /// The messages it had locked in those sessions go back, as their locks die with the session.
    pub(crate) fn release_owner(&self, owner: u64) {
        let now = now_ms();
        self.with(|queues| {
            let names: Vec<String> = queues.keys().cloned().collect();
            for name in names {
                let Some(queue) = queues.get_mut(&name) else { continue };
                let mut released = false;
                for session in queue.sessions.values_mut() {
                    if session.lock.is_some_and(|(holder, _)| holder == owner) {
                        session.lock = None;
                        released = true;
                    }
                }
                if released {
                    let numbers: Vec<i64> = queue
                        .messages
                        .values()
                        .filter(|e| e.lock.as_ref().is_some_and(|l| l.owner == owner))
                        .map(|e| e.sequence_number)
                        .collect();
                    for number in numbers {
                        release_expired(queues, &name, number, now);
                    }
                }
            }
        });
        self.changed();
    }

    /// `com.microsoft:renew-session-lock`.
    pub(crate) fn renew_session(&self, entity: &str, session: &str) -> Result<i64, LockError> {
        let now = now_ms();
        self.with(|queues| {
            let queue = queues.get_mut(&key(entity)).ok_or_else(|| LockError::NotFound(entity.to_string()))?;
            let duration = millis(queue.config.lock_duration);
            let entry = queue.sessions.get_mut(session).ok_or(LockError::SessionLockLost)?;
            match entry.lock {
                Some((owner, until)) if until > now => {
                    let until = now + duration;
                    entry.lock = Some((owner, until));
                    // The locks of the session's messages are the session lock: renewed with it.
                    for message in queue.messages.values_mut() {
                        if message.session_id() == Some(session)
                            && let Some(lock) = message.lock.as_mut().filter(|lock| lock.owner == owner)
                        {
                            lock.until = until;
                        }
                    }
                    Ok(until)
                }
                _ => Err(LockError::SessionLockLost),
            }
        })
    }

    /// Whether `owner` still holds `session` (for receivers whose session lock may have expired).
    pub(crate) fn holds_session(&self, entity: &str, session: &str, owner: u64) -> bool {
        let now = now_ms();
        self.with(|queues| {
            queues
                .get(&key(entity))
                .and_then(|q| q.sessions.get(session))
                .and_then(|s| s.lock)
                .is_some_and(|(holder, until)| holder == owner && until > now)
        })
    }

    /// `com.microsoft:get-session-state`.
    pub(crate) fn session_state(&self, entity: &str, session: &str) -> Result<Option<Vec<u8>>, LockError> {
        self.with(|queues| {
            let queue = queues.get(&key(entity)).ok_or_else(|| LockError::NotFound(entity.to_string()))?;
            Ok(queue.sessions.get(session).and_then(|s| s.state.clone()))
        })
    }

    /// `com.microsoft:set-session-state`.
    pub(crate) fn set_session_state(
        &self,
        entity: &str,
        session: &str,
        state: Option<Vec<u8>>,
    ) -> Result<(), LockError> {
        self.with(|queues| {
            let queue = queues.get_mut(&key(entity)).ok_or_else(|| LockError::NotFound(entity.to_string()))?;
            queue.sessions.entry(session.to_string()).or_default().state = state;
            Ok(())
        })
    }

    /// `com.microsoft:peek-message`: encoded messages from a sequence number on, locks untouched.
    pub(crate) fn peek(
        &self,
        entity: &str,
        from: i64,
        count: usize,
        session: Option<&str>,
    ) -> Result<Vec<Vec<u8>>, LockError> {
        self.with(|queues| {
            let queue = queues.get(&key(entity)).ok_or_else(|| LockError::NotFound(entity.to_string()))?;
            Ok(queue
                .messages
                .range(from..)
                .map(|(_, entry)| entry)
                .filter(|entry| session.is_none() || entry.session_id() == session)
                .take(count)
                .map(|entry| encode_for_delivery(entry, entry.lock.as_ref().map(|l| l.until), None))
                .collect())
        })
    }

    /// `com.microsoft:receive-by-sequence-number`: locks deferred messages.
    pub(crate) fn receive_deferred(
        &self,
        entity: &str,
        numbers: &[i64],
        owner: u64,
        remove: bool,
    ) -> Result<Vec<Delivered>, LockError> {
        let now = now_ms();
        self.with(|queues| {
            let queue = queues.get_mut(&key(entity)).ok_or_else(|| LockError::NotFound(entity.to_string()))?;
            let duration = millis(queue.config.lock_duration);
            let mut delivered = Vec::new();
            for number in numbers {
                let Some(entry) = queue.messages.get_mut(number) else {
                    return Err(LockError::LockLost);
                };
                if entry.state != MessageState::Deferred || entry.lock.is_some() {
                    return Err(LockError::LockLost);
                }
                let token = Uuid::new_v4();
                if remove {
                    delivered.push(Delivered { lock_token: token, payload: encode_for_delivery(entry, None, None) });
                    queue.messages.remove(number);
                    continue;
                }
                let until = now + duration;
                entry.lock = Some(Lock { token, until, owner });
                delivered.push(Delivered { lock_token: token, payload: encode_for_delivery(entry, Some(until), None) });
            }
            Ok(delivered)
        })
    }

    /// Expires locks and session locks whose time has passed and activates scheduled messages.
    /// Returns whether anything changed.
    pub(crate) fn sweep(&self) -> bool {
        let now = now_ms();
        let changed = self.with(|queues| {
            let mut changed = false;
            let names: Vec<String> = queues.keys().cloned().collect();
            for name in names {
                let Some(queue) = queues.get_mut(&name) else { continue };
                for session in queue.sessions.values_mut() {
                    if session.lock.is_some_and(|(_, until)| until <= now) {
                        session.lock = None;
                        changed = true;
                    }
                }
                let mut expired = Vec::new();
                for entry in queue.messages.values_mut() {
                    if let MessageState::Scheduled(at) = entry.state
                        && at <= now
                    {
                        entry.state = MessageState::Active;
                        entry.enqueued_at = now;
                        changed = true;
                    }
                    if entry.lock.as_ref().is_some_and(|lock| lock.until <= now) {
                        expired.push(entry.sequence_number);
                    }
                }
                for number in expired {
                    release_expired(queues, &name, number, now);
                    changed = true;
                }
            }
            changed
        });
        if changed {
            self.changed();
        }
        changed
    }

    /// Fault injection: every lock of the queue (and its sessions) expires now.
    pub(crate) fn expire_locks(&self, entity: &str) {
        let now = now_ms();
        self.with(|queues| {
            if let Some(queue) = queues.get_mut(&key(entity)) {
                for entry in queue.messages.values_mut() {
                    if let Some(lock) = entry.lock.as_mut() {
                        lock.until = now - 1;
                    }
                }
                for session in queue.sessions.values_mut() {
                    if let Some((_, until)) = session.lock.as_mut() {
                        *until = now - 1;
                    }
                }
            }
        });
        self.sweep();
    }

    /// Inspection: the messages of an entity in sequence order.
    pub(crate) fn snapshot(&self, entity: &str) -> Option<Vec<StoredMessage>> {
        self.with(|queues| queues.get(&key(entity)).map(|queue| queue.messages.values().map(Entry::snapshot).collect()))
    }
}

/// A lock expired (or died with its session): the delivery counts, and the message goes back or,
/// at MaxDeliveryCount, to the DLQ.
fn release_expired(queues: &mut HashMap<String, Queue>, queue_key: &str, number: i64, now: i64) {
    apply_settlement(queues, queue_key, number, Settlement::Abandon(Vec::new()), now);
}

fn apply_settlement(
    queues: &mut HashMap<String, Queue>,
    queue_key: &str,
    number: i64,
    settlement: Settlement,
    now: i64,
) {
    let Some(queue) = queues.get_mut(queue_key) else { return };
    let max_delivery_count = queue.config.max_delivery_count;
    let is_dlq = queue.is_dlq;
    let queue_name = queue.config.name.clone();
    let Some(entry) = queue.messages.get_mut(&number) else { return };
    entry.lock = None;
    let dead_letter = match settlement {
        Settlement::Complete => {
            queue.messages.remove(&number);
            return;
        }
        Settlement::Release => return,
        Settlement::Defer(properties) => {
            set_properties(&mut entry.message, properties);
            entry.state = MessageState::Deferred;
            return;
        }
        Settlement::Abandon(properties) => {
            set_properties(&mut entry.message, properties);
            entry.delivery_count = entry.delivery_count.saturating_add(1);
            if is_dlq || entry.delivery_count < max_delivery_count {
                return;
            }
            (
                Some(MAX_DELIVERY_COUNT_EXCEEDED.to_string()),
                Some(format!("Message could not be consumed after {max_delivery_count} delivery attempts.")),
                Vec::new(),
            )
        }
        Settlement::DeadLetter { reason, description, properties } => {
            if is_dlq {
                // A DLQ has no DLQ of its own; Service Bus keeps the message there.
                set_properties(&mut entry.message, properties);
                return;
            }
            (reason, description, properties)
        }
    };
    let Some(mut entry) = queue.messages.remove(&number) else { return };
    let (reason, description, properties) = dead_letter;
    let mut extra = properties;
    if let Some(reason) = reason {
        extra.push((DEAD_LETTER_REASON.to_string(), SimpleValue::String(reason)));
    }
    if let Some(description) = description {
        extra.push((DEAD_LETTER_ERROR_DESCRIPTION.to_string(), SimpleValue::String(description)));
    }
    set_properties(&mut entry.message, extra);
    let dlq_key = key(&format!("{queue_name}{DLQ_SUFFIX}"));
    if let Some(dlq) = queues.get_mut(&dlq_key) {
        let enqueued_at = entry.enqueued_at.min(now);
        dlq.push(entry.message, entry.delivery_count, MessageState::Active, enqueued_at);
    }
}
