//! Connection strings that may hold passwords: shown and logged with the password masked.
//!
//! Two layers, because a password can reach a log line by two roads:
//! - [`SecretUrl`] shows itself masked (`Display`, `Debug`, `Serialize`), for the lines this
//!   service writes about a URL, such as the settings line;
//! - every password of a [`SecretUrl`] is also registered here when the URL is made, and
//!   [`mask`] replaces each registered password in any text by `***`. The log writer passes every
//!   line through it, which covers the texts this service does not write
//!   itself: a client library's or a broker's error that quotes a URL, however it spells it.
//!
//! What is guaranteed: no registered password, as written in its URL or percent-decoded, is in a
//! line the log writer writes (`src/telemetry.rs`). The price: a short password that is also an ordinary
//! word (`guest`) is masked wherever that word appears in a line.

use serde::{Serialize, Serializer};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::sync::RwLock;

/// Every password registered, longest first (so a password inside a longer one is masked whole).
static REGISTERED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers `secret` (and its percent-decoded spelling) to be masked in every line [`mask`]ed.
pub fn register(secret: &str) {
    let decoded = percent_decoded(secret);
    let mut registered = REGISTERED.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    for spelling in [secret.to_owned(), decoded] {
        if !spelling.is_empty() && !registered.contains(&spelling) {
            registered.push(spelling);
        }
    }
    registered.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered password replaced by `***`.
pub fn mask(text: &str) -> Cow<'_, str> {
    let registered = REGISTERED.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut masked = Cow::Borrowed(text);
    for secret in registered.iter() {
        if masked.contains(secret.as_str()) {
            masked = Cow::Owned(masked.replace(secret.as_str(), "***"));
        }
    }
    masked
}

/// `text`, a URL or several separated by commas, with each URL's password masked: for showing a
/// value that was refused before it became a [`SecretUrl`].
pub fn redacted_list(text: &str) -> String {
    text.split(',').map(|entry| SecretUrl(entry.to_owned()).redacted()).collect::<Vec<_>>().join(",")
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// A URL whose password never reaches a log line, an error message or `--help`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

thread_local! {
    static EXPOSED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with [`SecretUrl`]s serializing in clear: for handing settings to a child process
/// (tests, benchmarks), never for anything that is shown or logged.
pub fn exposing_secrets<T>(f: impl FnOnce() -> T) -> T {
    EXPOSED.set(true);
    let result = f();
    EXPOSED.set(false);
    result
}

/// Whether secrets serialize in clear right now (inside [`exposing_secrets`]).
pub fn exposing() -> bool {
    EXPOSED.get()
}

impl SecretUrl {
    /// The URL; its password, if any, is registered for [`mask`].
    pub fn new(url: impl Into<String>) -> Self {
        let url = Self(url.into());
        if let Some(password) = url.password() {
            register(password);
        }
        url
    }

    /// The authority of the URL: its start and end in the text, and where the userinfo ends (the
    /// `@`), if it has one.
    fn authority(&self) -> Option<(usize, usize, Option<usize>)> {
        let url = &self.0;
        // Without a scheme (a mistyped value) the authority starts the text, so a password in it
        // is still found and masked.
        let start = url.find("://").map_or(0, |i| i + 3);
        let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
        Some((start, end, url[start..end].rfind('@').map(|at| start + at)))
    }

    /// The password, as written in the URL (percent-encoded).
    fn password(&self) -> Option<&str> {
        let (start, _, at) = self.authority()?;
        self.0[start..at?].split_once(':').map(|(_, password)| password)
    }

    /// `host:port` (without user or password), for saying which server a connection reached;
    /// the port is `default_port` when the URL names none.
    pub fn host_port(&self, default_port: u16) -> String {
        let Some((start, end, at)) = self.authority() else { return self.redacted() };
        let host = &self.0[at.map_or(start, |at| at + 1)..end];
        let has_port = host.rsplit_once(':').is_some_and(|(_, port)| !port.contains(']'));
        if has_port { host.to_owned() } else { format!("{host}:{default_port}") }
    }

    /// Serialized as [`Serialize`] does: in clear inside [`exposing_secrets`], else masked.
    pub(crate) fn shown(&self) -> Cow<'_, str> {
        if EXPOSED.get() { Cow::Borrowed(&self.0) } else { Cow::Owned(self.redacted()) }
    }

    /// The real URL, for the client library only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password part of the authority replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        match (self.authority(), self.password()) {
            (Some((start, _, Some(at))), Some(_)) => {
                let user = url[start..at].split_once(':').map_or("", |(user, _)| user);
                format!("{}{user}:***{}", &url[..start], &url[at..])
            }
            _ => url.clone(),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.shown())
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.find("://") {
            Some(i) if i > 0 => Ok(Self::new(s)),
            _ => Err("must be a URL such as scheme://host:port/path".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_everywhere_it_is_shown() {
        let url = SecretUrl::new("amqp://guest:s3cret@rabbit:5672/%2f");
        assert_eq!(url.redacted(), "amqp://guest:***@rabbit:5672/%2f");
        assert_eq!(format!("{url} {url:?}"), "amqp://guest:***@rabbit:5672/%2f amqp://guest:***@rabbit:5672/%2f");
        assert_eq!(serde_json::to_string(&url).unwrap(), "\"amqp://guest:***@rabbit:5672/%2f\"");
        assert_eq!(url.expose(), "amqp://guest:s3cret@rabbit:5672/%2f");
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        for plain in ["postgres://postgres@127.0.0.1/db", "redis://127.0.0.1:6379", "redis://h/?a=b@c"] {
            assert_eq!(SecretUrl::new(plain).redacted(), plain);
        }
        assert_eq!(SecretUrl::new("redis://:pw@h:6379").redacted(), "redis://:***@h:6379");
    }

    #[test]
    fn text_that_is_not_a_url_is_refused() {
        assert!("localhost:5432".parse::<SecretUrl>().is_err());
        assert!("postgres://x".parse::<SecretUrl>().is_ok());
    }

    #[test]
    fn registered_passwords_are_masked_in_any_text_however_spelled() {
        let _ = SecretUrl::new("amqp://app:p%40ss-Registered1@rabbit-1:5672/%2f");
        let lapin_error = "IO error: auth failed for app / p@ss-Registered1 at p%40ss-Registered1";
        assert_eq!(mask(lapin_error), "IO error: auth failed for app / *** at ***");
        assert_eq!(mask("nothing secret here"), "nothing secret here");
    }

    #[test]
    fn a_refused_list_is_shown_masked() {
        assert_eq!(redacted_list("amqp://u:pw@n1/%2f,,http://v:pw2@n2"), "amqp://u:***@n1/%2f,,http://v:***@n2");
    }

    #[test]
    fn host_and_port_never_show_the_user_or_password() {
        assert_eq!(SecretUrl::new("amqp://u:pw@rabbit-2:5682/%2f").host_port(5672), "rabbit-2:5682");
        assert_eq!(SecretUrl::new("amqps://u:pw@rabbit-3/%2f").host_port(5671), "rabbit-3:5671");
        assert_eq!(SecretUrl::new("amqp://[::1]/%2f").host_port(5672), "[::1]:5672");
        assert_eq!(SecretUrl::new("amqp://[::1]:5681").host_port(5672), "[::1]:5681");
    }
}
