//! How a setting is declared: once, beside the component that uses it.
//!
//! Every component's configuration is a struct deriving [`clap::Args`]. Each field carries, in
//! one place, its doc (what `--help` prints), its flag (the field's name), its environment
//! variable, its default and its bounds (the value parser). The composition root flattens the
//! component structs into its command line and hands each component its own struct whole, so
//! nothing is declared or converted a second time. `Default` of a component config is what the
//! command line yields when nothing is given ([`defaults`]), so the defaults exist once too.
//!
//! The structs also derive `Serialize` with the same field names (and values written the way
//! their parsers read them), which lets the startup log show the settings (passwords masked) and
//! lets a test or a benchmark hand a child worker exactly the settings it holds.

use clap::{Args, Command, FromArgMatches};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The value of `T` when no flag and no environment variable is given: its declared defaults.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    // Environment variables are ignored here: a default must not depend on the caller's env.
    let command = T::augment_args(Command::new("defaults").no_binary_name(true)).mut_args(|arg| arg.env(None));
    let matches = command.try_get_matches_from(std::iter::empty::<String>()).expect("the declared defaults parse");
    T::from_arg_matches(&matches).expect("the declared defaults fit their fields")
}

/// Parses `250ms`, `2s`, `1m`, or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("expected a duration such as 250ms, 2s or 1m, got {text:?}"))?;
    match unit {
        "" | "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("unknown unit in {text:?} (use ms, s or m)")),
    }
}

/// A duration greater than zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

/// The shortest exact spelling that [`parse_duration`] reads back.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms != 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms != 0 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `#[serde(with = "duration_text")]`: a duration written as [`format_duration`] spells it.
pub mod duration_text {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}

/// A number of bytes, written `512KiB`, `32MiB`, `1GiB` or as a bare number; greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 =
            number.parse().map_err(|_| format!("expected a size such as 512KiB, 32MiB or 1GiB, got {text:?}"))?;
        let scale = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(format!("unknown unit in {text:?} (use KiB, MiB or GiB)")),
        };
        match n.checked_mul(scale) {
            Some(0) => Err("must be greater than zero".into()),
            Some(bytes) => Ok(Self(bytes)),
            None => Err(format!("{text} is too large")),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")].into_iter().find(|(s, _)| n.is_multiple_of(*s)) {
            Some((scale, unit)) => write!(f, "{}{unit}", n / scale),
            None => write!(f, "{n}"),
        }
    }
}

impl From<ByteSize> for String {
    fn from(size: ByteSize) -> Self {
        size.to_string()
    }
}

/// A comma-separated list of durations, each greater than zero: `1s,4s,16s,1m`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub struct Durations(pub Vec<Duration>);

impl Durations {
    /// Longest delay a RabbitMQ queue accepts as `x-message-ttl` (an unsigned 32-bit number of
    /// milliseconds); the retry queues are declared with these delays.
    pub const MAX: Duration = Duration::from_millis(u32::MAX as u64);
}

impl FromStr for Durations {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() || delays.iter().any(Duration::is_zero) {
            return Err("needs at least one delay, each greater than zero".into());
        }
        if let Some(long) = delays.iter().find(|d| **d > Self::MAX) {
            return Err(format!(
                "{} is longer than the broker accepts (at most {:?})",
                format_duration(*long),
                Self::MAX
            ));
        }
        Ok(Self(delays))
    }
}

impl fmt::Display for Durations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spelled: Vec<String> = self.0.iter().map(|d| format_duration(*d)).collect();
        f.write_str(&spelled.join(","))
    }
}

impl From<Durations> for String {
    fn from(durations: Durations) -> Self {
        durations.to_string()
    }
}

impl std::ops::Deref for Durations {
    type Target = [Duration];
    fn deref(&self) -> &[Duration] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Args)]
    struct Example {
        /// A number.
        #[arg(long, env = "CONFIG_TEST_EXAMPLE_NUMBER", default_value_t = 7)]
        number: u32,
        /// A duration.
        #[arg(long, env = "CONFIG_TEST_EXAMPLE_WAIT", default_value = "2s", value_parser = parse_duration)]
        wait: Duration,
    }

    #[test]
    fn defaults_are_the_declared_ones_whatever_the_environment_says() {
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("CONFIG_TEST_EXAMPLE_NUMBER", "9") };
        let example: Example = defaults();
        assert_eq!((example.number, example.wait), (7, Duration::from_secs(2)));
    }

    #[test]
    fn durations_parse_and_print_alike() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_millis(3)));
        assert!(parse_duration("2h").unwrap_err().contains("unknown unit"));
        for text in ["0ms", "1ms", "999ms", "1s", "90s", "1m", "60m"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn byte_sizes_parse_and_print_alike() {
        for text in ["1", "512KiB", "32MiB", "2GiB", "1536KiB"] {
            assert_eq!(text.parse::<ByteSize>().unwrap().to_string(), text);
        }
        assert_eq!("32MiB".parse::<ByteSize>(), Ok(ByteSize(32 << 20)));
        assert!("0MiB".parse::<ByteSize>().unwrap_err().contains("greater than zero"));
        assert!("1TB".parse::<ByteSize>().unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn delay_lists_parse_and_print_alike() {
        assert_eq!("500ms, 2s,1m".parse::<Durations>().unwrap().to_string(), "500ms,2s,1m");
        assert!("".parse::<Durations>().is_err());
        assert!("1s,0s".parse::<Durations>().is_err());
        assert!("1s,soon".parse::<Durations>().unwrap_err().contains("soon"));
        assert!("1s,100000m".parse::<Durations>().unwrap_err().contains("longer than the broker accepts"));
    }
}
