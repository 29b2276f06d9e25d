//! The test kit: a private slice of the real services ([`Sandbox`]: a PostgreSQL database, queues
//! and a Redis key prefix of its own, removed afterwards), the worker as a child process
//! ([`worker`]) configured from the same [`Settings`] value ([`child`]), and the helpers to put
//! messages on queues and read what the worker left in the database, Redis and the queues; and
//! the in-memory ports wired together ([`memory`]).
//! The integration tests, the chaos suite, the benchmark and the demo all stand on it, so tests
//! run in parallel without seeing each other and a benchmark never touches anyone's data.
//!
//! Service addresses come from `TEST_DATABASE_URL` (a server URL without database), `AMQP_URL`
//! and `REDIS_URL`, defaulting to the local services.

pub mod child;
pub mod memory;
pub mod private;
pub mod servicebus;
pub mod worker;

use actors::amqp::{AmqpUrls, Topology};
use actors::config::Durations;
use actors::secret::SecretUrl;
use anyhow::Context;
use fred::prelude::{Client as RedisClient, ClientLike, KeysInterface};
use futures::StreamExt;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use order_process::settings::Settings;
use order_process::startup::Application;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, FromQueryResult, Statement};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// One test's (or one benchmark's, or one demo's) private slice of the real services: a database
/// `op_{purpose}_{id}`, queues `{purpose}.{id}.*` and Redis keys `{purpose}:{id}:*`, so that
/// `scripts/test.sh` can sweep what an interrupted run left behind.
pub struct Sandbox {
    pub id: String,
    pub purpose: &'static str,
    pub settings: Settings,
    pub db: DatabaseConnection,
    pub amqp: Connection,
    pub channel: Channel,
    pub redis: RedisClient,
}

impl Sandbox {
    /// A sandbox for a test on the services of `TEST_DATABASE_URL`, `AMQP_URL` and `REDIS_URL`,
    /// with the short retry delays and drain timeout a test can wait for.
    pub async fn for_test() -> Self {
        let mut base = Settings::default();
        base.worker.processor.database.database_url = SecretUrl::new(format!("{}/postgres", server_url()));
        base.amqp.amqp_url = SecretUrl::new(amqp_url()).into();
        base.worker.status.redis_url = SecretUrl::new(redis_url());
        base.worker.consumer.redelivery.retry_delays = Durations(vec![Duration::from_millis(200)]);
        base.worker.consumer.drain_timeout = Duration::from_secs(5);
        Self::within("test", base).await.expect("PostgreSQL, RabbitMQ and Redis are reachable")
    }

    /// A sandbox on the services `base` points at, for `purpose` (`test`, `bench`, `demo`): the
    /// settings are `base` with the database, queues and key prefix replaced by the sandbox's own
    /// and the HTTP endpoint on a free loopback port.
    pub async fn within(purpose: &'static str, base: Settings) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let server = base.worker.processor.database.database_url.expose();
        let database = format!("op_{purpose}_{id}");
        let admin = Database::connect(server).await.context("PostgreSQL (DATABASE_URL)")?;
        admin.execute_unprepared(&format!("CREATE DATABASE \"{database}\"")).await?;
        admin.close().await?;
        let database_url = with_database(server, &database)?;

        let mut settings = base;
        let worker = &mut settings.worker;
        worker.processor.database.database_url = SecretUrl::new(&database_url);
        worker.queues.inbound_queue = format!("{purpose}.{id}.orders");
        worker.queues.outbound_queue = format!("{purpose}.{id}.processed");
        worker.status.redis_key_prefix = format!("{purpose}:{id}:");
        settings.amqp.dead_letter_queue = None;
        settings.http.http_addr = "127.0.0.1:0".parse()?;

        // The worker's own pool (TCP_NODELAY on its sockets, see actors::processor::connect), so
        // the bench's SQL ceiling measures the statement and not the server's delayed ACK.
        let db = actors::processor::connect(&settings.worker.processor.database, Duration::from_secs(5)).await?;
        let amqp_url = settings.amqp.amqp_url.first().expose();
        let amqp =
            Connection::connect(amqp_url, ConnectionProperties::default()).await.context("RabbitMQ (AMQP_URL)")?;
        let channel = amqp.create_channel().await?;
        // Reconnects by itself, so it outlives a Redis restart in the chaos suite.
        let policy = fred::types::config::ReconnectPolicy::new_constant(0, 100);
        let config = fred::types::config::Config::from_url(settings.worker.status.redis_url.expose())?;
        let redis = RedisClient::new(config, None, None, Some(policy));
        redis.init().await.context("Redis (REDIS_URL)")?;
        Ok(Self { id, purpose, settings, db, amqp, channel, redis })
    }

    /// The sandbox's database, as a URL.
    pub fn database_url(&self) -> &str {
        self.settings.worker.processor.database.database_url.expose()
    }

    pub async fn spawn_app(&self) -> Application {
        Application::build(self.settings.clone()).await.expect("the worker starts")
    }

    /// Starts the worker and waits until it consumes.
    pub async fn spawn_ready_app(&self) -> Application {
        let app = self.spawn_app().await;
        eventually("the consumer attaches", || async { app.health().ready().then_some(()) }).await;
        app
    }

    pub fn inbound(&self) -> String {
        self.settings.worker.queues.inbound_queue.clone()
    }
    pub fn outbound(&self) -> String {
        self.settings.worker.queues.outbound_queue.clone()
    }
    pub fn dead_letter(&self) -> String {
        self.settings.dead_letter_queue()
    }

    /// Every queue of the worker's topology with the current settings.
    pub fn queues(&self) -> Vec<String> {
        let worker = &self.settings.worker;
        Topology::new(&worker.queues, &self.settings.amqp, &worker.consumer.redelivery.retry_delays).queues()
    }

    /// Publishes like the API edge does: persistent, with the AMQP correlation_id set when given.
    pub async fn publish(&self, body: &[u8], correlation_id: Option<&str>) {
        self.publish_with(body, correlation_id, FieldTable::default()).await
    }

    pub async fn publish_with(&self, body: &[u8], correlation_id: Option<&str>, headers: FieldTable) {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        if let Some(id) = correlation_id {
            properties = properties.with_correlation_id(id.into());
        }
        self.channel
            .basic_publish("".into(), self.inbound().into(), BasicPublishOptions::default(), body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Waits for the next message on `queue` and takes it (acked).
    pub async fn next_message(&self, queue: &str) -> lapin::message::BasicGetMessage {
        eventually(&format!("a message on {queue}"), || async {
            let message = self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.ok()??;
            Some(message)
        })
        .await
    }

    /// A fresh connection to the first of the sandbox's broker URLs that answers: it works after
    /// a broker restart, and on a cluster that lost a node.
    pub async fn broker(&self) -> anyhow::Result<Connection> {
        connect_any(&self.settings.amqp.amqp_url).await
    }

    /// Messages ready on `queue` (declared passively: the queue must exist). Over a fresh
    /// connection, so it works after a broker restart too.
    pub async fn ready_count(&self, queue: &str) -> u32 {
        let connection = self.broker().await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        let count = channel.queue_declare(queue.into(), options, FieldTable::default()).await.unwrap().message_count();
        let _ = connection.close(200, "counted".into()).await;
        count
    }

    /// Takes every message currently on `queue`.
    pub async fn drain_queue(&self, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
        let mut messages = Vec::new();
        while let Some(m) = self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            messages.push(m);
        }
        messages
    }

    pub async fn orders(&self) -> Vec<OrderRow> {
        OrderRow::find_by_statement(Statement::from_string(
            self.db.get_database_backend(),
            "SELECT order_id, correlation_id::text AS correlation_id, customer_id, currency, total::text AS total, \
             identity_subject, accepted_at::text AS accepted_at FROM orders ORDER BY order_id",
        ))
        .all(&self.db)
        .await
        .unwrap()
    }

    pub async fn items(&self, order_id: i64) -> Vec<ItemRow> {
        ItemRow::find_by_statement(Statement::from_sql_and_values(
            self.db.get_database_backend(),
            "SELECT line_number, sku, quantity, unit_price::text AS unit_price FROM order_items WHERE order_id = $1 ORDER BY line_number",
            [order_id.into()],
        ))
        .all(&self.db)
        .await
        .unwrap()
    }

    /// The single integer a query returns (a count, a sequence value).
    pub async fn scalar(&self, sql: &str) -> i64 {
        let row =
            self.db.query_one_raw(Statement::from_string(self.db.get_database_backend(), sql)).await.unwrap().unwrap();
        row.try_get_by_index(0).unwrap()
    }

    pub fn status_key(&self, correlation_id: &str) -> String {
        format!("{}order:status:{correlation_id}", self.settings.worker.status.redis_key_prefix)
    }

    pub async fn status(&self, correlation_id: &str) -> Option<String> {
        self.redis.get(self.status_key(correlation_id)).await.unwrap()
    }

    pub async fn status_ttl(&self, correlation_id: &str) -> i64 {
        self.redis.ttl(self.status_key(correlation_id)).await.unwrap()
    }

    /// Removes what the sandbox created. Best effort: `scripts/test.sh` also sweeps leftovers.
    pub async fn cleanup(self) {
        let database_url = self.database_url().to_owned();
        let database = format!("op_{}_{}", self.purpose, self.id);
        self.cleanup_but_keep_database().await;
        if let Ok(admin) = Database::connect(with_database(&database_url, "postgres").unwrap_or_default()).await {
            let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")).await;
        }
    }

    /// Removes the sandbox's queues and keys; its database stays, for a user to look at.
    pub async fn cleanup_but_keep_database(self) {
        let queues = self.queues();
        // A fresh connection: the test's own may have died with a broker restart.
        if let Ok(connection) = self.broker().await
            && let Ok(channel) = connection.create_channel().await
        {
            for queue in queues {
                let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
            }
            let _ = connection.close(200, "test done".into()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.amqp.close(200, "test done".into())).await;
        let scanning = async {
            let prefix = &self.settings.worker.status.redis_key_prefix;
            let mut scan = self.redis.scan_buffered(format!("{prefix}*"), Some(1000), None);
            let mut keys = Vec::new();
            while let Some(Ok(key)) = scan.next().await {
                keys.push(key.into_string().unwrap_or_default());
            }
            keys
        };
        let keys = tokio::time::timeout(Duration::from_secs(10), scanning).await.unwrap_or_default();
        if !keys.is_empty() {
            let _: i64 = self.redis.del(keys).await.unwrap_or_default();
        }
        let _ = self.db.close().await;
    }
}

/// A connection to the first of `urls` that answers.
pub async fn connect_any(urls: &AmqpUrls) -> anyhow::Result<Connection> {
    let mut last = None;
    for url in urls.iter() {
        let connecting = Connection::connect(url.expose(), ConnectionProperties::default());
        match tokio::time::timeout(Duration::from_secs(3), connecting).await {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(error)) => last = Some(anyhow::Error::new(error)),
            Err(_) => last = Some(anyhow::anyhow!("no answer within 3 s")),
        }
    }
    Err(last.expect("at least one URL").context(format!("no broker node answers ({urls})")))
}

/// Replaces the database of a PostgreSQL URL.
pub fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").context("DATABASE_URL is not a URL")? + 3;
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    Ok(match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    })
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct OrderRow {
    pub order_id: i64,
    pub correlation_id: String,
    pub customer_id: String,
    pub currency: String,
    pub total: String,
    pub identity_subject: Option<String>,
    pub accepted_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct ItemRow {
    pub line_number: i32,
    pub sku: String,
    pub quantity: i32,
    pub unit_price: String,
}

/// A valid order body with the given correlation id.
pub fn order(correlation_id: &str) -> Value {
    json!({
        "correlationId": correlation_id, "customerId": "C-1042", "currency": "EUR",
        "items": [{"sku": "SKU-1", "quantity": 2, "unitPrice": 19.99}, {"sku": "SKU-2", "quantity": 1, "unitPrice": "0.0100"}],
        "acceptedAt": "2026-11-24T10:00:00Z",
        "identity": {"subject": "user-123", "claims": {"tenant": "acme"}}
    })
}

pub fn new_correlation_id() -> String {
    Uuid::new_v4().to_string()
}

/// Polls `check` every 20 ms until it yields a value; panics after 20 s naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn header<'a>(message: &'a lapin::message::BasicGetMessage, name: &str) -> Option<&'a AMQPValue> {
    message.properties.headers().as_ref()?.inner().get(name)
}

pub fn header_text(message: &lapin::message::BasicGetMessage, name: &str) -> Option<String> {
    match header(message, name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

pub fn text_header(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

pub fn body_json(message: &lapin::message::BasicGetMessage) -> Value {
    serde_json::from_slice(&message.delivery.data).expect("JSON body")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "b").unwrap(), "postgres://u@h:5432/b");
        assert_eq!(with_database("postgres://u@h:5432", "b").unwrap(), "postgres://u@h:5432/b");
        assert_eq!(with_database("postgres://u@h/x?sslmode=require", "b").unwrap(), "postgres://u@h/b?sslmode=require");
    }
}
