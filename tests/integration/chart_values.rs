//! The Helm chart's `config` values follow the declared settings, so the chart cannot drift from
//! the binary.
//!
//! `templates/configmap.yaml` turns each key of `config` in `values.yaml` into
//! `ORDER_PROCESS_<KEY_IN_UPPER_SNAKE_CASE>`, except the few keys it writes its own way
//! ([`SPECIAL`]). These tests prove, from the declarations the binary parses
//! (`order_process::cli::command()`):
//!
//! - every `ORDER_PROCESS_*` setting of `run` has its key, whose default is the binary's default
//!   spelled the same way, and a value the binary accepts (except [`SET_BY_THE_CHART`] and
//!   [`CHART_DEFAULTS`], each with its reason);
//! - every key is a setting: a misspelt or stale key fails here;
//! - `values.schema.json` has every key and no other, with the binary's type, its values
//!   (enumerations) and its bounds (integers: the schema's minimum and maximum are exactly where
//!   the binary starts refusing).
//!
//! That the rendered variables are the ones the binary reads (Sprig's `snakecase` included) is
//! checked by `scripts/check-deploy.sh` on the rendered chart, which needs helm.

use crate::settings_docs::{Setting, run_settings};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::any::TypeId;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// A key of `config` that the ConfigMap writes by hand rather than by the generic rule.
struct Special {
    key: &'static str,
    /// The variable the chart writes from it.
    env: &'static str,
    /// How the chart spells the variable from the value, when the variable is a setting of
    /// `run`; `None` when it is not one.
    spell: Option<fn(&str) -> String>,
    /// The schema type of the value.
    json_type: &'static str,
    /// Why the generic rule does not fit.
    why: &'static str,
}

const SPECIAL: &[Special] = &[
    Special {
        key: "httpPort",
        env: "ORDER_PROCESS_HTTP_ADDR",
        spell: Some(|port| format!("0.0.0.0:{port}")),
        json_type: "integer",
        why: "a port, not an address: the container port, the probes, the Service and the scrape annotations follow it",
    },
    Special {
        key: "drainTimeoutSeconds",
        env: "ORDER_PROCESS_DRAIN_TIMEOUT",
        spell: Some(|seconds| format!("{seconds}s")),
        json_type: "integer",
        why: "seconds, so that the render can compare it with terminationGracePeriodSeconds",
    },
    Special {
        key: "rustLog",
        env: "RUST_LOG",
        spell: None,
        json_type: "string",
        why: "not a setting of the command line: the log filter reads it",
    },
];

/// Settings of `run` that have no key because the chart sets them itself, and why.
const SET_BY_THE_CHART: &[(&str, &str)] =
    &[("ORDER_PROCESS_MIGRATE_ON_START", "always \"false\" in the Deployment: the migration Job owns the schema")];

/// Keys whose default deliberately differs from the binary's: (key, the chart's default, why).
const CHART_DEFAULTS: &[(&str, &str, &str)] = &[
    ("logFormat", "json", "log pipelines need JSON; the binary's auto picks pretty on a terminal"),
    (
        "broker",
        "rabbitmq",
        "the chart gives the pods one broker's credentials, so it names that broker (and refuses auto)",
    ),
];

/// Settings of `run` that are not `ORDER_PROCESS_*`: the connection URLs, which the Deployment
/// reads from the Secret (`connection.secretKeys`), never from `config`.
const FROM_THE_SECRET: [&str; 3] = ["AMQP_URL", "DATABASE_URL", "REDIS_URL"];

/// Service Bus's own names, read by every Azure SDK: the connection string comes from a Secret
/// and the namespace with the workload identity values, never from `config`.
const AZURE_SETTINGS: [&str; 2] = ["AZURE_SERVICEBUS_CONNECTION_STRING", "AZURE_SERVICEBUS_FULLY_QUALIFIED_NAMESPACE"];

const PREFIX: &str = "ORDER_PROCESS_";

fn chart_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("helm/order-process").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `config` of values.yaml, in file order.
fn config_values() -> Vec<(String, Yaml)> {
    let values: Yaml = serde_yaml::from_str(&chart_file("values.yaml")).expect("values.yaml is YAML");
    let config = values.get("config").and_then(Yaml::as_mapping).expect("values.yaml has a config map");
    config
        .iter()
        .map(|(key, value)| (key.as_str().expect("config keys are strings").to_owned(), value.clone()))
        .collect()
}

/// `ORDER_PROCESS_DB_MAX_CONNECTIONS` -> `dbMaxConnections`.
fn key_of(env: &str) -> String {
    let words = env.strip_prefix(PREFIX).unwrap_or(env).split('_').map(str::to_ascii_lowercase);
    words.enumerate().map(|(i, word)| if i == 0 { word } else { word[..1].to_ascii_uppercase() + &word[1..] }).collect()
}

/// Words of letters, each after the first starting with one capital: `dbMaxConnections`, not
/// `httpURL` or `http2Port`, whose snake case Sprig and [`env_of`] could spell differently.
fn is_lower_camel_case(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.iter().all(u8::is_ascii_alphabetic)
        && bytes.windows(2).all(|pair| !(pair[0].is_ascii_uppercase() && pair[1].is_ascii_uppercase()))
        && !bytes.last().is_some_and(u8::is_ascii_uppercase)
}

/// `dbMaxConnections` -> `ORDER_PROCESS_DB_MAX_CONNECTIONS`, as the ConfigMap's
/// `snakecase | upper` writes a [lower camel case](is_lower_camel_case) key.
fn env_of(key: &str) -> String {
    let mut env = PREFIX.to_owned();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            env.push('_');
        }
        env.push(c.to_ascii_uppercase());
    }
    env
}

/// A scalar of values.yaml as the ConfigMap writes it.
fn spelled(key: &str, value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("config.{key} must be a string, a number or a boolean, not {other:?}"),
    }
}

fn yaml_type(value: &Yaml) -> &'static str {
    match value {
        Yaml::String(_) => "string",
        Yaml::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Yaml::Number(_) => "number",
        Yaml::Bool(_) => "boolean",
        _ => "other",
    }
}

/// The JSON type a setting's parser takes, from the Rust type it yields.
fn json_type(setting: &Setting) -> &'static str {
    let id = setting.arg.get_value_parser().type_id();
    let integers = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<isize>(),
    ];
    if integers.iter().any(|t| id == *t) {
        "integer"
    } else if id == TypeId::of::<bool>() {
        "boolean"
    } else {
        "string"
    }
}

/// Whether `order-process run` accepts `value` for `setting` (whatever the environment says).
fn accepts(setting: &Setting, value: &str) -> bool {
    let command = order_process::cli::command().mut_subcommand("run", |run| run.mut_args(|arg| arg.env(None)));
    command.try_get_matches_from(["order-process", "run", &format!("{}={value}", setting.flag)]).is_ok()
}

fn find<'a>(settings: &'a [Setting], env: &str) -> Option<&'a Setting> {
    settings.iter().find(|s| s.env == env)
}

#[test]
fn the_special_keys_are_the_ones_the_configmap_writes_by_hand() {
    let template = chart_file("templates/configmap.yaml");
    let line = template.lines().find(|l| l.contains("$special := list")).expect("configmap.yaml declares $special");
    let listed: BTreeSet<&str> = line.split('"').skip(1).step_by(2).collect();
    let special: BTreeSet<&str> = SPECIAL.iter().map(|s| s.key).collect();
    assert_eq!(listed, special, "$special of templates/configmap.yaml and SPECIAL of this test differ");
    for s in SPECIAL {
        assert!(
            template.contains(&format!("{}: ", s.env)),
            "configmap.yaml does not write {} from config.{} ({})",
            s.env,
            s.key,
            s.why
        );
    }
}

#[test]
fn every_setting_has_a_value_defaulting_to_the_binarys_default() {
    let settings = run_settings();
    let config = config_values();
    let value_of = |key: &str| config.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let mut problems = Vec::new();
    for setting in &settings {
        if !setting.env.starts_with(PREFIX) {
            assert!(
                FROM_THE_SECRET.contains(&setting.env.as_str()) || AZURE_SETTINGS.contains(&setting.env.as_str()),
                "{} is neither an ORDER_PROCESS_* setting nor a connection URL of the Secret: decide where the chart \
                 sets it",
                setting.env
            );
            continue;
        }
        if SET_BY_THE_CHART.iter().any(|(env, _)| *env == setting.env) {
            continue;
        }
        let special = SPECIAL.iter().find(|s| s.env == setting.env);
        let key = special.map_or_else(|| key_of(&setting.env), |s| s.key.to_owned());
        let Some(value) = value_of(&key) else {
            let default = setting.default.as_deref().unwrap_or("\"\"");
            problems.push(format!(
                "{} ({}) has no key in values.yaml: add `{key}: {default}` to config (with a comment) and \
                 config.{key} to values.schema.json",
                setting.env, setting.flag
            ));
            continue;
        };
        let written = spelled(&key, value);
        let written = match special.and_then(|s| s.spell) {
            Some(spell) => spell(&written),
            None => written,
        };
        if let Some((_, chart_default, why)) = CHART_DEFAULTS.iter().find(|(k, _, _)| *k == key) {
            if written != *chart_default {
                problems.push(format!(
                    "config.{key} is {written:?}, but CHART_DEFAULTS says the chart defaults to {chart_default:?} ({why})"
                ));
            }
        } else if written != setting.default.clone().unwrap_or_default() {
            problems.push(match &setting.default {
                Some(default) => {
                    format!("config.{key} is {written:?}, but {} defaults to {default:?} in the binary", setting.env)
                }
                None => format!(
                    "config.{key} is {written:?}, but {} has no default: the value must be \"\" (left unset)",
                    setting.env
                ),
            });
        }
        if !written.is_empty() && !accepts(setting, &written) {
            problems.push(format!("`order-process run {}={written}` (config.{key}) is refused", setting.flag));
        }
    }
    assert!(problems.is_empty(), "values.yaml does not follow the declarations:\n  {}", problems.join("\n  "));
}

#[test]
fn every_value_is_a_setting() {
    let settings = run_settings();
    let mut problems = Vec::new();
    for (key, _) in config_values() {
        if let Some(special) = SPECIAL.iter().find(|s| s.key == key) {
            if special.spell.is_some() && find(&settings, special.env).is_none() {
                problems.push(format!(
                    "config.{key} is written as {}, which `order-process run` does not read",
                    special.env
                ));
            }
            continue;
        }
        let env = env_of(&key);
        if !is_lower_camel_case(&key) {
            problems.push(format!("config.{key}: write keys in lowerCamelCase, one capital a word, letters only"));
        } else if find(&settings, &env).is_none() {
            problems.push(format!("config.{key} becomes {env}, which `order-process run` does not read"));
        } else if let Some((_, why)) = SET_BY_THE_CHART.iter().find(|(e, _)| *e == env) {
            problems.push(format!("config.{key} becomes {env}, which the chart sets itself: {why}"));
        }
    }
    assert!(problems.is_empty(), "values.yaml has keys that are no setting:\n  {}", problems.join("\n  "));
}

#[test]
fn the_schema_types_and_bounds_every_value_as_the_binary_does() {
    let schema: Json = serde_json::from_str(&chart_file("values.schema.json")).expect("values.schema.json is JSON");
    let config = &schema["properties"]["config"];
    assert_eq!(config["additionalProperties"], Json::Bool(false), "the schema must refuse unknown config keys");
    let settings = run_settings();
    let mut problems = Vec::new();
    let values = config_values();
    // A key only the schema knows would let a values file set a variable no test has seen.
    for key in config["properties"].as_object().expect("config has properties").keys() {
        if !values.iter().any(|(k, _)| k == key) {
            problems.push(format!("values.schema.json has config.{key}, which values.yaml lacks"));
        }
    }
    for (key, value) in values {
        let Some(entry) = config["properties"].get(&key) else {
            problems.push(format!("values.schema.json has no config.{key}"));
            continue;
        };
        let setting = find(&settings, &env_of(&key));
        let special = SPECIAL.iter().find(|s| s.key == key);
        let expected = match (special, setting) {
            (Some(special), _) => special.json_type,
            (None, Some(setting)) => json_type(setting),
            (None, None) => continue, // reported by every_value_is_a_setting
        };
        if yaml_type(&value) != expected {
            problems.push(format!("config.{key}: {} in values.yaml, {expected} in the binary", yaml_type(&value)));
        }
        let choices: BTreeSet<String> = setting
            .filter(|_| special.is_none())
            .map(|s| s.choices().into_iter().map(|(name, _)| name).collect())
            .unwrap_or_default();
        match (entry.get("enum"), entry.get("type").and_then(Json::as_str)) {
            (Some(listed), _) => {
                let listed: BTreeSet<String> =
                    listed.as_array().into_iter().flatten().map(|v| v.as_str().unwrap_or("?").to_owned()).collect();
                if listed != choices {
                    problems.push(format!("config.{key}: the schema allows {listed:?}, the binary {choices:?}"));
                }
            }
            (None, Some(ty)) if !choices.is_empty() => problems
                .push(format!("config.{key}: {ty} in the schema; list the binary's values instead: {choices:?}")),
            (None, Some(ty)) if ty != expected => {
                problems.push(format!("config.{key}: {ty} in the schema, {expected} in the binary"))
            }
            (None, Some(_)) => {}
            (None, None) => problems.push(format!("config.{key} has neither a type nor an enum in the schema")),
        }
        if expected != "integer" {
            continue;
        }
        let bound = |name: &str| entry.get(name).and_then(Json::as_i64);
        let Some(min) = bound("minimum") else {
            problems.push(format!("config.{key} has no minimum in the schema"));
            continue;
        };
        let max = bound("maximum");
        match (special, setting) {
            // Written another way: the binary must take the schema's whole range.
            (Some(Special { spell: Some(spell), env, .. }), _) => {
                let setting = find(&settings, env).expect("checked by every_value_is_a_setting");
                for edge in std::iter::once(min).chain(max) {
                    if !accepts(setting, &spell(&edge.to_string())) {
                        problems.push(format!("config.{key} = {edge} is allowed by the schema, refused by the binary"));
                    }
                }
            }
            (Some(_), _) | (None, None) => {}
            // Written as it is: the schema's bounds are exactly the binary's.
            (None, Some(setting)) => {
                let refuses = |n: i128| !accepts(setting, &n.to_string());
                if refuses(min.into()) || !refuses(i128::from(min) - 1) {
                    problems.push(format!("config.{key}: the schema's minimum {min} is not the binary's"));
                }
                // The largest integer a values file carries exactly (Helm reads numbers as floats).
                let exact = 1_i128 << 53;
                match max {
                    Some(max) if refuses(max.into()) || !refuses(i128::from(max) + 1) => {
                        problems.push(format!("config.{key}: the schema's maximum {max} is not the binary's"))
                    }
                    None if refuses(exact) => problems.push(format!(
                        "config.{key} has no maximum in the schema, but the binary refuses {exact}: add its maximum"
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(problems.is_empty(), "values.schema.json does not follow the declarations:\n  {}", problems.join("\n  "));
}

#[test]
fn keys_and_variables_map_both_ways() {
    assert_eq!(key_of("ORDER_PROCESS_DB_MAX_CONNECTIONS"), "dbMaxConnections");
    assert_eq!(env_of("dbMaxConnections"), "ORDER_PROCESS_DB_MAX_CONNECTIONS");
    assert_eq!(env_of("prefetch"), "ORDER_PROCESS_PREFETCH");
    assert!(is_lower_camel_case("dbMaxConnections") && is_lower_camel_case("prefetch"));
    for refused in ["httpURL", "maxA", "http2Port", "DbMax", "db_max", ""] {
        assert!(!is_lower_camel_case(refused), "{refused}");
    }
}
