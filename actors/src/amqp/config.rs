use crate::config::{duration_text, format_duration, parse_duration};
use crate::messaging::parse_queue_name;
use crate::secret::SecretUrl;
use clap::{ArgAction, Args, ValueEnum, value_parser};
use serde::Serialize;
use std::time::Duration;

/// Where the RabbitMQ broker is and how this service's queues are declared on it.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct AmqpConfig {
    /// AMQP 0-9-1 broker URL (`amqps://` for TLS), or the URLs of a cluster's nodes separated by
    /// commas: the worker connects to the first that answers, and to another when it loses it.
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: AmqpUrls,
    /// Queue the poison messages are moved to, each with its reason [default: <inbound-queue>.dlq].
    #[arg(long, env = "ORDER_PROCESS_DEAD_LETTER_QUEUE", value_parser = parse_queue_name)]
    pub dead_letter_queue: Option<String>,
    /// Type of the queues this service declares. Existing queues keep the type they were
    /// declared with.
    #[arg(long, env = "ORDER_PROCESS_QUEUE_TYPE", value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,
    /// Quorum queues: deliveries of one message (counting redeliveries after a crash) before the
    /// broker dead-letters it, so a message that crashes the worker cannot loop forever.
    #[arg(long, env = "ORDER_PROCESS_DELIVERY_LIMIT", default_value_t = 50, value_parser = value_parser!(u32).range(1..))]
    pub delivery_limit: u32,
    /// Strict order across replicas: one replica consumes, the others stand by (RabbitMQ single
    /// active consumer on the inbound queue), at the throughput of one.
    #[arg(long, env = "ORDER_PROCESS_SINGLE_ACTIVE_CONSUMER", default_value_t = false, action = ArgAction::Set)]
    pub single_active_consumer: bool,
    /// How long a move to a retry or dead-letter queue waits for the broker's confirm (and each
    /// declaration of the queues on the way). Past it the move counts as failed: the copy is tried
    /// again, and at worst the message goes back to the inbound queue (100ms to 1m).
    #[arg(long, env = "ORDER_PROCESS_SETTLE_CONFIRM_TIMEOUT", default_value = "5s", value_parser = parse_settle_confirm_timeout)]
    #[serde(with = "duration_text")]
    pub settle_confirm_timeout: Duration,
}

/// The bounds of `ORDER_PROCESS_SETTLE_CONFIRM_TIMEOUT`: long enough for a loaded broker's
/// confirm, short enough that a broker that stopped answering holds a delivery for a minute at
/// most.
const SETTLE_CONFIRM_TIMEOUT: std::ops::RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(60);

fn parse_settle_confirm_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if SETTLE_CONFIRM_TIMEOUT.contains(&timeout) {
        Ok(timeout)
    } else {
        Err(format!(
            "must be between {} and {}",
            format_duration(*SETTLE_CONFIRM_TIMEOUT.start()),
            format_duration(*SETTLE_CONFIRM_TIMEOUT.end())
        ))
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

impl AmqpConfig {
    /// The dead-letter queue of `inbound`: the configured one, or `{inbound}.dlq`.
    pub fn dead_letter_queue_of(&self, inbound: &str) -> String {
        self.dead_letter_queue.clone().unwrap_or_else(|| format!("{inbound}.dlq"))
    }
}

/// The broker's URLs, in the order they are tried; at least one. Every password is registered for
/// masking ([`crate::secret`]) as the URLs are read, and shown masked.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrls(Vec<SecretUrl>);

impl AmqpUrls {
    /// The URLs, in the order they are tried.
    pub fn iter(&self) -> impl Iterator<Item = &SecretUrl> {
        self.0.iter()
    }

    /// The first URL: for tools that talk to one node.
    pub fn first(&self) -> &SecretUrl {
        &self.0[0]
    }
}

impl From<SecretUrl> for AmqpUrls {
    fn from(url: SecretUrl) -> Self {
        Self(vec![url])
    }
}

impl std::str::FromStr for AmqpUrls {
    type Err = String;

    /// Comma-separated URLs; an entry that is empty or not an `amqp://` or `amqps://` URL is
    /// refused, naming `AMQP_URL` and its position (never its text, which may hold a password).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let entries: Vec<&str> = text.split(',').map(str::trim).collect();
        let count = entries.len();
        let urls = entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                let refused = |why: &str| format!("AMQP_URL entry {} of {count}: {why}", i + 1);
                if entry.is_empty() {
                    return Err(refused("empty"));
                }
                if !(entry.starts_with("amqp://") || entry.starts_with("amqps://")) {
                    return Err(refused("must start with amqp:// or amqps://"));
                }
                let url = SecretUrl::new(entry);
                match url.host_port(0).split_once(':') {
                    Some(("" | "[]", _)) | None => Err(refused("names no host")),
                    Some(_) => Ok(url),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(urls))
    }
}

impl std::fmt::Display for AmqpUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<String> = self.0.iter().map(SecretUrl::redacted).collect();
        f.write_str(&shown.join(","))
    }
}

impl std::fmt::Debug for AmqpUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Serialize for AmqpUrls {
    /// As the URLs were given, each masked (in clear inside [`crate::secret::exposing_secrets`]).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shown: Vec<_> = self.0.iter().map(SecretUrl::shown).collect();
        serializer.serialize_str(&shown.join(","))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    /// Replicated, for a RabbitMQ cluster.
    Quorum,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_urls_are_read_in_order_and_shown_masked() {
        let urls: AmqpUrls = "amqp://a:pw-one@n1:5681/%2f, amqp://b:pw-two@n2:5682/%2f,amqps://n3/%2f".parse().unwrap();
        let nodes: Vec<_> = urls.iter().map(|u| u.host_port(5672)).collect();
        assert_eq!(nodes, ["n1:5681", "n2:5682", "n3:5672"]);
        assert_eq!(urls.first().expose(), "amqp://a:pw-one@n1:5681/%2f");
        let shown = "amqp://a:***@n1:5681/%2f,amqp://b:***@n2:5682/%2f,amqps://n3/%2f";
        assert_eq!(urls.to_string(), shown);
        assert_eq!(format!("{urls:?}"), shown);
        assert_eq!(serde_json::to_string(&urls).unwrap(), format!("\"{shown}\""));
        assert_eq!(crate::secret::mask("refused: pw-two, pw-one"), "refused: ***, ***");
    }

    #[test]
    fn a_bad_entry_is_refused_by_its_position_without_its_text() {
        for (text, error) in [
            ("amqp://u:pw@n1/%2f,", "AMQP_URL entry 2 of 2: empty"),
            ("amqp://u:pw@n1/%2f,,amqp://n3", "AMQP_URL entry 2 of 3: empty"),
            ("amqp://n1,http://u:secret@n2", "AMQP_URL entry 2 of 2: must start with amqp:// or amqps://"),
            ("u:secret@n1:5672", "AMQP_URL entry 1 of 1: must start with amqp:// or amqps://"),
            ("amqp://u:secret@/%2f", "AMQP_URL entry 1 of 1: names no host"),
        ] {
            assert_eq!(text.parse::<AmqpUrls>().unwrap_err(), error, "{text}");
        }
    }

    #[test]
    fn the_settle_confirm_timeout_is_bounded() {
        assert_eq!(AmqpConfig::default().settle_confirm_timeout, Duration::from_secs(5));
        assert_eq!(parse_settle_confirm_timeout("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_settle_confirm_timeout("1m"), Ok(Duration::from_secs(60)));
        for refused in ["99ms", "0", "61s"] {
            let error = parse_settle_confirm_timeout(refused).unwrap_err();
            assert_eq!(error, "must be between 100ms and 1m", "{refused}");
        }
    }
}
