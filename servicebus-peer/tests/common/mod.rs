//! Starting a peer for a test: azservicebus always dials port 5672, so every peer gets its own
//! loopback address (127.0.x.y) on that port; a taken address is skipped.

use std::net::{Ipv4Addr, SocketAddr};

use servicebus_peer::{Peer, PeerConfig, PeerError, QueueConfig};

/// Starts a peer on port 5672 of a free loopback address.
pub async fn start_peer(queues: Vec<QueueConfig>) -> Peer {
    start_peer_with(queues, |_| {}).await
}

/// Like [`start_peer`], with a chance to adjust the configuration.
pub async fn start_peer_with(queues: Vec<QueueConfig>, adjust: impl Fn(&mut PeerConfig)) -> Peer {
    let mut last_error = None;
    for _ in 0..64 {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        // 127.0.10.1 ..= 127.0.249.250: clear of 127.0.0.x, which people use by hand.
        let ip = Ipv4Addr::new(127, 0, 10 + bytes[0] % 240, 1 + bytes[1] % 250);
        let mut config = PeerConfig::new(SocketAddr::from((ip, 5672)), queues.clone());
        adjust(&mut config);
        match Peer::start(config).await {
            Ok(peer) => return peer,
            Err(error @ PeerError::Bind { .. }) => last_error = Some(error),
        }
    }
    panic!("no free loopback address for a peer: {last_error:?}");
}

/// A queue name unique to this test run.
pub fn queue_name(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
