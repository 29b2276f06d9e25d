//! One client connection: the AMQP 1.0 listener side, written against fe2o3-amqp's framing.
//!
//! Why not fe2o3-amqp's `acceptor` sessions and links: its `Sender` (in 0.14.1, and still in
//! 0.18.4) numbers delivery tags itself with a 4-byte counter, while Service Bus's delivery tag
//! *is* the 16-byte lock token and Microsoft's Python SDK reads it as
//! `uuid.UUID(bytes_le=tag)` (a 4-byte tag raises there). So this module keeps fe2o3-amqp's
//! transport (frame codec, performative and message types) and runs its own connection, session
//! and link state, which also lets the peer detach links with Service Bus's errors and drop
//! connections on demand.
//!
//! The engine is synchronous per frame: `Conn::on_frame` turns one incoming frame into broker
//! calls and queued outgoing frames, `Conn::pump` sends whatever the broker can deliver within the
//! link credit and session window. `serve` owns the socket and drives both.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fe2o3_amqp::frames::amqp::{Frame, FrameBody};
use fe2o3_amqp::frames::sasl;
use fe2o3_amqp::transport::Transport;
use fe2o3_amqp_types::definitions::{
    AmqpError, Error as AmqpErrorValue, ErrorCondition, Fields, Handle, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp_types::messaging::message::__private::Deserializable;
use fe2o3_amqp_types::messaging::{
    Accepted, Body, DeliveryState, Message, Modified, Rejected, Released, Source, Target, TargetArchetype,
};
use fe2o3_amqp_types::performatives::{
    Attach, Begin, ChannelMax, Close, Detach, Disposition, End, Flow, MaxFrameSize, Open, Transfer,
};
use fe2o3_amqp_types::primitives::{Array, Binary, SimpleValue, Symbol, Value};
use fe2o3_amqp_types::sasl::{SaslCode, SaslMechanisms, SaslOutcome};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio_util::codec::{Decoder, Encoder};
use uuid::Uuid;

use crate::broker::{Broker, LockError, SessionError, Settlement};
use crate::management;

const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// Service Bus announces 256 KiB frames; the peer reads up to 1 MiB.
const MAX_FRAME_SIZE: u32 = 262_144;
const READ_MAX_FRAME_SIZE: usize = 1_048_576;
/// Session window and link credit the peer grants to clients that send.
const WINDOW: u32 = 5_000;
const CREDIT: u32 = 1_000;
/// Room left for the transfer performative when a message is split over frames.
const TRANSFER_OVERHEAD: usize = 512;
/// How long a session receiver attach for "next available session" waits without a
/// `com.microsoft:timeout` property (Service Bus's default operation timeout).
const DEFAULT_SESSION_WAIT: Duration = Duration::from_secs(60);

pub(crate) const SESSION_FILTER: &str = "com.microsoft:session-filter";
const LOCKED_UNTIL_UTC: &str = "com.microsoft:locked-until-utc";
const OPERATION_TIMEOUT: &str = "com.microsoft:timeout";
/// .NET ticks (100 ns since 0001-01-01) at the Unix epoch; Service Bus sends the session lock
/// expiry in the attach properties in ticks.
const TICKS_AT_UNIX_EPOCH: i64 = 621_355_968_000_000_000;

/// Fault injection sent to every connection.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    /// Close every socket at once, without an AMQP close.
    DropAll,
    /// Detach every link of this queue (and its DLQ and management node) with this error.
    DetachQueue { entity: String, condition: String, description: String },
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub broker: Broker,
    pub control: broadcast::Sender<Control>,
    pub next_owner: AtomicU64,
}

/// Why a connection ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Socket error.
    #[error("socket error")]
    Io(#[from] std::io::Error),
    /// Framing or decoding error.
    #[error("AMQP transport error")]
    Transport(#[from] fe2o3_amqp::transport::Error),
    /// SASL frame error.
    #[error("SASL frame error")]
    Sasl(#[from] fe2o3_amqp::frames::Error),
    /// The client broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// The addressable nodes of a Service Bus namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// `$cbs`, the claims-based-security node that takes SAS tokens.
    Cbs,
    /// `<entity>/$management`.
    Management(String),
    /// A queue or `<queue>/$deadletterqueue`.
    Entity(String),
}

impl Node {
    fn parse(address: &str) -> Self {
        let path = entity_path(address);
        if path.eq_ignore_ascii_case("$cbs") {
            return Node::Cbs;
        }
        let lower = path.to_ascii_lowercase();
        if let Some(prefix) = lower.strip_suffix("/$management") {
            return Node::Management(path[..prefix.len()].to_string());
        }
        Node::Entity(path)
    }

    fn entity(&self) -> Option<&str> {
        match self {
            Node::Cbs => None,
            Node::Management(entity) | Node::Entity(entity) => Some(entity),
        }
    }
}

/// `sb://host/queue`, `amqps://host/queue` or `queue` -> `queue`.
fn entity_path(address: &str) -> String {
    let rest = match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, path)| path).unwrap_or(""),
        None => address,
    };
    rest.trim_matches('/').to_string()
}

/// An AMQP error with Service Bus's condition. The info map is always present (empty): a list
/// that ends early makes Microsoft's Python SDK fail with an IndexError when it reads a
/// rejected outcome.
fn error(condition: &str, description: impl Into<String>) -> AmqpErrorValue {
    AmqpErrorValue::new(
        ErrorCondition::Custom(Symbol::from(condition)),
        Some(description.into()),
        Some(Fields::default()),
    )
}

/// The message format of a Service Bus batch: each Data section is one encoded message.
const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

fn decode_message(bytes: &[u8]) -> Result<Message<Body<Value>>, String> {
    serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(bytes)
        .map(|message| message.0)
        .map_err(|problem| format!("the message could not be decoded: {problem}"))
}

fn unbatch(batch: &Message<Body<Value>>) -> Result<Vec<Message<Body<Value>>>, String> {
    match &batch.body {
        Body::Data(sections) => sections.iter().map(|data| decode_message(&data.0)).collect(),
        _ => Err("a batched message must carry its messages as Data sections".into()),
    }
}

#[derive(Debug)]
enum LinkKind {
    /// The client sends to this node (queue messages or management/CBS requests).
    Incoming(Node),
    /// The peer delivers queue messages.
    Deliver { entity: String, remove: bool, session: Option<String> },
    /// The peer sends management or CBS replies.
    Replies,
}

#[derive(Debug)]
struct Link {
    local_handle: u32,
    owner: u64,
    kind: LinkKind,
    /// For replies: the client's node address the replies are for.
    target_address: Option<String>,
    credit: u32,
    delivery_count: u32,
    drain: bool,
    pre_settled: bool,
    partial: Option<(Transfer, BytesMut)>,
    replies: VecDeque<Vec<u8>>,
    /// The peer has sent a detach and waits for the client's.
    detaching: bool,
}

impl Link {
    /// A link just attached: no partial transfer, no replies waiting, not detaching.
    fn attached(local_handle: u32, owner: u64, kind: LinkKind, pre_settled: bool) -> Self {
        Link {
            local_handle,
            owner,
            kind,
            target_address: None,
            credit: 0,
            delivery_count: 0,
            drain: false,
            pre_settled,
            partial: None,
            replies: VecDeque::new(),
            detaching: false,
        }
    }

    fn entity(&self) -> Option<&str> {
        match &self.kind {
            LinkKind::Incoming(node) => node.entity(),
            LinkKind::Deliver { entity, .. } => Some(entity),
            LinkKind::Replies => None,
        }
    }
}

#[derive(Debug)]
struct OutDelivery {
    link: u32,
    entity: String,
    token: Uuid,
}

#[derive(Debug)]
struct PendingAttach {
    attach: Attach,
    entity: String,
    owner: u64,
    deadline: Instant,
}

#[derive(Debug)]
struct Counters {
    local_channel: u16,
    next_outgoing_id: u32,
    next_delivery_id: u32,
    remote_incoming_window: u32,
    next_incoming_id: u32,
    incoming_window: u32,
    next_local_handle: u32,
    next_reply_tag: u64,
}

#[derive(Debug)]
struct Session {
    counters: Counters,
    links: HashMap<u32, Link>,
    unsettled: HashMap<u32, OutDelivery>,
    pending: Vec<(u32, PendingAttach)>,
}

struct Conn {
    shared: Arc<Shared>,
    /// Sessions by the client's channel.
    sessions: HashMap<u16, Session>,
    next_local_channel: u16,
    out: Vec<Frame>,
    max_frame_size: usize,
    new_encoder_max: Option<usize>,
    heartbeat: Option<Duration>,
    last_sent: Instant,
    closed: bool,
}

/// Serves one accepted socket until the client closes it, the peer drops it, or it fails.
pub(crate) async fn serve<Io>(mut stream: Io, shared: Arc<Shared>) -> Result<(), ConnectionError>
where
    Io: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send + 'static,
{
    let mut control = shared.control.subscribe();
    let mut changes = shared.broker.subscribe();
    handshake(&mut stream).await?;
    let mut transport = Transport::<_, fe2o3_amqp::frames::amqp::Frame>::bind(stream, READ_MAX_FRAME_SIZE, None);
    transport.set_encoder_max_frame_size(MAX_FRAME_SIZE as usize);
    let mut conn = Conn {
        shared,
        sessions: HashMap::new(),
        next_local_channel: 0,
        out: Vec::new(),
        max_frame_size: MAX_FRAME_SIZE as usize,
        new_encoder_max: None,
        heartbeat: None,
        last_sent: Instant::now(),
        closed: false,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let result = loop {
        tokio::select! {
            frame = transport.next() => match frame {
                Some(Ok(frame)) => {
                    if let Err(error) = conn.on_frame(frame) {
                        break Err(error);
                    }
                }
                Some(Err(error)) => break Err(error.into()),
                None => break Ok(()),
            },
            changed = changes.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
            }
            command = control.recv() => match command {
                Ok(Control::DropAll) | Err(broadcast::error::RecvError::Closed) => break Ok(()),
                Ok(Control::DetachQueue { entity, condition, description }) => {
                    conn.force_detach(&entity, &condition, &description);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            },
            _ = tick.tick() => conn.on_tick(),
        }
        conn.pump();
        if let Some(size) = conn.new_encoder_max.take() {
            transport.set_encoder_max_frame_size(size);
        }
        let frames = std::mem::take(&mut conn.out);
        if !frames.is_empty() {
            conn.last_sent = Instant::now();
            let mut failed = None;
            for frame in frames {
                tracing::trace!(channel = frame.channel, body = ?frame.body, "sending");
                if let Err(error) = transport.feed(frame).await {
                    failed = Some(error);
                    break;
                }
            }
            if let Some(error) = failed {
                break Err(error.into());
            }
            if let Err(error) = transport.flush().await {
                break Err(error.into());
            }
        }
        if conn.closed {
            break Ok(());
        }
    };
    conn.release_all();
    result
}

/// Protocol headers and SASL: ANONYMOUS and PLAIN (any credentials) are accepted, as the SAS
/// token that matters arrives later on `$cbs`.
async fn handshake<Io>(stream: &mut Io) -> Result<(), ConnectionError>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    if header == SASL_HEADER {
        stream.write_all(&SASL_HEADER).await?;
        let mechanisms =
            SaslMechanisms { sasl_server_mechanisms: Array(vec![Symbol::from("ANONYMOUS"), Symbol::from("PLAIN")]) };
        write_sasl(stream, sasl::Frame::Mechanisms(mechanisms)).await?;
        match read_sasl(stream).await? {
            sasl::Frame::Init(_) => {}
            other => return Err(ConnectionError::Protocol(format!("expected sasl-init, got {other:?}"))),
        }
        let outcome = SaslOutcome { code: SaslCode::Ok, additional_data: None };
        write_sasl(stream, sasl::Frame::Outcome(outcome)).await?;
        stream.read_exact(&mut header).await?;
    }
    if header != AMQP_HEADER {
        stream.write_all(&AMQP_HEADER).await?;
        return Err(ConnectionError::Protocol(format!("unsupported protocol header {header:?}")));
    }
    stream.write_all(&AMQP_HEADER).await?;
    Ok(())
}

async fn write_sasl<Io: AsyncWrite + Unpin>(stream: &mut Io, frame: sasl::Frame) -> Result<(), ConnectionError> {
    let mut body = BytesMut::new();
    sasl::FrameCodec {}.encode(frame, &mut body)?;
    let length = u32::try_from(body.len() + 4).map_err(|_| ConnectionError::Protocol("SASL frame too large".into()))?;
    stream.write_all(&length.to_be_bytes()).await?;
    stream.write_all(&body).await?;
    Ok(())
}

async fn read_sasl<Io: AsyncRead + Unpin>(stream: &mut Io) -> Result<sasl::Frame, ConnectionError> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await?;
    let length = u32::from_be_bytes(length) as usize;
    if !(8..=READ_MAX_FRAME_SIZE).contains(&length) {
        return Err(ConnectionError::Protocol(format!("SASL frame of {length} bytes")));
    }
    let mut body = vec![0u8; length - 4];
    stream.read_exact(&mut body).await?;
    let mut body = BytesMut::from(&body[..]);
    sasl::FrameCodec {}.decode(&mut body)?.ok_or_else(|| ConnectionError::Protocol("empty SASL frame".into()))
}

fn transfer(handle: u32, delivery_id: Option<u32>, tag: Option<Vec<u8>>, settled: bool, more: bool) -> Transfer {
    Transfer {
        handle: Handle(handle),
        delivery_id,
        delivery_tag: tag.map(Binary::from),
        message_format: delivery_id.map(|_| 0),
        settled: delivery_id.map(|_| settled),
        more,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    }
}

impl Conn {
    fn on_frame(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        tracing::trace!(channel = frame.channel, body = ?frame.body, "received");
        let channel = frame.channel;
        match frame.body {
            FrameBody::Open(open) => self.on_open(open),
            FrameBody::Begin(begin) => self.on_begin(channel, begin),
            FrameBody::Attach(attach) => self.on_attach(channel, attach),
            FrameBody::Flow(flow) => self.on_flow(channel, flow),
            FrameBody::Transfer { performative, payload } => self.on_transfer(channel, performative, payload),
            FrameBody::Disposition(disposition) => self.on_disposition(channel, disposition),
            FrameBody::Detach(detach) => self.on_detach(channel, detach),
            FrameBody::End(_) => self.on_end(channel),
            FrameBody::Close(_) => {
                self.out.push(Frame::new(0u16, FrameBody::Close(Close { error: None })));
                self.closed = true;
                Ok(())
            }
            FrameBody::Empty => Ok(()),
        }
    }

    fn on_open(&mut self, open: Open) -> Result<(), ConnectionError> {
        let remote_max = open.max_frame_size.0 as usize;
        self.max_frame_size = remote_max.clamp(512, MAX_FRAME_SIZE as usize);
        self.new_encoder_max = Some(self.max_frame_size);
        self.heartbeat =
            open.idle_time_out.filter(|millis| *millis > 0).map(|millis| Duration::from_millis(u64::from(millis) / 2));
        let reply = Open {
            container_id: "servicebus-peer".to_string(),
            hostname: None,
            max_frame_size: MaxFrameSize(MAX_FRAME_SIZE),
            channel_max: ChannelMax(4095),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.out.push(Frame::new(0u16, FrameBody::Open(reply)));
        Ok(())
    }

    fn on_begin(&mut self, channel: u16, begin: Begin) -> Result<(), ConnectionError> {
        let local_channel = self.next_local_channel;
        self.next_local_channel = self.next_local_channel.wrapping_add(1);
        let counters = Counters {
            local_channel,
            next_outgoing_id: 0,
            next_delivery_id: 0,
            remote_incoming_window: begin.incoming_window,
            next_incoming_id: begin.next_outgoing_id,
            incoming_window: WINDOW,
            next_local_handle: 0,
            next_reply_tag: 0,
        };
        let reply = Begin {
            remote_channel: Some(channel),
            next_outgoing_id: 0,
            incoming_window: WINDOW,
            outgoing_window: WINDOW,
            handle_max: Handle(u32::MAX),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.out.push(Frame::new(local_channel, FrameBody::Begin(reply)));
        self.sessions.insert(
            channel,
            Session { counters, links: HashMap::new(), unsettled: HashMap::new(), pending: Vec::new() },
        );
        Ok(())
    }

    fn session(&mut self, channel: u16) -> Result<&mut Session, ConnectionError> {
        self.sessions
            .get_mut(&channel)
            .ok_or_else(|| ConnectionError::Protocol(format!("no session on channel {channel}")))
    }

    fn new_owner(&self) -> u64 {
        self.shared.next_owner.fetch_add(1, Ordering::Relaxed)
    }

    fn on_attach(&mut self, channel: u16, attach: Attach) -> Result<(), ConnectionError> {
        let remote_handle = attach.handle.0;
        let owner = self.new_owner();
        let broker_has = |entity: &str| self.shared.broker.exists(entity);
        match attach.role {
            // The client sends: to a queue, or requests to $cbs / $management.
            Role::Sender => {
                let address = attach
                    .target
                    .as_ref()
                    .and_then(|target| Target::try_from((**target).clone()).ok())
                    .and_then(|target| target.address);
                let node = Node::parse(address.as_deref().unwrap_or(""));
                if let Some(entity) = node.entity()
                    && !broker_has(entity)
                {
                    self.reject_attach(channel, attach, not_found(entity));
                    return Ok(());
                }
                let session = self.session(channel)?;
                let local_handle = session.counters.next_local_handle;
                session.counters.next_local_handle += 1;
                let reply = attach_reply(&attach, local_handle, attach.source.clone(), attach.target.clone(), None);
                let initial = attach.initial_delivery_count.unwrap_or(0);
                session.links.insert(
                    remote_handle,
                    Link {
                        credit: CREDIT,
                        delivery_count: initial,
                        ..Link::attached(local_handle, owner, LinkKind::Incoming(node), false)
                    },
                );
                let flow = link_flow(&session.counters, local_handle, initial, CREDIT, false);
                let local_channel = session.counters.local_channel;
                self.out.push(Frame::new(local_channel, FrameBody::Attach(reply)));
                self.out.push(Frame::new(local_channel, FrameBody::Flow(flow)));
            }
            // The client receives: queue messages, or replies from $cbs / $management.
            Role::Receiver => {
                let source = attach.source.as_deref();
                let node = Node::parse(source.and_then(|s| s.address.as_deref()).unwrap_or(""));
                let target_address = attach
                    .target
                    .as_ref()
                    .and_then(|target| Target::try_from((**target).clone()).ok())
                    .and_then(|target| target.address);
                let pre_settled = attach.snd_settle_mode == SenderSettleMode::Settled;
                match node {
                    Node::Cbs | Node::Management(_) => {
                        if let Some(entity) = node.entity()
                            && !broker_has(entity)
                        {
                            self.reject_attach(channel, attach, not_found(entity));
                            return Ok(());
                        }
                        let session = self.session(channel)?;
                        let local_handle = session.counters.next_local_handle;
                        session.counters.next_local_handle += 1;
                        let reply =
                            attach_reply(&attach, local_handle, attach.source.clone(), attach.target.clone(), None);
                        session.links.insert(
                            remote_handle,
                            Link {
                                target_address,
                                ..Link::attached(local_handle, owner, LinkKind::Replies, pre_settled)
                            },
                        );
                        let local_channel = session.counters.local_channel;
                        self.out.push(Frame::new(local_channel, FrameBody::Attach(reply)));
                    }
                    Node::Entity(entity) => {
                        if !broker_has(&entity) {
                            self.reject_attach(channel, attach, not_found(&entity));
                            return Ok(());
                        }
                        let filter = session_filter(source);
                        let requires_session = self.shared.broker.requires_session(&entity);
                        match (requires_session, filter) {
                            (true, None) => {
                                let description = format!(
                                    "It is not possible for an entity that requires sessions to create a non-sessionful message receiver. TrackingId:peer, SystemTracker:{entity}"
                                );
                                self.reject_attach(channel, attach, error("amqp:not-allowed", description));
                            }
                            (false, Some(_)) => {
                                let description = format!(
                                    "It is not possible for an entity that does not require sessions to create a sessionful message receiver. TrackingId:peer, SystemTracker:{entity}"
                                );
                                self.reject_attach(channel, attach, error("amqp:not-allowed", description));
                            }
                            (false, None) => {
                                self.accept_receiver(channel, attach, entity, None, owner, pre_settled)?;
                            }
                            (true, Some(wanted)) => {
                                let timeout = attach
                                    .properties
                                    .as_ref()
                                    .and_then(|p| p.get(&Symbol::from(OPERATION_TIMEOUT)))
                                    .and_then(value_as_u64)
                                    .map(Duration::from_millis)
                                    .unwrap_or(DEFAULT_SESSION_WAIT);
                                let pending =
                                    PendingAttach { attach, entity, owner, deadline: Instant::now() + timeout };
                                if let Some(pending) = self.try_session_attach(channel, pending, wanted.as_deref())? {
                                    self.session(channel)?.pending.push((remote_handle, pending));
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Locks the wanted (or next available) session and attaches; gives the attach back when no
    /// session is available yet.
    fn try_session_attach(
        &mut self,
        channel: u16,
        pending: PendingAttach,
        wanted: Option<&str>,
    ) -> Result<Option<PendingAttach>, ConnectionError> {
        match self.shared.broker.lock_session(&pending.entity, wanted, pending.owner) {
            Ok((session_id, until)) => {
                let pre_settled = pending.attach.snd_settle_mode == SenderSettleMode::Settled;
                let mut attach = pending.attach;
                if let Some(source) = attach.source.as_mut() {
                    source
                        .filter
                        .get_or_insert_with(Default::default)
                        .insert(Symbol::from(SESSION_FILTER), Value::String(session_id.clone()));
                }
                self.accept_receiver(
                    channel,
                    attach,
                    pending.entity,
                    Some((session_id, until)),
                    pending.owner,
                    pre_settled,
                )?;
                Ok(None)
            }
            Err(SessionError::NoneAvailable) if Instant::now() < pending.deadline => Ok(Some(pending)),
            Err(SessionError::NoneAvailable) => {
                let description = "The operation did not complete within the allocated time for obtaining a session.";
                self.reject_attach(channel, pending.attach, error("com.microsoft:timeout", description));
                Ok(None)
            }
            Err(refusal @ SessionError::Locked(_)) => {
                self.reject_attach(
                    channel,
                    pending.attach,
                    error("com.microsoft:session-cannot-be-locked", refusal.to_string()),
                );
                Ok(None)
            }
            Err(refusal @ SessionError::NotAllowed(_)) => {
                self.reject_attach(channel, pending.attach, error("amqp:not-allowed", refusal.to_string()));
                Ok(None)
            }
        }
    }

    fn accept_receiver(
        &mut self,
        channel: u16,
        attach: Attach,
        entity: String,
        session_lock: Option<(String, i64)>,
        owner: u64,
        pre_settled: bool,
    ) -> Result<(), ConnectionError> {
        let properties = session_lock.as_ref().map(|(_, until)| {
            let mut fields = Fields::default();
            fields.insert(Symbol::from(LOCKED_UNTIL_UTC), Value::Long(TICKS_AT_UNIX_EPOCH + until * 10_000));
            fields
        });
        let session = self.session(channel)?;
        let local_handle = session.counters.next_local_handle;
        session.counters.next_local_handle += 1;
        let reply = attach_reply(&attach, local_handle, attach.source.clone(), attach.target.clone(), properties);
        session.links.insert(
            attach.handle.0,
            Link::attached(
                local_handle,
                owner,
                LinkKind::Deliver { entity, remove: pre_settled, session: session_lock.map(|(id, _)| id) },
                pre_settled,
            ),
        );
        let local_channel = session.counters.local_channel;
        self.out.push(Frame::new(local_channel, FrameBody::Attach(reply)));
        Ok(())
    }

    /// Completes the attach without a terminus, then detaches with the error, as AMQP requires.
    fn reject_attach(&mut self, channel: u16, attach: Attach, error: AmqpErrorValue) {
        let Some(session) = self.sessions.get_mut(&channel) else { return };
        let local_handle = session.counters.next_local_handle;
        session.counters.next_local_handle += 1;
        let (source, target) = match attach.role {
            Role::Sender => (attach.source.clone(), None),
            Role::Receiver => (None, attach.target.clone()),
        };
        let reply = attach_reply(&attach, local_handle, source, target, None);
        let local_channel = session.counters.local_channel;
        self.out.push(Frame::new(local_channel, FrameBody::Attach(reply)));
        let detach = Detach { handle: Handle(local_handle), closed: true, error: Some(error) };
        self.out.push(Frame::new(local_channel, FrameBody::Detach(detach)));
    }

    fn on_flow(&mut self, channel: u16, flow: Flow) -> Result<(), ConnectionError> {
        let session = self.session(channel)?;
        let counters = &mut session.counters;
        counters.remote_incoming_window = flow
            .next_incoming_id
            .unwrap_or(0)
            .wrapping_add(flow.incoming_window)
            .wrapping_sub(counters.next_outgoing_id);
        let Some(handle) = flow.handle else { return Ok(()) };
        let Some(link) = session.links.get_mut(&handle.0) else { return Ok(()) };
        if matches!(link.kind, LinkKind::Incoming(_)) {
            if flow.echo {
                let reply = link_flow(&session.counters, link.local_handle, link.delivery_count, link.credit, false);
                let local_channel = session.counters.local_channel;
                self.out.push(Frame::new(local_channel, FrameBody::Flow(reply)));
            }
            return Ok(());
        }
        let receiver_count = flow.delivery_count.unwrap_or(link.delivery_count);
        let credit = flow.link_credit.unwrap_or(0);
        link.credit = receiver_count.wrapping_add(credit).wrapping_sub(link.delivery_count);
        link.drain = flow.drain;
        if flow.echo {
            let reply = link_flow(&session.counters, link.local_handle, link.delivery_count, link.credit, link.drain);
            let local_channel = session.counters.local_channel;
            self.out.push(Frame::new(local_channel, FrameBody::Flow(reply)));
        }
        Ok(())
    }

    fn on_transfer(&mut self, channel: u16, transfer: Transfer, payload: Bytes) -> Result<(), ConnectionError> {
        let session = self.session(channel)?;
        session.counters.next_incoming_id = session.counters.next_incoming_id.wrapping_add(1);
        session.counters.incoming_window = session.counters.incoming_window.saturating_sub(1);
        let mut frames = Vec::new();
        if session.counters.incoming_window < WINDOW / 2 {
            session.counters.incoming_window = WINDOW;
            frames.push_flow(session_flow(&session.counters));
        }
        let Some(link) = session.links.get_mut(&transfer.handle.0) else {
            return Err(ConnectionError::Protocol(format!("transfer on unknown handle {}", transfer.handle.0)));
        };
        let more = transfer.more;
        match link.partial.as_mut() {
            Some((_, buffer)) => buffer.extend_from_slice(&payload),
            None => link.partial = Some((transfer, BytesMut::from(&payload[..]))),
        }
        if more {
            self.push_all(channel, frames);
            return Ok(());
        }
        let Some((first, buffer)) = link.partial.take() else { return Ok(()) };
        if first.aborted {
            self.push_all(channel, frames);
            return Ok(());
        }
        link.delivery_count = link.delivery_count.wrapping_add(1);
        link.credit = link.credit.saturating_sub(1);
        if link.credit < CREDIT / 2 {
            link.credit = CREDIT;
            frames.push_flow(link_flow(&session.counters, link.local_handle, link.delivery_count, link.credit, false));
        }
        let LinkKind::Incoming(node) = &link.kind else {
            return Err(ConnectionError::Protocol("transfer on a link the peer sends on".into()));
        };
        let node = node.clone();
        let owner = link.owner;
        let settled = first.settled.unwrap_or(false);
        let delivery_id = first.delivery_id;
        let batched = first.message_format == Some(BATCH_MESSAGE_FORMAT);
        let message = decode_message(&buffer);
        let state = match message {
            Err(problem) => rejected(error("amqp:decode-error", problem)),
            Ok(message) => match &node {
                Node::Entity(entity) => {
                    let messages = if batched { unbatch(&message) } else { Ok(vec![message]) };
                    match messages.map(|messages| self.shared.broker.enqueue_batch(entity, messages)) {
                        Err(problem) => rejected(error("amqp:decode-error", problem)),
                        Ok(Ok(_)) => DeliveryState::Accepted(Accepted {}),
                        Ok(Err(refusal)) => {
                            let condition = match refusal {
                                crate::broker::SendRefusal::NotFound(_) => "amqp:not-found",
                                _ => "amqp:not-allowed",
                            };
                            rejected(error(condition, refusal.to_string()))
                        }
                    }
                }
                Node::Cbs | Node::Management(_) => {
                    let reply_to = message.properties.as_ref().and_then(|p| p.reply_to.clone());
                    let response = management::handle(&self.shared.broker, &node, &message, owner);
                    self.route_reply(channel, reply_to, response);
                    DeliveryState::Accepted(Accepted {})
                }
            },
        };
        if let (false, Some(id)) = (settled, delivery_id) {
            frames.push_disposition(Role::Receiver, id, state);
        }
        self.push_all(channel, frames);
        Ok(())
    }

    fn push_all(&mut self, channel: u16, frames: Vec<OutFrame>) {
        let Some(session) = self.sessions.get(&channel) else { return };
        let local_channel = session.counters.local_channel;
        for frame in frames {
            self.out.push(Frame::new(local_channel, frame.into_body()));
        }
    }

    /// Management and CBS replies go to the client's reply link whose target is the request's
    /// reply-to; clients that leave reply-to unset get the first reply link of the session.
    fn route_reply(&mut self, channel: u16, reply_to: Option<String>, response: Vec<u8>) {
        let by_address = |link: &Link| {
            matches!(link.kind, LinkKind::Replies) && reply_to.is_some() && link.target_address == reply_to
        };
        for session in self.sessions.values_mut() {
            if let Some(link) = session.links.values_mut().find(|link| by_address(link)) {
                link.replies.push_back(response);
                return;
            }
        }
        if let Some(session) = self.sessions.get_mut(&channel)
            && let Some(link) = session.links.values_mut().find(|link| matches!(link.kind, LinkKind::Replies))
        {
            link.replies.push_back(response);
            return;
        }
        tracing::warn!(?reply_to, "management reply dropped: no reply link attached");
    }

    fn on_disposition(&mut self, channel: u16, disposition: Disposition) -> Result<(), ConnectionError> {
        if disposition.role != Role::Receiver {
            return Ok(());
        }
        let shared = self.shared.clone();
        let broker = &shared.broker;
        let session = self.session(channel)?;
        let last = disposition.last.unwrap_or(disposition.first);
        let mut frames = Vec::new();
        let mut id = disposition.first;
        loop {
            if let Some(delivery) = session.unsettled.remove(&id) {
                let outcome = disposition.state.clone();
                let settlement = settlement_of(outcome.as_ref());
                let result = broker.settle(&delivery.entity, delivery.token, settlement);
                if !disposition.settled {
                    let state = match result {
                        Ok(()) => echo_state(outcome),
                        Err(lost) => rejected(lock_error(&lost)),
                    };
                    frames.push_disposition(Role::Sender, id, state);
                }
            }
            if id == last {
                break;
            }
            id = id.wrapping_add(1);
        }
        let local_channel = session.counters.local_channel;
        for frame in frames {
            self.out.push(Frame::new(local_channel, frame.into_body()));
        }
        Ok(())
    }

    fn on_detach(&mut self, channel: u16, detach: Detach) -> Result<(), ConnectionError> {
        let session = self.session(channel)?;
        let handle = detach.handle.0;
        if let Some(index) = session.pending.iter().position(|(h, _)| *h == handle) {
            let (_, pending) = session.pending.remove(index);
            self.reject_attach(channel, pending.attach, error("amqp:link:detach-forced", "the attach was abandoned"));
            return Ok(());
        }
        let Some(link) = session.links.remove(&handle) else { return Ok(()) };
        session.unsettled.retain(|_, delivery| delivery.link != handle);
        let local_channel = session.counters.local_channel;
        if !link.detaching {
            let reply = Detach { handle: Handle(link.local_handle), closed: detach.closed, error: None };
            self.out.push(Frame::new(local_channel, FrameBody::Detach(reply)));
        }
        self.shared.broker.release_owner(link.owner);
        Ok(())
    }

    fn on_end(&mut self, channel: u16) -> Result<(), ConnectionError> {
        if let Some(session) = self.sessions.remove(&channel) {
            for link in session.links.values() {
                self.shared.broker.release_owner(link.owner);
            }
            let local_channel = session.counters.local_channel;
            self.out.push(Frame::new(local_channel, FrameBody::End(End { error: None })));
        }
        Ok(())
    }

    fn on_tick(&mut self) {
        if let Some(interval) = self.heartbeat
            && self.last_sent.elapsed() >= interval
        {
            self.out.push(Frame::empty());
        }
    }

    fn force_detach(&mut self, entity: &str, condition: &str, description: &str) {
        let queue = entity.to_ascii_lowercase();
        let matches = |name: &str| {
            let name = name.to_ascii_lowercase();
            name == queue || name.starts_with(&format!("{queue}/"))
        };
        let mut owners = Vec::new();
        for session in self.sessions.values_mut() {
            let local_channel = session.counters.local_channel;
            for link in session.links.values_mut() {
                if link.detaching || !link.entity().is_some_and(matches) {
                    continue;
                }
                link.detaching = true;
                owners.push(link.owner);
                let detach = Detach {
                    handle: Handle(link.local_handle),
                    closed: true,
                    error: Some(error(condition, description)),
                };
                self.out.push(Frame::new(local_channel, FrameBody::Detach(detach)));
            }
        }
        for owner in owners {
            self.shared.broker.release_owner(owner);
        }
    }

    fn release_all(&mut self) {
        for session in self.sessions.values() {
            for link in session.links.values() {
                self.shared.broker.release_owner(link.owner);
            }
        }
        self.sessions.clear();
    }

    /// Sends what the broker can deliver within credit and window, management replies, drain
    /// answers; finishes waiting session attaches; detaches session receivers whose session lock
    /// expired.
    fn pump(&mut self) {
        let channels: Vec<u16> = self.sessions.keys().copied().collect();
        for channel in channels {
            self.retry_pending(channel);
        }
        let broker = &self.shared.broker;
        let max_payload = self.max_frame_size.saturating_sub(TRANSFER_OVERHEAD).max(256);
        for session in self.sessions.values_mut() {
            let counters = &mut session.counters;
            let local_channel = counters.local_channel;
            for (remote_handle, link) in session.links.iter_mut() {
                if link.detaching {
                    continue;
                }
                match &link.kind {
                    LinkKind::Incoming(_) => continue,
                    LinkKind::Deliver { entity, remove, session: session_id } => {
                        if let Some(id) = session_id
                            && !broker.holds_session(entity, id, link.owner)
                        {
                            link.detaching = true;
                            let detach = Detach {
                                handle: Handle(link.local_handle),
                                closed: true,
                                error: Some(error(
                                    "com.microsoft:session-lock-lost",
                                    "The session lock has expired on the MessageSession. Accept a new MessageSession.",
                                )),
                            };
                            self.out.push(Frame::new(local_channel, FrameBody::Detach(detach)));
                            continue;
                        }
                        while link.credit > 0 && counters.remote_incoming_window > 0 {
                            let Some(delivered) =
                                broker.next_delivery(entity, link.owner, session_id.as_deref(), *remove)
                            else {
                                break;
                            };
                            let tag = delivered.lock_token.to_bytes_le().to_vec();
                            let delivery_id = send_transfer(
                                counters,
                                &mut self.out,
                                link.local_handle,
                                tag,
                                delivered.payload,
                                *remove,
                                max_payload,
                            );
                            link.credit = link.credit.saturating_sub(1);
                            link.delivery_count = link.delivery_count.wrapping_add(1);
                            if !*remove {
                                session.unsettled.insert(
                                    delivery_id,
                                    OutDelivery {
                                        link: *remote_handle,
                                        entity: entity.clone(),
                                        token: delivered.lock_token,
                                    },
                                );
                            }
                        }
                    }
                    LinkKind::Replies => {
                        while link.credit > 0 && counters.remote_incoming_window > 0 {
                            let Some(payload) = link.replies.pop_front() else { break };
                            counters.next_reply_tag += 1;
                            let tag = counters.next_reply_tag.to_be_bytes().to_vec();
                            let settled = link.pre_settled;
                            send_transfer(
                                counters,
                                &mut self.out,
                                link.local_handle,
                                tag,
                                payload,
                                settled,
                                max_payload,
                            );
                            link.credit = link.credit.saturating_sub(1);
                            link.delivery_count = link.delivery_count.wrapping_add(1);
                        }
                    }
                }
                if link.drain && link.credit > 0 {
                    link.delivery_count = link.delivery_count.wrapping_add(link.credit);
                    link.credit = 0;
                    let flow = link_flow(counters, link.local_handle, link.delivery_count, 0, true);
                    self.out.push(Frame::new(local_channel, FrameBody::Flow(flow)));
                }
            }
        }
    }

    fn retry_pending(&mut self, channel: u16) {
        let Some(session) = self.sessions.get_mut(&channel) else { return };
        if session.pending.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut session.pending);
        let mut still = Vec::new();
        for (handle, pending) in waiting {
            match self.try_session_attach(channel, pending, None) {
                Ok(Some(pending)) => still.push((handle, pending)),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "session attach failed"),
            }
        }
        if let Some(session) = self.sessions.get_mut(&channel) {
            session.pending.extend(still);
        }
    }
}

/// Sends one delivery, split into frames that fit the client's max-frame-size. Returns its
/// delivery id.
fn send_transfer(
    counters: &mut Counters,
    out: &mut Vec<Frame>,
    handle: u32,
    tag: Vec<u8>,
    payload: Vec<u8>,
    settled: bool,
    max_payload: usize,
) -> u32 {
    let delivery_id = counters.next_delivery_id;
    counters.next_delivery_id = counters.next_delivery_id.wrapping_add(1);
    let payload = Bytes::from(payload);
    let chunks: Vec<Bytes> = if payload.is_empty() {
        vec![payload]
    } else {
        (0..payload.len())
            .step_by(max_payload)
            .map(|start| payload.slice(start..(start + max_payload).min(payload.len())))
            .collect()
    };
    let count = chunks.len();
    let mut tag = Some(tag);
    for (index, chunk) in chunks.into_iter().enumerate() {
        let more = index + 1 < count;
        let performative = if index == 0 {
            transfer(handle, Some(delivery_id), tag.take(), settled, more)
        } else {
            transfer(handle, None, None, settled, more)
        };
        out.push(Frame::new(counters.local_channel, FrameBody::Transfer { performative, payload: chunk }));
        counters.next_outgoing_id = counters.next_outgoing_id.wrapping_add(1);
        counters.remote_incoming_window = counters.remote_incoming_window.saturating_sub(1);
    }
    delivery_id
}

/// A frame body queued while a session is borrowed.
enum OutFrame {
    Flow(Flow),
    Disposition(Disposition),
}

impl OutFrame {
    fn into_body(self) -> FrameBody {
        match self {
            OutFrame::Flow(flow) => FrameBody::Flow(flow),
            OutFrame::Disposition(disposition) => FrameBody::Disposition(disposition),
        }
    }
}

trait PushFrames {
    fn push_flow(&mut self, flow: Flow);
    fn push_disposition(&mut self, role: Role, id: u32, state: DeliveryState);
}

impl PushFrames for Vec<OutFrame> {
    fn push_flow(&mut self, flow: Flow) {
        Vec::push(self, OutFrame::Flow(flow));
    }

    fn push_disposition(&mut self, role: Role, id: u32, state: DeliveryState) {
        Vec::push(
            self,
            OutFrame::Disposition(Disposition {
                role,
                first: id,
                last: None,
                settled: true,
                state: Some(state),
                batchable: false,
            }),
        );
    }
}

fn session_flow(counters: &Counters) -> Flow {
    Flow {
        next_incoming_id: Some(counters.next_incoming_id),
        incoming_window: counters.incoming_window,
        next_outgoing_id: counters.next_outgoing_id,
        outgoing_window: WINDOW,
        handle: None,
        delivery_count: None,
        link_credit: None,
        available: None,
        drain: false,
        echo: false,
        properties: None,
    }
}

fn link_flow(counters: &Counters, handle: u32, delivery_count: u32, credit: u32, drain: bool) -> Flow {
    Flow {
        handle: Some(Handle(handle)),
        delivery_count: Some(delivery_count),
        link_credit: Some(credit),
        drain,
        ..session_flow(counters)
    }
}

fn attach_reply(
    remote: &Attach,
    local_handle: u32,
    source: Option<Box<Source>>,
    target: Option<Box<TargetArchetype>>,
    properties: Option<Fields>,
) -> Attach {
    let we_send = remote.role == Role::Receiver;
    Attach {
        name: remote.name.clone(),
        handle: Handle(local_handle),
        role: if we_send { Role::Sender } else { Role::Receiver },
        snd_settle_mode: remote.snd_settle_mode.clone(),
        rcv_settle_mode: if we_send { remote.rcv_settle_mode.clone() } else { ReceiverSettleMode::First },
        source,
        target,
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: we_send.then_some(0),
        max_message_size: Some(u64::from(MAX_FRAME_SIZE) * 4),
        offered_capabilities: None,
        desired_capabilities: None,
        properties,
    }
}

fn not_found(entity: &str) -> AmqpErrorValue {
    AmqpErrorValue::new(
        AmqpError::NotFound,
        Some(format!("The messaging entity '{entity}' could not be found.")),
        Some(Fields::default()),
    )
}

/// `Some(None)`: a session receiver for the next available session; `Some(Some(id))`: for that
/// session; `None`: not a session receiver.
fn session_filter(source: Option<&Source>) -> Option<Option<String>> {
    let value = source?.filter.as_ref()?.get(&Symbol::from(SESSION_FILTER))?;
    Some(match value {
        Value::String(id) => Some(id.clone()),
        Value::Described(described) => match &described.value {
            Value::String(id) => Some(id.clone()),
            _ => None,
        },
        _ => None,
    })
}

fn value_as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Uint(v) => Some(u64::from(*v)),
        Value::Ulong(v) => Some(*v),
        Value::Int(v) => u64::try_from(*v).ok(),
        Value::Long(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

fn rejected(error: AmqpErrorValue) -> DeliveryState {
    DeliveryState::Rejected(Rejected { error: Some(error) })
}

pub(crate) fn lock_error(error: &LockError) -> AmqpErrorValue {
    let condition = match error {
        LockError::LockLost => "com.microsoft:message-lock-lost",
        LockError::SessionLockLost => "com.microsoft:session-lock-lost",
        LockError::NotFound(_) => "amqp:not-found",
    };
    self::error(condition, error.to_string())
}

/// The outcome the peer reports back to a receiver that settles second: what it applied, and for
/// dead-lettering a plain `rejected` (Microsoft's Python SDK treats a rejected outcome carrying an
/// error as a failed settlement).
fn echo_state(state: Option<DeliveryState>) -> DeliveryState {
    match state {
        Some(DeliveryState::Rejected(_)) => DeliveryState::Rejected(Rejected { error: None }),
        Some(state @ (DeliveryState::Accepted(_) | DeliveryState::Modified(_) | DeliveryState::Released(_))) => state,
        _ => DeliveryState::Released(Released {}),
    }
}

fn simple(value: &Value) -> Option<SimpleValue> {
    SimpleValue::try_from(value.clone()).ok()
}

fn fields_to_properties(fields: &Fields, skip: &[&str]) -> Vec<(String, SimpleValue)> {
    fields
        .iter()
        .filter(|(key, _)| !skip.contains(&key.as_str()))
        .filter_map(|(key, value)| simple(value).map(|v| (key.as_str().to_string(), v)))
        .collect()
}

fn text(fields: &Fields, name: &str) -> Option<String> {
    match fields.get(&Symbol::from(name)) {
        Some(Value::String(text)) => Some(text.clone()),
        _ => None,
    }
}

/// Maps a receiver's outcome to what Service Bus does with the message.
fn settlement_of(state: Option<&DeliveryState>) -> Settlement {
    use crate::broker::{DEAD_LETTER_ERROR_DESCRIPTION, DEAD_LETTER_REASON};
    match state {
        Some(DeliveryState::Accepted(_)) => Settlement::Complete,
        Some(DeliveryState::Rejected(Rejected { error })) => {
            let info = error.as_ref().and_then(|e| e.info.as_deref());
            let reason = info.and_then(|info| text(info, DEAD_LETTER_REASON));
            let description = info
                .and_then(|info| text(info, DEAD_LETTER_ERROR_DESCRIPTION))
                .or_else(|| error.as_ref().and_then(|e| e.description.clone()));
            let properties = info
                .map(|info| fields_to_properties(info, &[DEAD_LETTER_REASON, DEAD_LETTER_ERROR_DESCRIPTION]))
                .unwrap_or_default();
            Settlement::DeadLetter { reason, description, properties }
        }
        Some(DeliveryState::Modified(Modified { undeliverable_here, message_annotations, .. })) => {
            let properties =
                message_annotations.as_ref().map(|fields| fields_to_properties(fields, &[])).unwrap_or_default();
            if *undeliverable_here == Some(true) {
                Settlement::Defer(properties)
            } else {
                Settlement::Abandon(properties)
            }
        }
        _ => Settlement::Release,
    }
}
