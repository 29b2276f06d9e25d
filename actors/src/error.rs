//! Error causes kept whole. The ports' errors are broker- and database-neutral, yet what the
//! client library said (and what it says was the cause of that) is what an operator needs, so
//! an adapter wraps the library's error in a [`Cause`] as the `#[source]` of its own error
//! instead of flattening it to text. [`Chain`] renders an error with all its causes on one line,
//! for logs and for the failure headers of a message.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The error a dependency reported, shared (the same failure is reported for every order of a
/// batch) and kept with its own causes.
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync>);

impl Cause {
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// A cause that is only a text (in-process adapters, fakes).
    pub fn text(message: impl Into<String>) -> Self {
        #[derive(Debug)]
        struct Text(String);
        impl fmt::Display for Text {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Error for Text {}
        Self::new(Text(message.into()))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// Two causes are the same when they read the same (errors of client libraries have no equality).
impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Chain(self).to_string() == Chain(other).to_string()
    }
}

impl Eq for Cause {}

/// An error and every cause below it, `: `-separated: `persist failed: database unavailable:
/// error communicating with database: Connection refused (os error 111)`. A cause whose text the
/// error above it already ends with is not repeated.
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !shown.ends_with(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            next = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database unavailable")]
    struct Outer(#[source] Cause);

    #[test]
    fn the_chain_shows_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = Outer(Cause::new(io));
        assert_eq!(Chain(&outer).to_string(), "database unavailable: Connection refused");
        assert_eq!(Cause::text("a"), Cause::text("a"));
    }
}
