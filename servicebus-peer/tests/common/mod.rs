//! Starting a peer for a test: azservicebus always dials port 5672, so every peer gets its own
//! loopback address (127.0.x.y) on that port; a taken address is skipped.

use servicebus_peer::{Peer, PeerConfig, QueueConfig};

/// Starts a peer on port 5672 of a free loopback address.
pub async fn start_peer(queues: Vec<QueueConfig>) -> Peer {
    start_peer_with(queues, |_| {}).await
}

/// Like [`start_peer`], with a chance to adjust the configuration.
pub async fn start_peer_with(queues: Vec<QueueConfig>, adjust: impl Fn(&mut PeerConfig)) -> Peer {
    Peer::start_on_free_loopback(queues, adjust).await.expect("a free loopback address for a peer")
}

/// A queue name unique to this test run.
pub fn queue_name(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
