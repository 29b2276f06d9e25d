//! servicebus-peer: a local AMQP 1.0 server that behaves like an Azure Service Bus namespace for
//! everything the `azservicebus` crate and Microsoft's Python SDK (`azure-servicebus`) use, so
//! Service Bus code can be tested on a machine with no Azure, no Docker and no emulator.
//!
//! Layout:
//! - [`broker`]: queues, DLQs, locks, delivery counts, sessions, scheduling, duplicate detection
//!   (the Service Bus semantics, no protocol).
//! - `connection`: the AMQP listener (SASL, connection, sessions, links, transfers,
//!   dispositions) over fe2o3-amqp's frame transport.
//! - `management`: the `$cbs` put-token node and each entity's `$management` operations.
//! - [`Peer`]: starts the listener in-process; inspection (`messages`, `dead_letters`), direct
//!   sends, and fault injection (`drop_connections`, `detach_queue`, `expire_locks`) for tests.
//! - [`referee`]: Microsoft's Python SDK, installed for tests that let it judge.
//!
//! What it does not emulate (TLS on 5671, WebSockets, Entra tokens, topics, throttling, real
//! timing) is listed in `docs/servicebus-peer.md`.

pub mod broker;
mod connection;
mod management;
pub mod referee;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use fe2o3_amqp_types::messaging::{Body, Data, Message, MessageId, Properties};
use fe2o3_amqp_types::primitives::{Binary, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

pub use broker::{
    DEAD_LETTER_ERROR_DESCRIPTION, DEAD_LETTER_REASON, DLQ_SUFFIX, Enqueued, MAX_DELIVERY_COUNT_EXCEEDED, MessageState,
    QueueConfig, SendRefusal, StoredMessage,
};
pub use connection::ConnectionError;
/// The AMQP types the inspection API speaks (re-exported so tests need no extra dependency).
pub use fe2o3_amqp_types as types;

use broker::Broker;
use connection::{Control, Shared};

/// How often lock expiry and scheduled messages are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// What the peer serves.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Address to listen on. azservicebus always dials port 5672 for unsecured AMQP, so use
    /// `127.0.0.2:5672` (or another loopback address) for it; the Python SDK keeps the port of
    /// the connection string, so any port works there.
    pub listen: SocketAddr,
    /// The queues (each gets its `$deadletterqueue`).
    pub queues: Vec<QueueConfig>,
    /// SAS key name put into the connection string (any key is accepted).
    pub key_name: String,
    /// SAS key put into the connection string.
    pub key: String,
    /// Also put the lock token into the `x-opt-lock-token` delivery annotation. Service Bus does
    /// not; with it, azservicebus takes the token from there (RFC byte order) instead of the
    /// delivery tag, which changes how its management calls behave (see the docs).
    pub lock_token_annotation: bool,
}

impl PeerConfig {
    /// A peer on `listen` with these queues and Service Bus's behaviour.
    pub fn new(listen: SocketAddr, queues: Vec<QueueConfig>) -> Self {
        Self {
            listen,
            queues,
            key_name: "RootManageSharedAccessKey".into(),
            key: "SAS_KEY_VALUE".into(),
            lock_token_annotation: false,
        }
    }
}

/// Why the peer could not start.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running peer. Dropping it without [`Peer::shutdown`] leaves its tasks running until the
/// runtime stops.
#[derive(Debug)]
pub struct Peer {
    shared: Arc<Shared>,
    address: SocketAddr,
    key_name: String,
    key: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Peer {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(config: PeerConfig) -> Result<Self, PeerError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| PeerError::Bind { address: config.listen, source })?;
        let address = listener.local_addr().map_err(|source| PeerError::Bind { address: config.listen, source })?;
        let (control, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            broker: Broker::new(&config.queues, config.lock_token_annotation),
            control,
            next_owner: AtomicU64::new(1),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(listener, shared.clone(), stopped));
        Ok(Self { shared, address, key_name: config.key_name, key: config.key, stop: Some(stop), task: Some(task) })
    }

    /// Starts on port 5672 (the only port azservicebus dials for plain AMQP) of a free loopback
    /// address in 127.0.10.1–127.0.249.250 (clear of 127.0.0.x, which people use by hand and
    /// the shared RabbitMQ holds), `adjust`ing the configuration first; a taken address is
    /// skipped.
    pub async fn start_on_free_loopback(
        queues: Vec<QueueConfig>,
        adjust: impl Fn(&mut PeerConfig),
    ) -> Result<Self, PeerError> {
        let mut last_error = None;
        for _ in 0..64 {
            let bytes = uuid::Uuid::new_v4().into_bytes();
            let ip = std::net::Ipv4Addr::new(127, 0, 10 + bytes[0] % 240, 1 + bytes[1] % 250);
            let mut config = PeerConfig::new(SocketAddr::from((ip, 5672)), queues.clone());
            adjust(&mut config);
            match Self::start(config).await {
                Ok(peer) => return Ok(peer),
                Err(error @ PeerError::Bind { .. }) => last_error = Some(error),
            }
        }
        Err(last_error.expect("64 tries were made"))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// A connection string both azservicebus (with its `unsecured` feature, which ignores the
    /// port and dials 5672) and the Python SDK (which, with `UseDevelopmentEmulator=true`,
    /// connects in plain text to the given port) accept.
    pub fn connection_string(&self) -> String {
        let host = match self.address.port() {
            5672 => self.address.ip().to_string(),
            port => format!("{}:{port}", self.address.ip()),
        };
        format!(
            "Endpoint=sb://{host}/;SharedAccessKeyName={};SharedAccessKey={};UseDevelopmentEmulator=true",
            self.key_name, self.key
        )
    }

    /// The messages in a queue (or `<queue>/$deadletterqueue`), in sequence order, locked,
    /// deferred and scheduled ones included. `None` if there is no such entity.
    pub fn messages(&self, entity: &str) -> Option<Vec<StoredMessage>> {
        self.shared.broker.snapshot(entity)
    }

    /// The messages in a queue's dead-letter queue.
    pub fn dead_letters(&self, queue: &str) -> Vec<StoredMessage> {
        self.messages(&format!("{queue}{DLQ_SUFFIX}")).unwrap_or_default()
    }

    /// How many messages an entity holds (0 if it does not exist).
    pub fn count(&self, entity: &str) -> usize {
        self.messages(entity).map_or(0, |messages| messages.len())
    }

    /// Puts a message into a queue as if a sender had sent it.
    pub fn send(&self, queue: &str, message: Message<Body<Value>>) -> Result<Enqueued, SendRefusal> {
        self.shared.broker.enqueue(queue, message)
    }

    /// Fault: closes every client socket at once (no AMQP close frame), as a network failure or
    /// a gateway restart would.
    pub fn drop_connections(&self) {
        let _ = self.shared.control.send(Control::DropAll);
    }

    /// Fault: detaches every link of this queue (its DLQ and management node included) with
    /// the given AMQP error condition, e.g. `amqp:link:detach-forced`.
    pub fn detach_queue(&self, queue: &str, condition: &str, description: &str) {
        let _ = self.shared.control.send(Control::DetachQueue {
            entity: queue.to_string(),
            condition: condition.to_string(),
            description: description.to_string(),
        });
    }

    /// Fault: every message lock and session lock of this queue expires now (the messages go
    /// back with their delivery count raised, or to the DLQ at MaxDeliveryCount).
    pub fn expire_locks(&self, queue: &str) {
        self.shared.broker.expire_locks(queue);
    }

    /// Stops listening and drops every connection.
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn stop_now(&mut self) {
        let _ = self.shared.control.send(Control::DropAll);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A message with one Data section, as both SDKs send bodies; for [`Peer::send`].
pub fn data_message(
    body: impl Into<Vec<u8>>,
    message_id: Option<&str>,
    session_id: Option<&str>,
) -> Message<Body<Value>> {
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            message_id: message_id.map(|id| MessageId::String(id.to_string())),
            group_id: session_id.map(str::to_string),
            ..Default::default()
        }),
        application_properties: None,
        body: Body::Data(vec![Data(Binary::from(body.into()))].into()),
        footer: None,
    }
}

async fn run(listener: TcpListener, shared: Arc<Shared>, mut stopped: oneshot::Receiver<()>) {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = sweep.tick() => {
                shared.broker.sweep();
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(error) = connection::serve(stream, shared).await {
                            tracing::debug!(%remote, error = %error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
        }
    }
}
