//! Every order the decoder accepts, PostgreSQL stores.
//!
//! The decoder is the boundary: an order that passes it is retried when the database fails and,
//! when the database refuses it, dead-lettered as a permanent failure after its whole batch was
//! retried order by order. Whatever PostgreSQL refuses must therefore be refused by the decoder
//! already, as invalid. This test generates near-valid order bodies full of the values PostgreSQL
//! is picky about (U+0000 and lone surrogates in text and jsonb, `numeric` at its edges,
//! `timestamptz` and RFC 3339 at theirs, deep and large claims), decodes them, and writes every
//! accepted one with the production insert path into its own freshly migrated database on the
//! real server. It fails listing, per distinct database error, the smallest body that caused it.
//!
//! `TEST_DATABASE_URL` (a server URL without database) defaults to the local server;
//! `DECODER_DB_FUZZ_CASES` sets how many bodies are generated (default 3000).

use actors::order::{InvalidOrder, decode};
use actors::processor::{OrderStore, SeaOrmOrderStore};
use migration::MigratorTrait;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use std::collections::BTreeMap;
use std::sync::Arc;

fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database of its own, dropped when the test ends, also when it panics.
struct TestDatabase {
    name: String,
}

impl TestDatabase {
    async fn create() -> (Self, DatabaseConnection) {
        let name = format!("op_test_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let admin = Database::connect(format!("{}/postgres", server_url())).await.expect("PostgreSQL reachable");
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        admin.close().await.unwrap();
        let db = Database::connect(format!("{}/{name}", server_url())).await.unwrap();
        migration::Migrator::up(&db, None).await.expect("migrations apply");
        (Self { name }, db)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // A runtime of its own: this also runs while a panic unwinds out of the test's runtime.
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(admin) = Database::connect(format!("{}/postgres", server_url())).await {
                    let _ = admin.execute_unprepared(&statement).await;
                }
            })
        });
        let _ = dropping.join();
    }
}

/// Pieces of JSON string content: plain and multi-byte characters, and the escapes that decode to
/// U+0000, lone or paired surrogates, control characters, noncharacters.
const PIECES: &[&str] = &[
    "a",
    "Z",
    "7",
    "-",
    "é",
    "€",
    "😀",
    "\u{7f}",
    "\u{fffe}",
    "\u{ffff}",
    "\u{10ffff}",
    "\u{feff}",
    "\u{2028}",
    r"\u0000",
    r"\u0001",
    r"\u001f",
    r"\ud800",
    r"\udbff",
    r"\udc00",
    r"\udfff",
    r"\ud83d\ude00",
    r"\n",
    r"\t",
    r#"\""#,
    r"\\",
    r"\/",
    r"\u00e9",
];

/// A JSON string literal of 1 to `max` characters, mostly plain, often hostile.
fn json_text(max: usize) -> BoxedStrategy<String> {
    let pieces = prop::collection::vec(prop::sample::select(PIECES), 1..=max.min(8));
    prop_oneof![
        12 => proptest::string::string_regex(&format!("[A-Za-z0-9_-]{{1,{max}}}")).unwrap()
            .prop_map(|s| format!("\"{s}\"")),
        2 => proptest::string::string_regex(&format!(".{{1,{max}}}")).unwrap()
            .prop_map(|s| serde_json::to_string(&s).unwrap()),
        2 => pieces.prop_map(|p| format!("\"{}\"", p.concat())),
    ]
    .boxed()
}

/// Exponents at the edges of PostgreSQL's `numeric`: 10^131072 is the first value too large, 16383
/// the most decimal places, 2^30 the largest exponent it parses.
fn exponent() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (-30i64..=30).prop_map(|e| e.to_string()),
        1 => (131_066i64..=131_076).prop_map(|e| e.to_string()),
        1 => (-16_392i64..=-16_376).prop_map(|e| e.to_string()),
        1 => (1_073_741_820i64..=1_073_741_826).prop_map(|e| e.to_string()),
        1 => (-1_073_741_826i64..=-1_073_741_820).prop_map(|e| e.to_string()),
        1 => Just("99999999999999999999".to_owned()),
        1 => Just("-99999999999999999999".to_owned()),
        1 => Just("400".to_owned()),
    ]
    .boxed()
}

/// JSON number literals: ordinary ones, long ones, and exponents at `numeric`'s edges.
fn json_number() -> BoxedStrategy<String> {
    let mantissa = proptest::string::string_regex("-?(0|[1-9][0-9]{0,6})(\\.[0-9]{1,6})?").unwrap().boxed();
    prop_oneof![
        6 => mantissa.clone(),
        3 => (mantissa, prop::sample::select(&["e", "E", "e+", "E-"][..]), exponent())
            .prop_map(|(m, e, x)| match (e, x.strip_prefix('-')) {
                ("e+", Some(_)) => format!("{m}e{x}"),
                ("E-", Some(positive)) => format!("{m}E{positive}"),
                _ => format!("{m}{e}{x}"),
            }),
        1 => (1usize..=120, prop::sample::select(&["1", "9"][..]), any::<bool>())
            .prop_map(|(n, digit, point)| if point { format!("0.{}", digit.repeat(n)) } else { format!("1{}", "0".repeat(n)) }),
        1 => (16_378usize..=16_390, any::<bool>())
            .prop_map(|(n, zero)| if zero { format!("0.{}", "0".repeat(n)) } else { format!("0.{}1", "0".repeat(n - 1)) }),
        1 => (16_378usize..=16_390).prop_map(|n| format!("0.0e-{n}")),
    ]
    .boxed()
}

/// Claims: small JSON objects of anything, nestings from shallow to very deep, and large ones.
fn claims() -> BoxedStrategy<String> {
    let leaf = prop_oneof![Just("null".to_owned()), Just("true".to_owned()), json_number(), json_text(12)];
    let value = leaf.clone().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((json_text(8), inner), 0..6).prop_map(|members| object(&members)),
        ]
    });
    prop_oneof![
        6 => prop::collection::vec((json_text(8), value), 0..6).prop_map(|members| object(&members)),
        1 => (1usize..=140, leaf, any::<bool>()).prop_map(|(depth, leaf, arrays)| {
            let (open, close) = if arrays { ("[", "]") } else { (r#"{"k":"#, "}") };
            format!(r#"{{"deep":{}{leaf}{}}}"#, open.repeat(depth), close.repeat(depth))
        }),
        1 => (1usize..=60_000, prop::sample::select(&["x", "é"][..]))
            .prop_map(|(n, c)| format!(r#"{{"blob":"{}"}}"#, c.repeat(n / c.len()))),
        1 => (1usize..=2_000).prop_map(|n| object(&(0..n).map(|i| (format!("\"k{i}\""), i.to_string())).collect::<Vec<_>>())),
    ]
    .boxed()
}

fn object(members: &[(String, String)]) -> String {
    let members: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", members.join(","))
}

/// RFC 3339 timestamps at and past the edges: years 0000 and 9999, offsets of ±23:59, second 60,
/// fractions that round up.
fn accepted_at() -> BoxedStrategy<String> {
    let year = prop_oneof![0u32..=2, 9_997u32..=9_999, 0u32..=9_999];
    let fraction = prop::sample::select(&["", ".5", ".000001", ".0000005", ".9999994", ".9999995", ".999999999"][..]);
    let offset = prop_oneof![
        Just("Z".to_owned()),
        Just("+23:59".to_owned()),
        Just("-23:59".to_owned()),
        (any::<bool>(), 0u32..=23, 0u32..=59)
            .prop_map(|(plus, h, m)| format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })),
    ];
    let date = (year, prop_oneof![Just(1u32), Just(12), 1u32..=12], prop_oneof![Just(1u32), Just(31), 1u32..=28]);
    let time = (
        prop_oneof![Just(0u32), Just(23), 0u32..=23],
        prop_oneof![Just(0u32), Just(59), 0u32..=59],
        prop_oneof![Just(0u32), Just(59), Just(60), 0u32..=60],
    );
    let timestamp = (date, time, fraction, offset)
        .prop_map(|((y, mo, d), (h, mi, s), f, o)| format!("\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{f}{o}\""));
    prop_oneof![6 => timestamp, 1 => Just("null".to_owned()), 1 => json_text(30)].boxed()
}

/// Unit prices as JSON numbers or strings: ordinary, at the limits, and with far too many digits.
fn unit_price() -> BoxedStrategy<String> {
    let edges = prop::sample::select(
        &[
            "0",
            "-0",
            "-0.0",
            "0.0001",
            "19.99",
            "1.50000",
            "999999999999.9999",
            "1000000000000",
            "1000000000000.0000",
            "1e12",
            "1.0000e12",
            "1E-4",
            "19.9900000000000000000000000000001",
            "0.00000000000000000000000000000001",
        ][..],
    )
    .prop_map(str::to_owned);
    let long = (1usize..=100).prop_map(|n| format!("1.{}", "0".repeat(n)));
    let plain = proptest::string::string_regex("(0|[1-9][0-9]{0,11})(\\.[0-9]{1,4})?").unwrap();
    let number = prop_oneof![4 => plain, 3 => json_number(), 2 => edges, 1 => long];
    prop_oneof![3 => number.clone(), 1 => number.prop_map(|n| format!("\"{n}\""))].boxed()
}

fn item() -> BoxedStrategy<String> {
    let quantity = prop_oneof![16 => (1i64..=10_000).prop_map(|q| q.to_string()), 2 => Just("10000".to_owned()), 1 => json_number()];
    (json_text(64), quantity, unit_price())
        .prop_map(|(sku, q, p)| format!(r#"{{"sku":{sku},"quantity":{q},"unitPrice":{p}}}"#))
        .boxed()
}

fn items() -> BoxedStrategy<String> {
    let largest = r#"{"sku":"S","quantity":10000,"unitPrice":1000000000000}"#;
    prop_oneof![
        8 => prop::collection::vec(item(), 1..=3).prop_map(|items| items.join(",")),
        1 => Just(vec![largest; 100].join(",")),
    ]
    .boxed()
}

fn identity() -> BoxedStrategy<String> {
    let subject = prop_oneof![4 => json_text(256), 1 => Just("null".to_owned())];
    prop_oneof![
        1 => Just("null".to_owned()),
        6 => (subject, claims()).prop_map(|(s, c)| format!(r#"{{"subject":{s},"claims":{c}}}"#)),
    ]
    .boxed()
}

fn order_body() -> impl Strategy<Value = String> {
    (any::<u128>(), json_text(64), items(), accepted_at(), identity()).prop_map(|(id, customer, items, at, identity)| {
        let id = uuid::Uuid::from_u128(id);
        format!(
            r#"{{"correlationId":"{id}","customerId":{customer},"currency":"EUR","items":[{items}],"acceptedAt":{at},"identity":{identity}}}"#
        )
    })
}

/// The database's message without the quoted value it names, so refusals group by kind.
fn kind_of(error: &str) -> String {
    error.split('"').next().unwrap_or(error).trim_end_matches([':', ' ']).to_owned()
}

/// The field a rejection names (claims paths cut after `identity.claims`, indexes dropped) and
/// the first words of its rule.
fn rule_of(reason: &InvalidOrder) -> String {
    let (field, rule) = match reason {
        InvalidOrder::Field { field, rule } => (Some(field.as_str()), rule.clone()),
        InvalidOrder::Malformed(m) => (m.field.as_deref(), format!("(malformed) {}", m.problem)),
        InvalidOrder::TooLarge(_) => return "body larger than 64 KiB".into(),
        other => (None, other.to_string()),
    };
    let field = field.unwrap_or("body");
    let field: String = field.split(['[', ']']).step_by(2).collect::<String>();
    let field = field.split('.').take(2).collect::<Vec<_>>().join(".");
    let rule = rule.split([' ', ',', ':']).filter(|w| !w.is_empty()).take_while(|w| !w.contains(['`', '"']));
    format!("{field} {}", rule.take(6).collect::<Vec<_>>().join(" "))
}

/// Bodies of up to 64 KiB, cut to their beginning and end.
fn shortened(body: &str) -> String {
    if body.len() <= 800 {
        return body.to_owned();
    }
    let head = &body[..body.floor_char_boundary(400)];
    let tail = &body[body.ceil_char_boundary(body.len() - 400)..];
    format!("{head} … {tail} ({} bytes)", body.len())
}

#[test]
fn every_order_the_decoder_accepts_is_stored() {
    let cases: usize = std::env::var("DECODER_DB_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (database, db) = runtime.block_on(TestDatabase::create());
    let store = SeaOrmOrderStore::new(db);

    let strategy = order_body();
    let mut runner = TestRunner::default();
    let (mut accepted, mut stored) = (0usize, 0usize);
    // Per kind of refusal: the smallest body that met it, and how often it was met.
    let mut refused: BTreeMap<String, (String, String, usize)> = BTreeMap::new();
    // Which rules the decoder refused the others by: the field, without indexes.
    let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..cases {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        let order = match decode(body.as_bytes(), None) {
            Ok(order) => order,
            Err(rejection) => {
                *rejected.entry(rule_of(&rejection.reason)).or_default() += 1;
                continue;
            }
        };
        accepted += 1;
        match runtime.block_on(store.persist_batch(&[Arc::new(order)])) {
            Ok(_) => stored += 1,
            Err(error) => {
                let error = error.to_string();
                let entry = refused.entry(kind_of(&error)).or_insert_with(|| (body.clone(), error.clone(), 0));
                entry.2 += 1;
                if body.len() < entry.0.len() {
                    (entry.0, entry.1) = (body, error);
                }
            }
        }
    }
    drop(database);

    let report: Vec<String> = refused
        .values()
        .map(|(body, error, count)| format!("{count} refused with: {error}\n  smallest body: {}", shortened(body)))
        .collect();
    assert!(
        refused.is_empty(),
        "the decoder accepted {accepted} of {cases} bodies; PostgreSQL refused {} of them:\n{}",
        accepted - stored,
        report.join("\n")
    );
    // A decoder refusing nearly everything would pass the assertion above: enough must get through.
    assert!(accepted * 10 >= cases, "only {accepted} of {cases} generated bodies were accepted");
    println!("{accepted} of {cases} generated bodies accepted, all stored; the others refused by:");
    for (rule, count) in &rejected {
        println!("{count:>6}  {rule}");
    }
}
