//! Connection strings that may hold passwords: shown and logged with the password masked.

use serde::{Serialize, Serializer};
use std::cell::Cell;
use std::fmt;

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
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The real URL, for the client library only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password part of the authority replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return url.clone();
        };
        let authority_end = url[scheme_end..].find(['/', '?', '#']).map_or(url.len(), |i| scheme_end + i);
        let authority = &url[scheme_end..authority_end];
        let Some(at) = authority.rfind('@') else {
            return url.clone();
        };
        match authority[..at].split_once(':') {
            Some((user, _password)) => format!("{}{user}:***{}", &url[..scheme_end], &url[scheme_end + at..]),
            None => url.clone(),
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
        if EXPOSED.get() { serializer.serialize_str(&self.0) } else { serializer.serialize_str(&self.redacted()) }
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.find("://") {
            Some(i) if i > 0 => Ok(Self(s.to_owned())),
            _ => Err("must be a URL such as scheme://host:port/path".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SecretUrl;

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
}
