//! JSON numbers read exactly from their text.
//!
//! Two rules need the text rather than a parsed value: a unit price must be judged by its exact
//! value (rust_decimal's parser rounds beyond 28 significant digits, so `19.99000…0001` would pass
//! as 19.99), and a number in the claims must fit PostgreSQL's `numeric`, whose limits are partly
//! about how the number is written (`0.0e-16383` is zero, yet has 16384 decimal places as written
//! and is refused).

use rust_decimal::Decimal;

/// The largest exponent magnitude PostgreSQL parses is below this (numeric.c refuses
/// `|exponent| >= INT_MAX / 2` before looking at the digits).
const PG_EXPONENT_LIMIT: i64 = 1_073_741_823;
/// The most decimal places a PostgreSQL `numeric` holds (NUMERIC_DSCALE_MAX).
const PG_MAX_PLACES: i64 = 16_383;
/// A PostgreSQL `numeric` is below 10^131072 in magnitude (NUMERIC_WEIGHT_MAX base-10000 digits).
const PG_MAX_MAGNITUDE_EXPONENT: i64 = 131_071;

/// Saturation bound for exponents: far beyond every limit above, far below overflow when lengths
/// (at most the 64 KiB body) are added.
const EXPONENT_SATURATION: i64 = 1 << 40;

/// A number in JSON's grammar, as written: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JsonNumber<'a> {
    negative: bool,
    integer: &'a [u8],
    fraction: &'a [u8],
    /// The written exponent, saturated at ±[`EXPONENT_SATURATION`].
    exponent: i64,
}

/// Why a unit price is out of the rules; the caller words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PriceProblem {
    Negative,
    TooManyPlaces,
    TooLarge,
}

impl<'a> JsonNumber<'a> {
    /// `None` unless `text` is exactly one JSON number.
    pub(super) fn parse(text: &'a str) -> Option<Self> {
        let bytes = text.as_bytes();
        let (negative, rest) = match bytes.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, bytes),
        };
        let integer_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (integer, rest) = rest.split_at(integer_len);
        if integer.is_empty() || (integer.len() > 1 && integer[0] == b'0') {
            return None;
        }
        let (fraction, rest) = match rest.split_first() {
            Some((b'.', rest)) => {
                let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                if len == 0 {
                    return None;
                }
                rest.split_at(len)
            }
            _ => (&[][..], rest),
        };
        let exponent = match rest.split_first() {
            None => 0,
            Some((b'e' | b'E', rest)) => {
                let (minus, digits) = match rest.split_first() {
                    Some((b'-', digits)) => (true, digits),
                    Some((b'+', digits)) => (false, digits),
                    _ => (false, rest),
                };
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let magnitude =
                    digits.iter().fold(0_i64, |n, d| (n * 10 + i64::from(d - b'0')).min(EXPONENT_SATURATION));
                if minus { -magnitude } else { magnitude }
            }
            Some(_) => return None,
        };
        Some(Self { negative, integer, fraction, exponent })
    }

    /// The digits of `integer` then `fraction`, as numbers.
    fn digits(&self) -> impl DoubleEndedIterator<Item = u8> + '_ {
        self.integer.iter().chain(self.fraction).map(|d| d - b'0')
    }

    /// Where the significant digits (no leading or trailing zeros) are, and the power of ten of
    /// the last of them; `None` for zero.
    fn significant(&self) -> Option<Significant> {
        let total = self.integer.len() + self.fraction.len();
        let skip = self.digits().take_while(|&d| d == 0).count();
        if skip == total {
            return None;
        }
        let trailing = self.digits().rev().take_while(|&d| d == 0).count();
        let power = self.exponent - self.fraction.len() as i64 + trailing as i64;
        Some(Significant { skip, len: total - skip - trailing, power })
    }

    /// Why PostgreSQL's `numeric` (hence `jsonb`) would refuse this number, if it would.
    pub(super) fn postgres_numeric_problem(self) -> Option<String> {
        if self.exponent.abs() >= PG_EXPONENT_LIMIT {
            return Some(format!("must have an exponent between -{0} and {0}", PG_EXPONENT_LIMIT - 1));
        }
        if self.fraction.len() as i64 - self.exponent > PG_MAX_PLACES {
            return Some(format!("must have at most {PG_MAX_PLACES} decimal places as written"));
        }
        match self.significant() {
            Some(s) if s.power + s.len as i64 - 1 > PG_MAX_MAGNITUDE_EXPONENT => {
                Some(format!("must be less than 10^{} in magnitude", PG_MAX_MAGNITUDE_EXPONENT + 1))
            }
            _ => None,
        }
    }

    /// The exact value as a price: non-negative (`-0` is zero), at most `max_places` decimal places
    /// once trailing zeros are dropped, at most `max`. The result is normalized (no trailing zeros).
    pub(super) fn to_price(self, max_places: u32, max: Decimal) -> Result<Decimal, PriceProblem> {
        let Some(s) = self.significant() else { return Ok(Decimal::ZERO) };
        if self.negative {
            return Err(PriceProblem::Negative);
        }
        if s.power < -i64::from(max_places) {
            return Err(PriceProblem::TooManyPlaces);
        }
        // No Decimal has more than 29 digits before the point; the rest fits an i128 (at most 29
        // digits, plus max_places after the point).
        if s.power + s.len as i64 > 29 {
            return Err(PriceProblem::TooLarge);
        }
        let significand = self.digits().skip(s.skip).take(s.len).fold(0_i128, |n, d| n * 10 + i128::from(d));
        let value = match u32::try_from(s.power) {
            Ok(power) => Decimal::try_from_i128_with_scale(significand * 10_i128.pow(power), 0),
            Err(_) => Decimal::try_from_i128_with_scale(significand, s.power.unsigned_abs() as u32),
        };
        match value {
            Ok(value) if value <= max => Ok(value),
            _ => Err(PriceProblem::TooLarge),
        }
    }
}

/// The significant digits of a non-zero [`JsonNumber`]: `len` digits after skipping `skip`, the
/// last of them worth 10^`power`.
struct Significant {
    skip: usize,
    len: usize,
    power: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> JsonNumber<'_> {
        JsonNumber::parse(text).unwrap_or_else(|| panic!("{text} is a JSON number"))
    }

    fn price(text: &str) -> Result<String, PriceProblem> {
        number(text).to_price(4, Decimal::from(1_000_000_000_000_i64)).map(|d| d.to_string())
    }

    #[test]
    fn only_json_number_grammar_is_read() {
        for good in ["0", "-0", "7", "19.99", "1e5", "1E+5", "1.5e-3", "-0.0", "10"] {
            assert!(JsonNumber::parse(good).is_some(), "{good}");
        }
        for bad in ["", "-", "01", "+1", ".5", "5.", "1e", "1e+", "1_000", "1.2.3", " 1", "1 ", "NaN", "0x10", "1e5x"] {
            assert!(JsonNumber::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn prices_are_exact() {
        assert_eq!(price("19.99"), Ok("19.99".into()));
        assert_eq!(price("1.50000"), Ok("1.5".into()));
        assert_eq!(price("1.5e2"), Ok("150".into()));
        assert_eq!(price("1e12"), Ok("1000000000000".into()));
        assert_eq!(price("1000000000000.0000"), Ok("1000000000000".into()));
        assert_eq!(price("0.0001"), Ok("0.0001".into()));
        assert_eq!(price("-0.0"), Ok("0".into()));
        assert_eq!(price("0e999999999999999999999"), Ok("0".into()));
        assert_eq!(price("-0.01"), Err(PriceProblem::Negative));
        assert_eq!(price("0.00001"), Err(PriceProblem::TooManyPlaces));
        assert_eq!(price(&format!("19.99{}1", "0".repeat(30))), Err(PriceProblem::TooManyPlaces), "no rounding");
        assert_eq!(price("1000000000000.0001"), Err(PriceProblem::TooLarge));
        assert_eq!(price("9999999999999"), Err(PriceProblem::TooLarge));
        assert_eq!(price(&"9".repeat(100)), Err(PriceProblem::TooLarge));
        assert_eq!(price("1e400"), Err(PriceProblem::TooLarge));
        assert_eq!(price("1e-400"), Err(PriceProblem::TooManyPlaces));
    }

    #[test]
    fn postgres_numeric_limits_are_those_of_postgresql_15() {
        // Each pair was run through `SELECT '<n>'::jsonb` on PostgreSQL 15: the first is stored,
        // the second refused with "value overflows numeric format".
        let pairs = [
            ("1e131071", "10e131071"),
            ("9.9e131071", "1e131072"),
            ("1e-16383", "1e-16384"),
            ("0.0e-16382", "0.0e-16383"),
            ("1.0e-16382", "1.0e-16383"),
            ("100e-16383", "100e-16384"),
            ("0e-16383", "-0e-16384"),
            ("0e1073741822", "0e1073741823"),
            ("0e131072", "0e-1073741823"),
            ("1e00000000000000000000000001", "1e99999999999999999999"),
        ];
        for (stored, refused) in pairs {
            assert_eq!(number(stored).postgres_numeric_problem(), None, "{stored}");
            assert!(number(refused).postgres_numeric_problem().is_some(), "{refused}");
        }
        let places = format!("0.{}1", "0".repeat(16_382));
        assert_eq!(number(&places).postgres_numeric_problem(), None);
        assert!(number(&format!("0.{}1", "0".repeat(16_383))).postgres_numeric_problem().is_some());
    }
}
