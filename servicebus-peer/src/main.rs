//! `servicebus-peer --listen 127.0.0.2:5672 --queue orders,sessions,max-delivery-count=5`
//!
//! Prints the connection string as its first line on stdout, then serves until SIGTERM or
//! Ctrl-C. SIGUSR1 drops every client connection and SIGUSR2 expires every lock (the library's
//! fault injection, for tests that run the binary).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use servicebus_peer::{Peer, PeerConfig, QueueConfig};

/// A local AMQP 1.0 peer that behaves like an Azure Service Bus namespace.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (azservicebus always dials port 5672).
    #[arg(long, default_value = "127.0.0.2:5672")]
    listen: SocketAddr,
    /// A queue: NAME[,sessions][,max-delivery-count=N][,lock-duration=30s][,duplicate-detection=10m].
    /// Repeatable.
    #[arg(long = "queue", value_parser = parse_queue, required = true)]
    queues: Vec<QueueConfig>,
    /// Default lock duration for queues that do not set one (e.g. 30s, 1500ms).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    lock_duration: Duration,
    /// SAS key name shown in the connection string.
    #[arg(long, default_value = "RootManageSharedAccessKey")]
    key_name: String,
    /// SAS key shown in the connection string (any key is accepted).
    #[arg(long, default_value = "SAS_KEY_VALUE")]
    key: String,
    /// Also send the lock token as the `x-opt-lock-token` delivery annotation.
    #[arg(long)]
    lock_token_annotation: bool,
}

/// A queue spec, with the lock duration left at zero when not given (filled from
/// `--lock-duration`).
fn parse_queue(spec: &str) -> Result<QueueConfig, String> {
    let mut parts = spec.split(',');
    let name = parts.next().unwrap_or_default().trim();
    if name.is_empty() || name.contains('/') {
        return Err(format!("invalid queue name in '{spec}'"));
    }
    let mut queue = QueueConfig::new(name).lock_duration(Duration::ZERO);
    for part in parts {
        let (key, value) = part.split_once('=').map_or((part, None), |(k, v)| (k, Some(v)));
        match (key.trim(), value) {
            ("sessions", None) => queue = queue.sessions(true),
            ("max-delivery-count", Some(value)) => {
                let count: u32 = value
                    .parse()
                    .map_err(|_| format!("max-delivery-count must be a positive number, got '{value}'"))?;
                if count == 0 {
                    return Err("max-delivery-count must be at least 1".into());
                }
                queue = queue.max_delivery_count(count);
            }
            ("lock-duration", Some(value)) => queue = queue.lock_duration(parse_duration(value)?),
            ("duplicate-detection", Some(value)) => queue = queue.duplicate_detection(parse_duration(value)?),
            ("duplicate-detection", None) => queue = queue.duplicate_detection(Duration::from_secs(600)),
            (other, _) => return Err(format!("unknown queue option '{other}' in '{spec}'")),
        }
    }
    Ok(queue)
}

/// `1500ms`, `30s`, `10m`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let value: u64 = number.parse().map_err(|_| format!("invalid duration '{text}' (use e.g. 1500ms, 30s, 10m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(format!("invalid duration unit in '{text}' (use ms, s or m)")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let queues: Vec<QueueConfig> = args
        .queues
        .into_iter()
        .map(|queue| if queue.lock_duration.is_zero() { queue.lock_duration(args.lock_duration) } else { queue })
        .collect();
    let names: Vec<String> = queues.iter().map(|q| q.name.clone()).collect();
    let mut config = PeerConfig::new(args.listen, queues);
    config.key_name = args.key_name;
    config.key = args.key;
    config.lock_token_annotation = args.lock_token_annotation;
    let peer = Peer::start(config).await?;
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", peer.connection_string())?;
        stdout.flush()?;
    }
    wait(&peer, &names).await?;
    peer.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait(peer: &Peer, queues: &[String]) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut drop_connections = signal(SignalKind::user_defined1())?;
    let mut expire_locks = signal(SignalKind::user_defined2())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            _ = drop_connections.recv() => peer.drop_connections(),
            _ = expire_locks.recv() => {
                for queue in queues {
                    peer.expire_locks(queue);
                }
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait(_peer: &Peer, _queues: &[String]) -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_spec_with_every_option() {
        let queue = parse_queue("orders,sessions,max-delivery-count=3,lock-duration=1500ms,duplicate-detection=10m")
            .expect("a valid spec");
        assert_eq!(queue.name, "orders");
        assert!(queue.requires_session);
        assert_eq!(queue.max_delivery_count, 3);
        assert_eq!(queue.lock_duration, Duration::from_millis(1500));
        assert_eq!(queue.duplicate_detection, Some(Duration::from_secs(600)));
    }

    #[test]
    fn plain_queue_keeps_service_bus_defaults() {
        let queue = parse_queue("OrdersProcessed").expect("a valid spec");
        assert!(!queue.requires_session);
        assert_eq!(queue.max_delivery_count, 10);
        assert_eq!(queue.duplicate_detection, None);
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        assert!(parse_queue("").unwrap_err().contains("invalid queue name"));
        assert!(parse_queue("a/b").unwrap_err().contains("invalid queue name"));
        assert!(parse_queue("q,max-delivery-count=0").unwrap_err().contains("at least 1"));
        assert!(parse_queue("q,prefetch=3").unwrap_err().contains("unknown queue option 'prefetch'"));
        assert!(parse_duration("5h").unwrap_err().contains("use ms, s or m"));
    }
}
