//! The inbound wire format, read in one pass, with the checks that serde's derive and serde_json
//! leave out.
//!
//! What those would let through: a repeated key (the derive catches it for known fields only;
//! `serde_json::Value` keeps the last one), and, inside ignored fields, strings that do not decode
//! (serde_json skips them without decoding, so invalid UTF-8 and lone surrogates pass). Their
//! errors also do not say where they happened. The readers below are hand-written visitors on
//! serde_json's deserializer instead: every key is read and compared, every string is decoded,
//! the claims are checked while they are built (no U+0000, numbers that PostgreSQL's `numeric`
//! holds, bounded nesting), and a [`Trail`] records the path to the failure, so that the rejection
//! names the field.
//!
//! serde_json's own limits stay in force: 128 levels of nesting in the whole body, strings and
//! numbers in JSON's grammar.

use super::MAX_UNIT_PRICE;
use super::decode::{InvalidOrder, MAX_PRICE_SCALE, Malformation, truncate};
use super::number::{JsonNumber, PriceProblem};
use rust_decimal::Decimal;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;

/// Deepest nesting of objects and arrays in the claims (the claims object itself is level 1).
/// Identity-provider claims nest two or three levels; this bound keeps rejection paths short.
pub(super) const MAX_CLAIMS_DEPTH: usize = 32;

/// The key under which serde_json (feature `arbitrary_precision`) hands a number's text to a
/// visitor, as a one-entry map. It is not public API; rust_decimal's deserializer relies on the
/// same string, and the claims tests fail if it ever changes (numbers would turn into objects).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

pub(super) struct OrderMessage {
    pub correlation_id: String,
    pub customer_id: String,
    pub currency: String,
    pub items: Vec<ItemMessage>,
    pub accepted_at: Option<String>,
    pub identity: Option<IdentityMessage>,
}

pub(super) struct ItemMessage {
    pub sku: String,
    pub quantity: i64,
    /// Read exactly from the number's text: the normalized price, or the rule it breaks.
    pub unit_price: Result<Decimal, PriceProblem>,
}

pub(super) struct IdentityMessage {
    pub subject: Option<String>,
    pub claims: Option<Map<String, Value>>,
}

/// A body that could not be read as an order message.
pub(super) struct Unreadable {
    pub reason: InvalidOrder,
    /// The correlationId the body claimed, if it was read before the failure.
    pub claimed: Option<String>,
}

/// Reads one order message from the whole body (trailing characters are an error too).
pub(super) fn read(body: &[u8]) -> Result<OrderMessage, Unreadable> {
    let mut trail = Trail::default();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let result = OrderSeed { trail: &mut trail }.deserialize(&mut deserializer).and_then(|message| {
        deserializer.end()?;
        Ok(message)
    });
    result.map_err(|error| {
        let field = render(&trail.segments);
        let reason = match trail.rule {
            Some(rule) => InvalidOrder::Field { field: field.unwrap_or_else(|| "body".into()), rule },
            None => InvalidOrder::Malformed(Malformation { field, problem: error.to_string() }),
        };
        Unreadable { reason, claimed: trail.claimed.map(|id| truncate(&id, 80)) }
    })
}

/// Where a failure happened and what it was, collected while the error unwinds.
#[derive(Default)]
struct Trail {
    /// The path from the failure outwards: each reader pushes its own step when a value it was
    /// reading failed.
    segments: Vec<Segment>,
    /// One of our rules that failed while reading (the claims' rules), as opposed to the JSON or
    /// its shape.
    rule: Option<String>,
    /// The correlationId, once read: kept here, not in the reader, so that a failure after it
    /// can still be logged against it.
    claimed: Option<String>,
}

enum Segment {
    Field(&'static str),
    Key(String),
    Index(usize),
}

impl Trail {
    /// Passes `result` on, recording `segment` as a step of the failure's path if it failed.
    fn within<T, E>(&mut self, segment: impl FnOnce() -> Segment, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            self.segments.push(segment());
        }
        result
    }

    /// Fails the read with one of our rules, worded for the value being read.
    fn broken<E: de::Error>(&mut self, rule: String) -> E {
        let error = E::custom(&rule);
        self.rule = Some(rule);
        error
    }
}

/// The path as `identity.claims.roles[2]`; keys that are not plain words are quoted
/// (`identity.claims["a b"]`), and long paths and keys are cut, since attackers write them.
fn render(segments: &[Segment]) -> Option<String> {
    const MAX_PATH: usize = 160;
    const MAX_KEY: usize = 40;
    if segments.is_empty() {
        return None;
    }
    let mut path = String::new();
    for segment in segments.iter().rev() {
        if path.len() > MAX_PATH {
            path.push('…');
            break;
        }
        let dot = if path.is_empty() { "" } else { "." };
        match segment {
            Segment::Field(name) => write!(path, "{dot}{name}"),
            Segment::Key(key)
                if (1..=MAX_KEY).contains(&key.len())
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                write!(path, "{dot}{key}")
            }
            Segment::Key(key) => write!(path, "[{}]", Value::String(truncate(key, MAX_KEY))),
            Segment::Index(index) => write!(path, "[{index}]"),
        }
        .expect("writing to a String");
    }
    Some(path)
}

/// A key's text, borrowed from the body when it has no escapes.
struct KeyText;

impl<'de> DeserializeSeed<'de> for KeyText {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyText {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }
    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
    fn visit_string<E>(self, key: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key))
    }
}

/// The keys of one object that are not the reader's own fields, to refuse a repeated one. The set
/// is made at the first such key: most objects have none.
#[derive(Default)]
struct OtherKeys<'de>(Option<HashSet<Cow<'de, str>>>);

impl<'de> OtherKeys<'de> {
    fn insert<E: de::Error>(&mut self, key: Cow<'de, str>, trail: &mut Trail) -> Result<(), E> {
        match self.0.get_or_insert_default().replace(key) {
            None => Ok(()),
            Some(repeated) => {
                trail.segments.push(Segment::Key(repeated.into_owned()));
                Err(E::custom("duplicate key"))
            }
        }
    }
}

/// Refuses the second occurrence of a known field, in either spelling.
fn first_time<T, E: de::Error>(slot: &Option<T>, field: &'static str, key: &str, trail: &mut Trail) -> Result<(), E> {
    if slot.is_some() { Err(duplicate(field, key, trail)) } else { Ok(()) }
}

fn duplicate<E: de::Error>(field: &'static str, key: &str, trail: &mut Trail) -> E {
    trail.segments.push(Segment::Field(field));
    E::custom(if key == field {
        "duplicate key".to_owned()
    } else {
        format!("duplicate key ({key} is another spelling of {field})")
    })
}

/// Reads the value of `field`, recording the field in the path if it fails.
fn value<'de, T: serde::Deserialize<'de>, A: MapAccess<'de>>(
    map: &mut A,
    field: &'static str,
    trail: &mut Trail,
) -> Result<T, A::Error> {
    let value = map.next_value();
    trail.within(|| Segment::Field(field), value)
}

/// Reads an unknown field's value without keeping it, checked like the rest.
fn skip<'de, A: MapAccess<'de>>(
    map: &mut A,
    key: &Cow<'de, str>,
    others: &mut OtherKeys<'de>,
    trail: &mut Trail,
) -> Result<(), A::Error> {
    others.insert(key.clone(), trail)?;
    let skipped = map.next_value_seed(Ignored { trail: &mut *trail });
    trail.within(|| Segment::Key(key.clone().into_owned()), skipped)
}

struct OrderSeed<'t> {
    trail: &'t mut Trail,
}

impl<'de> DeserializeSeed<'de> for OrderSeed<'_> {
    type Value = OrderMessage;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<OrderMessage, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OrderSeed<'_> {
    type Value = OrderMessage;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an order message (a JSON object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderMessage, A::Error> {
        let trail = self.trail;
        let (mut customer_id, mut currency, mut items) = (None, None, None);
        let (mut accepted_at, mut identity) = (None, None);
        let mut others = OtherKeys::default();
        while let Some(key) = map.next_key_seed(KeyText)? {
            match &*key {
                "correlationId" | "CorrelationId" => {
                    if trail.claimed.is_some() {
                        return Err(duplicate("correlationId", &key, trail));
                    }
                    trail.claimed = Some(value(&mut map, "correlationId", trail)?);
                }
                "customerId" | "CustomerId" => {
                    first_time(&customer_id, "customerId", &key, trail)?;
                    customer_id = Some(value(&mut map, "customerId", trail)?);
                }
                "currency" | "Currency" => {
                    first_time(&currency, "currency", &key, trail)?;
                    currency = Some(value(&mut map, "currency", trail)?);
                }
                "items" | "Items" => {
                    first_time(&items, "items", &key, trail)?;
                    let read = map.next_value_seed(ItemsSeed { trail: &mut *trail });
                    items = Some(trail.within(|| Segment::Field("items"), read)?);
                }
                "acceptedAt" | "AcceptedAt" => {
                    first_time(&accepted_at, "acceptedAt", &key, trail)?;
                    accepted_at = Some(value::<Option<String>, _>(&mut map, "acceptedAt", trail)?);
                }
                "identity" | "Identity" => {
                    first_time(&identity, "identity", &key, trail)?;
                    let read = map.next_value_seed(IdentitySeed { trail: &mut *trail });
                    identity = Some(trail.within(|| Segment::Field("identity"), read)?);
                }
                _ => skip(&mut map, &key, &mut others, trail)?,
            }
        }
        let customer_id = customer_id.ok_or_else(|| de::Error::missing_field("customerId"))?;
        let currency = currency.ok_or_else(|| de::Error::missing_field("currency"))?;
        let items = items.ok_or_else(|| de::Error::missing_field("items"))?;
        Ok(OrderMessage {
            correlation_id: trail.claimed.take().ok_or_else(|| de::Error::missing_field("correlationId"))?,
            customer_id,
            currency,
            items,
            accepted_at: accepted_at.flatten(),
            identity: identity.flatten(),
        })
    }
}

struct ItemsSeed<'t> {
    trail: &'t mut Trail,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Vec<ItemMessage>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = Vec<ItemMessage>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of order lines")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let trail = self.trail;
        let mut items = Vec::new();
        loop {
            let read = seq.next_element_seed(ItemSeed { trail: &mut *trail });
            match trail.within(|| Segment::Index(items.len()), read)? {
                Some(item) => items.push(item),
                None => return Ok(items),
            }
        }
    }
}

struct ItemSeed<'t> {
    trail: &'t mut Trail,
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = ItemMessage;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ItemMessage, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_> {
    type Value = ItemMessage;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an order line (a JSON object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ItemMessage, A::Error> {
        let trail = self.trail;
        let (mut sku, mut quantity, mut unit_price) = (None, None, None);
        let mut others = OtherKeys::default();
        while let Some(key) = map.next_key_seed(KeyText)? {
            match &*key {
                "sku" | "Sku" => {
                    first_time(&sku, "sku", &key, trail)?;
                    sku = Some(value(&mut map, "sku", trail)?);
                }
                "quantity" | "Quantity" => {
                    first_time(&quantity, "quantity", &key, trail)?;
                    quantity = Some(value(&mut map, "quantity", trail)?);
                }
                "unitPrice" | "UnitPrice" => {
                    first_time(&unit_price, "unitPrice", &key, trail)?;
                    let read = map.next_value_seed(PriceSeed);
                    unit_price = Some(trail.within(|| Segment::Field("unitPrice"), read)?);
                }
                _ => skip(&mut map, &key, &mut others, trail)?,
            }
        }
        Ok(ItemMessage {
            sku: sku.ok_or_else(|| de::Error::missing_field("sku"))?,
            quantity: quantity.ok_or_else(|| de::Error::missing_field("quantity"))?,
            unit_price: unit_price.ok_or_else(|| de::Error::missing_field("unitPrice"))?,
        })
    }
}

/// A unit price from a JSON number or a string holding one, read from its text.
struct PriceSeed;

impl<'de> DeserializeSeed<'de> for PriceSeed {
    type Value = Result<Decimal, PriceProblem>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PriceSeed {
    type Value = Result<Decimal, PriceProblem>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decimal number (a JSON number, or a string holding one)")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        let number = JsonNumber::parse(text).ok_or_else(|| E::invalid_value(Unexpected::Str(text), &self))?;
        Ok(number.to_price(MAX_PRICE_SCALE, MAX_UNIT_PRICE))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        self.visit_str(&n.to_string())
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        self.visit_str(&n.to_string())
    }
    /// A JSON number: serde_json hands its text over as the one entry of [`NUMBER_TOKEN`].
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        match map.next_key_seed(KeyText)? {
            Some(key) if key == NUMBER_TOKEN => map.next_value_seed(self),
            _ => Err(de::Error::invalid_type(Unexpected::Map, &self)),
        }
    }
}

struct IdentitySeed<'t> {
    trail: &'t mut Trail,
}

impl<'de> DeserializeSeed<'de> for IdentitySeed<'_> {
    type Value = Option<IdentityMessage>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for IdentitySeed<'_> {
    type Value = Option<IdentityMessage>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an identity (a JSON object, or null)")
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let trail = self.trail;
        let (mut subject, mut claims) = (None, None);
        let mut others = OtherKeys::default();
        while let Some(key) = map.next_key_seed(KeyText)? {
            match &*key {
                "subject" | "Subject" => {
                    first_time(&subject, "subject", &key, trail)?;
                    subject = Some(value::<Option<String>, _>(&mut map, "subject", trail)?);
                }
                "claims" | "Claims" => {
                    first_time(&claims, "claims", &key, trail)?;
                    let read = map.next_value_seed(ClaimsSeed { trail: &mut *trail });
                    claims = Some(trail.within(|| Segment::Field("claims"), read)?);
                }
                _ => skip(&mut map, &key, &mut others, trail)?,
            }
        }
        Ok(Some(IdentityMessage { subject: subject.flatten(), claims: claims.flatten() }))
    }
}

/// The claims: a JSON object, or null.
struct ClaimsSeed<'t> {
    trail: &'t mut Trail,
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Option<Map<String, Value>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = Option<Map<String, Value>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("claims (a JSON object, or null)")
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let claims = Claim { trail: self.trail, depth: 1 };
        match claims.visit_map(map)? {
            Value::Object(claims) => Ok(Some(claims)),
            // Only a number's text reaches here as a map yet is not an object (and serde_json's
            // deserialize_map refuses numbers before that); refused all the same.
            _ => Err(de::Error::invalid_type(Unexpected::Other("number"), &"claims (a JSON object, or null)")),
        }
    }
}

/// One value in the claims, at nesting `depth`, built as a `serde_json::Value` and held to what
/// PostgreSQL's `jsonb` stores: no U+0000 in strings or keys (jsonb refuses `\u0000`), numbers
/// within `numeric`'s limits, no repeated keys, at most [`MAX_CLAIMS_DEPTH`] levels.
struct Claim<'t> {
    trail: &'t mut Trail,
    depth: usize,
}

impl Claim<'_> {
    fn nested<E: de::Error>(&mut self) -> Result<Claim<'_>, E> {
        if self.depth > MAX_CLAIMS_DEPTH {
            return Err(self.trail.broken(format!("must not nest deeper than {MAX_CLAIMS_DEPTH} levels")));
        }
        Ok(Claim { trail: &mut *self.trail, depth: self.depth + 1 })
    }

    fn text<E: de::Error>(&mut self, text: &str) -> Result<(), E> {
        if text.contains('\0') { Err(self.trail.broken("must not contain U+0000".into())) } else { Ok(()) }
    }

    fn number<E: de::Error>(&mut self, text: &str) -> Result<Value, E> {
        let problem = JsonNumber::parse(text)
            .map(|number| number.postgres_numeric_problem())
            .unwrap_or_else(|| Some("must be a JSON number".into()));
        if let Some(problem) = problem {
            return Err(self.trail.broken(problem));
        }
        Number::from_str(text).map(Value::Number).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for Claim<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Claim<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E: de::Error>(mut self, n: i64) -> Result<Value, E> {
        self.number(&n.to_string())
    }
    fn visit_u64<E: de::Error>(mut self, n: u64) -> Result<Value, E> {
        self.number(&n.to_string())
    }
    fn visit_f64<E: de::Error>(mut self, n: f64) -> Result<Value, E> {
        self.number(&n.to_string())
    }
    fn visit_str<E: de::Error>(mut self, text: &str) -> Result<Value, E> {
        self.text(text)?;
        Ok(Value::String(text.to_owned()))
    }
    fn visit_string<E: de::Error>(mut self, text: String) -> Result<Value, E> {
        self.text(&text)?;
        Ok(Value::String(text))
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        let nested = self.nested()?;
        let mut values = Vec::new();
        loop {
            let read = seq.next_element_seed(Claim { trail: &mut *nested.trail, depth: nested.depth });
            match nested.trail.within(|| Segment::Index(values.len()), read)? {
                Some(value) => values.push(value),
                None => return Ok(Value::Array(values)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        let Some(first) = map.next_key_seed(KeyText)? else {
            self.nested::<A::Error>()?;
            return Ok(Value::Object(Map::new()));
        };
        if first == NUMBER_TOKEN {
            let text: String = map.next_value()?;
            return self.number(&text);
        }
        let nested = self.nested()?;
        let mut object = Map::new();
        let mut key = first;
        loop {
            if key.contains('\0') {
                return Err(nested.trail.broken("must not have a key containing U+0000".into()));
            }
            match object.entry(key.into_owned()) {
                Entry::Occupied(repeated) => {
                    nested.trail.segments.push(Segment::Key(repeated.key().clone()));
                    return Err(de::Error::custom("duplicate key"));
                }
                Entry::Vacant(entry) => {
                    let read = map.next_value_seed(Claim { trail: &mut *nested.trail, depth: nested.depth });
                    let value = nested.trail.within(|| Segment::Key(entry.key().clone()), read)?;
                    entry.insert(value);
                }
            }
            match map.next_key_seed(KeyText)? {
                Some(next) => key = next,
                None => return Ok(Value::Object(object)),
            }
        }
    }
}

/// An unknown field's value: not kept, but read in full, so that it is valid JSON in the same
/// sense as the rest (decoded strings, no repeated keys).
struct Ignored<'t> {
    trail: &'t mut Trail,
}

impl<'de> DeserializeSeed<'de> for Ignored<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Ignored<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let trail = self.trail;
        for index in 0.. {
            let read = seq.next_element_seed(Ignored { trail: &mut *trail });
            if trail.within(|| Segment::Index(index), read)?.is_none() {
                break;
            }
        }
        Ok(())
    }
    /// An object, or a number's text under [`NUMBER_TOKEN`]: either way one key at a time.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let trail = self.trail;
        let mut keys = OtherKeys::default();
        while let Some(key) = map.next_key_seed(KeyText)? {
            skip(&mut map, &key, &mut keys, trail)?;
        }
        Ok(())
    }
}
