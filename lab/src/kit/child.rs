//! Settings handed to a child worker: the same [`Settings`] value a test or the benchmark holds,
//! turned into the environment variables `order-process run` reads, by walking the settings'
//! own declaration (each field's name is its flag's id, and clap knows its variable). Nothing
//! here names a setting, so a new setting reaches the child without a change here.

use actors::secret::exposing_secrets;
use clap::{Args, Command};
use order_process::settings::Settings;
use serde_json::Value;
use std::collections::BTreeMap;

/// `(variable, value)` for every setting, values spelled the way their parsers read them.
pub fn settings_env(settings: &Settings) -> Vec<(String, String)> {
    declared(settings).into_iter().map(|(_, env, value)| (env, value)).collect()
}

/// `--flag value` for every setting: the same values as [`settings_env`], as arguments.
pub fn settings_args(settings: &Settings) -> Vec<String> {
    declared(settings).into_iter().flat_map(|(flag, _, value)| [format!("--{flag}"), value]).collect()
}

/// `(flag, variable, value)` of every setting that has a value.
fn declared(settings: &Settings) -> Vec<(String, String, String)> {
    let tree = exposing_secrets(|| serde_json::to_value(settings)).expect("settings serialize");
    let mut values = BTreeMap::new();
    leaves(&tree, &mut values);
    let command = Settings::augment_args(Command::new("run"));
    command
        .get_arguments()
        .filter_map(|arg| {
            let value = values.remove(arg.get_id().as_str())?;
            let flag = arg.get_long()?.to_owned();
            let env = arg.get_env()?.to_str()?.to_owned();
            Some((flag, env, value))
        })
        .collect()
}

/// The scalar leaves of the serialized settings, by field name (nested structs are the
/// flattened argument groups, so their leaves' names are the flags' ids).
fn leaves(value: &Value, into: &mut BTreeMap<String, String>) {
    let Value::Object(fields) = value else { return };
    for (name, value) in fields {
        let text = match value {
            Value::Object(_) => {
                leaves(value, into);
                continue;
            }
            Value::Null => continue,
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        into.insert(name.clone(), text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use order_process::cli::{Command as Subcommand, try_parse_from};
    use std::time::Duration;

    #[test]
    fn every_setting_reaches_the_child_and_reads_back_the_same() {
        let mut settings = Settings::default();
        settings.worker.consumer.prefetch = 7;
        settings.worker.consumer.batch_linger = Duration::from_millis(300);
        settings.worker.consumer.redelivery.retry_delays = "250ms,2s".parse().unwrap();
        settings.worker.processor.sql_retry.retries = 0;
        settings.worker.processor.database.database_url = actors::secret::SecretUrl::new("postgres://u:pw@db/x");
        settings.amqp.dead_letter_queue = Some("dead".into());
        settings.amqp.single_active_consumer = true;
        settings.migrate_on_start = false;
        let key = "Endpoint=sb://127.0.0.2/;SharedAccessKeyName=Root;SharedAccessKey=k;UseDevelopmentEmulator=true";
        settings.servicebus.servicebus_connection_string =
            Some(actors::servicebus::parse_connection_string(key).unwrap());
        settings.servicebus.servicebus_max_sessions = 3;

        let args = settings_args(&settings);
        let parsed = try_parse_from(["order-process".to_owned(), "run".to_owned()].into_iter().chain(args)).unwrap();
        let Subcommand::Run(parsed) = parsed.into_command() else { panic!("run") };
        assert_eq!(parsed, settings);

        let env: BTreeMap<_, _> = settings_env(&settings).into_iter().collect();
        assert_eq!(env["DATABASE_URL"], "postgres://u:pw@db/x", "the child gets the real password");
        assert_eq!(env["ORDER_PROCESS_RETRY_DELAYS"], "250ms,2s");
        assert_eq!(env["AZURE_SERVICEBUS_CONNECTION_STRING"], key, "the child gets the real key");
        // The namespace is the alternative to the connection string: one of the two is given.
        let declared = Settings::augment_args(Command::new("run"))
            .get_arguments()
            .filter(|a| a.get_env().is_some_and(|env| env != "AZURE_SERVICEBUS_FULLY_QUALIFIED_NAMESPACE"))
            .count();
        assert_eq!(env.len(), declared, "every setting has a value");
    }
}
