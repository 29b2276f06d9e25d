use crate::config::parse_positive_duration;
use crate::secret::SecretUrl;
use clap::{ArgAction, Args, value_parser};
use serde::Serialize;
use std::time::Duration;

/// Where the Service Bus namespace is, how to authenticate, and how the inbound queue is read.
/// The names of the credentials are the Azure ecosystem's own, so a pod configured for any Azure
/// SDK is configured for this service too.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct ServiceBusConfig {
    /// Service Bus connection string (`Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…`);
    /// a secret, never logged. `UseDevelopmentEmulator=true` connects in plain text (emulator,
    /// local peer).
    #[arg(long, env = "AZURE_SERVICEBUS_CONNECTION_STRING", value_parser = parse_connection_string)]
    pub servicebus_connection_string: Option<ConnectionString>,
    /// Service Bus namespace (`<name>.servicebus.windows.net`), authenticated with Microsoft Entra
    /// workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`)
    /// instead of a connection string.
    #[arg(long, env = "AZURE_SERVICEBUS_FULLY_QUALIFIED_NAMESPACE", conflicts_with = "servicebus_connection_string", value_parser = parse_namespace)]
    pub servicebus_namespace: Option<String>,
    /// Service Bus: the inbound queue requires sessions (FIFO per session id); it is read with up
    /// to `--servicebus-max-sessions` sessions in parallel, in order within each.
    #[arg(long, env = "ORDER_PROCESS_SERVICEBUS_SESSIONS", default_value_t = true, action = ArgAction::Set)]
    pub servicebus_sessions: bool,
    /// Service Bus: most sessions of the inbound queue processed in parallel.
    #[arg(long, env = "ORDER_PROCESS_SERVICEBUS_MAX_SESSIONS", default_value_t = 8, value_parser = value_parser!(u16).range(1..=256))]
    pub servicebus_max_sessions: u16,
    /// Service Bus: how long a session without new messages is kept before its lock is released
    /// for another session (or replica).
    #[arg(long, env = "ORDER_PROCESS_SERVICEBUS_SESSION_IDLE", default_value = "1s", value_parser = parse_positive_duration)]
    #[serde(with = "crate::config::duration_text")]
    pub servicebus_session_idle: Duration,
    /// Service Bus: how often the locks of deliveries in flight (the session lock on a session
    /// queue) are renewed; keep it well under the queue's lock duration.
    #[arg(long, env = "ORDER_PROCESS_SERVICEBUS_LOCK_RENEWAL", default_value = "10s", value_parser = parse_positive_duration)]
    #[serde(with = "crate::config::duration_text")]
    pub servicebus_lock_renewal: Duration,
    /// Service Bus: the outbound queue requires sessions; each event then carries its order's
    /// correlation id as SessionId.
    #[arg(long, env = "ORDER_PROCESS_SERVICEBUS_OUTBOUND_SESSIONS", default_value_t = false, action = ArgAction::Set)]
    pub servicebus_outbound_sessions: bool,
    /// Service Bus: timeout of one operation (connect, attach, send, management request); also
    /// how long a wait for a session with messages lasts before it is asked again.
    #[arg(long, env = "ORDER_PROCESS_SERVICEBUS_TRY_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    #[serde(with = "crate::config::duration_text")]
    pub servicebus_try_timeout: Duration,
}

impl Default for ServiceBusConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

impl ServiceBusConfig {
    /// Whether any setting says where a namespace is.
    pub fn is_given(&self) -> bool {
        self.servicebus_connection_string.is_some() || self.servicebus_namespace.is_some()
    }

    /// The namespace, as shown in logs and errors (no secret).
    pub fn target(&self) -> String {
        match (&self.servicebus_connection_string, &self.servicebus_namespace) {
            (Some(connection), _) => connection.endpoint(),
            (None, Some(namespace)) => namespace.clone(),
            (None, None) => {
                "(no AZURE_SERVICEBUS_CONNECTION_STRING or AZURE_SERVICEBUS_FULLY_QUALIFIED_NAMESPACE)".into()
            }
        }
    }
}

/// A Service Bus connection string. Its `SharedAccessKey` never reaches a log line: it is shown
/// as its `Endpoint` only.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString(SecretUrl);

impl ConnectionString {
    /// The real string, for the client library only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// `sb://host/` from `Endpoint=...`.
    pub fn endpoint(&self) -> String {
        field(self.expose(), "Endpoint").unwrap_or("(no Endpoint)").to_owned()
    }

    /// `UseDevelopmentEmulator=true`: plain AMQP on port 5672, as Microsoft's SDKs do for the
    /// emulator.
    pub fn development(&self) -> bool {
        field(self.expose(), "UseDevelopmentEmulator").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split(';')
        .filter_map(|part| part.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint={};SharedAccessKey=***", self.endpoint())
    }
}

impl Serialize for ConnectionString {
    /// Clear only inside [`crate::secret::exposing_secrets`] (handing settings to a child).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if crate::secret::exposing() {
            serializer.serialize_str(self.expose())
        } else {
            serializer.serialize_str(&format!("{self:?}"))
        }
    }
}

/// A connection string with an `sb://` Endpoint and either a shared access key (name and key)
/// or a shared access signature.
pub fn parse_connection_string(text: &str) -> Result<ConnectionString, String> {
    let endpoint = field(text, "Endpoint").ok_or("must contain Endpoint=sb://<namespace>/")?;
    if !endpoint.starts_with("sb://") || endpoint.len() <= "sb://".len() {
        return Err("Endpoint must be sb://<namespace>/".into());
    }
    let key = field(text, "SharedAccessKeyName").is_some() && field(text, "SharedAccessKey").is_some();
    if !key && field(text, "SharedAccessSignature").is_none() {
        return Err("must contain SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature".into());
    }
    Ok(ConnectionString(SecretUrl::new(text)))
}

/// A host name such as `contoso.servicebus.windows.net` (no scheme, no path).
pub fn parse_namespace(text: &str) -> Result<String, String> {
    let text = text.trim().trim_end_matches('/');
    if text.is_empty() || text.contains("://") || text.contains(['/', ';', ' ']) {
        return Err("must be a host name such as contoso.servicebus.windows.net".into());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_never_shown() {
        let text = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=hunter2";
        let parsed = parse_connection_string(text).unwrap();
        assert_eq!(parsed.expose(), text);
        assert_eq!(parsed.endpoint(), "sb://ns.servicebus.windows.net/");
        let shown = format!("{parsed:?} {}", serde_json::to_string(&parsed).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!parsed.development());
        let dev = parse_connection_string(&format!("{text};UseDevelopmentEmulator=true")).unwrap();
        assert!(dev.development());
    }

    #[test]
    fn bad_connection_strings_and_namespaces_are_refused() {
        assert!(parse_connection_string("amqp://guest:guest@localhost").is_err());
        assert!(parse_connection_string("Endpoint=sb://ns/;SharedAccessKeyName=Root").is_err());
        assert!(parse_connection_string("Endpoint=http://ns/;SharedAccessSignature=x").is_err());
        assert!(parse_namespace("sb://ns.servicebus.windows.net").is_err());
        assert_eq!(parse_namespace("ns.servicebus.windows.net/").unwrap(), "ns.servicebus.windows.net");
    }
}
