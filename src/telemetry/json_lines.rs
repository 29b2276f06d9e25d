//! The JSON log lines: one flat object per line, with the fields of every enclosing span, so each
//! line about a message carries its `correlation_id` and `order_id`.
//!
//! Every delivery creates a span and writes at least one line (`delivery settled`), so this is on
//! the hot path, and it is built to cost little there (`lab log-cost` measures it): a span's
//! fields are rendered as JSON text once, when they are recorded, and kept in the span; a line is
//! written straight into the output from those texts and the event's fields, with no map or
//! JSON value built per line, and is handed to the writer in one `write` (so the masking writer
//! sees whole lines).
//!
//! Each key appears once. The fixed keys come first (`timestamp`, `level`, `target`, `span`: the
//! innermost span's name), then the event's fields (`message` first), then the span fields from
//! the innermost span out; where two name the same key, the first of them wins: the event's own
//! field over a span's, an inner span's over an outer one's. Span fields meant for the trace
//! backend (`otel.*`) are left out.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::ops::Range;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The layer: keeps each span's fields as JSON text and writes one line per event to `W`.
pub struct JsonLines<W> {
    writer: W,
}

impl<W> JsonLines<W> {
    pub fn new(writer: W) -> Self {
        Self { writer }
    }
}

/// A span's fields as JSON text: each name with the range of `text` that holds its value. A
/// field recorded again gets a new range (the old text stays until the span closes: spans are
/// short, and a field is recorded at most a few times).
#[derive(Default)]
struct SpanFields {
    text: String,
    fields: Vec<(&'static str, Range<usize>)>,
}

impl JsonSink for SpanFields {
    fn field(&mut self, name: &'static str, value: JsonValue<'_>) {
        let start = self.text.len();
        // Writing into a String cannot fail.
        let _ = value.write(&mut self.text);
        let range = start..self.text.len();
        match self.fields.iter_mut().find(|(known, _)| *known == name) {
            Some((_, known)) => *known = range,
            None => self.fields.push((name, range)),
        }
    }
}

/// What writing a line needs, reused from line to line: most lines need no allocation at all.
#[derive(Default)]
struct Buffers {
    text: String,
    /// The keys written so far.
    keys: Vec<&'static str>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

impl<S, W> tracing_subscriber::Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut Visitor(&mut fields));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
            values.record(&mut Visitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        BUFFERS.with(|buffers| {
            // A line logged while this thread writes one (a writer that logs) gets buffers of
            // its own rather than a panic.
            let mut own = Buffers::default();
            let mut borrowed = buffers.try_borrow_mut();
            let buffers = match borrowed.as_mut() {
                Ok(buffers) => &mut **buffers,
                Err(_) => &mut own,
            };
            buffers.text.clear();
            buffers.keys.clear();
            let mut line = Line { out: &mut buffers.text, keys: &mut buffers.keys, result: Ok(()) };
            if write_line(&mut line, event, &ctx).is_ok() {
                let _ = self.writer.make_writer_for(event.metadata()).write_all(buffers.text.as_bytes());
            }
            // A rare huge line should not keep its buffer for the thread's life.
            if buffers.text.capacity() > 64 * 1024 {
                buffers.text = String::new();
            }
        });
    }
}

fn write_line<S>(line: &mut Line<'_>, event: &Event<'_>, ctx: &Context<'_, S>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let meta = event.metadata();
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    line.out.write_char('{')?;
    line.field("timestamp", JsonValue::Str(&timestamp));
    line.field("level", JsonValue::Str(meta.level().as_str()));
    line.field("target", JsonValue::Str(meta.target()));
    // Looked up once: its name first, its fields and its parents' after the event's.
    let innermost = ctx.event_span(event);
    if let Some(span) = &innermost {
        line.field("span", JsonValue::Str(span.name()));
    }
    event.record(&mut Visitor(&mut *line));
    for span in innermost.iter().flat_map(|span| span.scope()) {
        if let Some(fields) = span.extensions().get::<SpanFields>() {
            for (name, range) in &fields.fields {
                line.field(name, JsonValue::Raw(&fields.text[range.clone()]));
            }
        }
    }
    line.result?;
    line.out.write_str("}\n")
}

/// A line being written: the keys written so far, so that each is written once (the first
/// wins).
struct Line<'a> {
    out: &'a mut String,
    keys: &'a mut Vec<&'static str>,
    result: fmt::Result,
}

impl JsonSink for Line<'_> {
    fn field(&mut self, name: &'static str, value: JsonValue<'_>) {
        if self.keys.contains(&name) {
            return;
        }
        if !self.keys.is_empty() {
            self.out.push(',');
        }
        self.keys.push(name);
        let written = JsonValue::Str(name).write(self.out).and_then(|()| {
            self.out.push(':');
            value.write(self.out)
        });
        self.result = self.result.and(written);
    }
}

/// Where a visitor puts the fields it is shown.
trait JsonSink {
    fn field(&mut self, name: &'static str, value: JsonValue<'_>);
}

/// One field's value, to be written as JSON.
enum JsonValue<'a> {
    Str(&'a str),
    I64(i64),
    U64(u64),
    Bool(bool),
    F64(f64),
    Debug(&'a dyn fmt::Debug),
    /// Already JSON text.
    Raw(&'a str),
}

impl JsonValue<'_> {
    fn write(&self, out: &mut String) -> fmt::Result {
        match self {
            Self::Str(text) => {
                out.push('"');
                Escaped(out).write_str(text)?;
                out.push('"');
                Ok(())
            }
            Self::I64(n) => write!(out, "{n}"),
            Self::U64(n) => write!(out, "{n}"),
            Self::Bool(b) => write!(out, "{b}"),
            // Debug keeps a fraction on whole numbers (`5.0`) and writes exponents as JSON reads
            // them (`1e-7`); JSON has no NaN or infinity.
            Self::F64(x) if x.is_finite() => write!(out, "{x:?}"),
            Self::F64(_) => out.write_str("null"),
            Self::Debug(value) => {
                out.push('"');
                write!(Escaped(out), "{value:?}")?;
                out.push('"');
                Ok(())
            }
            Self::Raw(json) => out.write_str(json),
        }
    }
}

/// Writes text as the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.push_str(&text[plain..i]);
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.push_str(escape);
            }
            plain = i + 1;
        }
        self.0.push_str(&text[plain..]);
        Ok(())
    }
}

/// Shows a span's or an event's fields to a [`JsonSink`], leaving out the trace backend's
/// (`otel.*`).
struct Visitor<'a, S>(&'a mut S);

impl<S: JsonSink> Visitor<'_, S> {
    fn field(&mut self, field: &Field, value: JsonValue<'_>) {
        if !field.name().starts_with("otel.") {
            self.0.field(field.name(), value);
        }
    }
}

impl<S: JsonSink> Visit for Visitor<'_, S> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, JsonValue::Str(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, JsonValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, JsonValue::U64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, JsonValue::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, JsonValue::F64(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, JsonValue::Debug(value));
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// A writer that keeps each write it is given.
    #[derive(Clone, Default)]
    pub(in crate::telemetry) struct Captured(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Captured {
        /// Everything written, as text.
        pub(in crate::telemetry) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What `log` writes, as the text of each write call.
    fn written(log: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(captured.clone()));
        tracing::subscriber::with_default(subscriber, log);
        captured.0.lock().unwrap().iter().map(|w| String::from_utf8(w.clone()).unwrap()).collect()
    }

    #[test]
    fn a_line_is_one_write_of_one_json_object_with_the_fields_of_its_spans() {
        let writes = written(|| {
            let outer = tracing::info_span!("delivery", correlation_id = tracing::field::Empty, otel.kind = "consumer");
            outer.record("correlation_id", "c-1");
            let inner = tracing::info_span!(parent: &outer, "publish", attempt = 2_u64, ok = true);
            inner.in_scope(|| tracing::info!(took_ms = 1.5, whole = 5.0, "sent"));
        });
        assert_eq!(writes.len(), 1, "{writes:?}");
        let line = &writes[0];
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line}");
        let value: Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["span"], "publish", "the innermost span's name");
        assert_eq!(value["message"], "sent");
        assert_eq!(value["correlation_id"], "c-1", "recorded after the span was created");
        assert_eq!(value["attempt"], 2);
        assert_eq!(value["ok"], true);
        assert!(line.contains(r#""took_ms":1.5,"whole":5.0"#), "floats stay floats: {line}");
        assert!(value.as_object().unwrap().keys().all(|k| !k.starts_with("otel.")), "{line}");
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn each_key_is_written_once_and_the_nearest_value_wins() {
        let writes = written(|| {
            let outer = tracing::info_span!("outer", shared = "outer", only_outer = 1_i64, message = "outer");
            let inner = tracing::info_span!(parent: &outer, "inner", shared = "inner", level = "span's");
            inner.in_scope(|| tracing::warn!(only_outer = -2_i64, "the event's"));
            outer.record("shared", "outer, again");
        });
        let line = &writes[0];
        for key in ["shared", "only_outer", "message", "level", "span"] {
            assert_eq!(line.matches(&format!("\"{key}\":")).count(), 1, "{key} once: {line}");
        }
        let value: Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["shared"], "inner", "an inner span's field over an outer one's");
        assert_eq!(value["only_outer"], -2, "the event's field over a span's");
        assert_eq!(value["message"], "the event's");
        assert_eq!(value["level"], "WARN", "the fixed keys over any field");
    }

    #[test]
    fn text_is_escaped_and_odd_numbers_stay_valid_json() {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \u{0} é ✓";
        let writes = written(|| {
            tracing::info!(text = nasty, debug = ?"a \"b\"", nan = f64::NAN, inf = f64::INFINITY, tiny = 1e-7, big = u64::MAX, neg = i64::MIN, "m\n");
        });
        assert_eq!(writes[0].matches('\n').count(), 1, "a newline in a value is escaped: {}", writes[0]);
        let value: Value = serde_json::from_str(&writes[0]).unwrap();
        assert_eq!(value["text"], nasty);
        assert_eq!(value["debug"], r#""a \"b\"""#);
        assert_eq!((&value["nan"], &value["inf"]), (&Value::Null, &Value::Null));
        assert_eq!(value["tiny"].as_f64(), Some(1e-7));
        assert_eq!(value["big"].as_u64(), Some(u64::MAX));
        assert_eq!(value["neg"].as_i64(), Some(i64::MIN));
        assert_eq!(value["message"], "m\n");
    }

    #[test]
    fn a_line_outside_any_span_has_no_span_key() {
        let writes = written(|| tracing::error!(answer = 42_i64, "alone"));
        let value: Value = serde_json::from_str(&writes[0]).unwrap();
        assert!(value.get("span").is_none());
        assert_eq!((value["answer"].as_i64(), value["level"].as_str()), (Some(42), Some("ERROR")));
    }
}
