//! Building and running the worker: connect, migrate, start the actors and the health endpoint,
//! and drain on shutdown.

use crate::http;
use crate::settings::Settings;
use crate::telemetry::MetricsExporter;
use actors::amqp::AmqpUrls;
use actors::amqp::{AmqpInbound, AmqpOutbound, Topology};
use actors::broker::BrokerKind;
use actors::events::{DependencyReconnected, Event};
use actors::messaging::{InboundBroker, OutboundBroker};
use actors::processor::DatabaseConfig;
use actors::processor::{self, SeaOrmOrderStore};
use actors::retry::until_ok;
use actors::status_writer::{self, RedisStatusStore};
use actors::{Health, Metrics, Ports, Worker};
use anyhow::Context;
use fred::interfaces::{ClientLike, EventInterface};
use migration::{Migrator, MigratorTrait};
use sea_orm::DatabaseConnection;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How often the inbound and dead-letter queue depths are read from the broker.
const QUEUE_SAMPLE_INTERVAL: Duration = Duration::from_secs(15);

/// A running worker.
pub struct Application {
    worker: Worker,
    http_addr: SocketAddr,
    stop_http: oneshot::Sender<()>,
    http: tokio::task::JoinHandle<()>,
    db: DatabaseConnection,
    redis: fred::clients::Client,
    metrics: Arc<MetricsExporter>,
    sampler: Option<tokio::task::JoinHandle<()>>,
    settings: Settings,
}

/// The consumer's and the publisher's ports on the broker the settings choose, and the queue
/// depth sampler where the broker tells depths without an administration API (RabbitMQ).
type BrokerPorts = (Arc<dyn InboundBroker>, Arc<dyn OutboundBroker>, Option<tokio::task::JoinHandle<()>>);

fn broker_ports(settings: &Settings, metrics: &Metrics) -> anyhow::Result<BrokerPorts> {
    let worker = &settings.worker;
    match settings.broker_kind()? {
        BrokerKind::Rabbitmq => {
            let delays = &worker.consumer.redelivery.retry_delays;
            let topology = Arc::new(Topology::new(&worker.queues, &settings.amqp, delays));
            let url = &settings.amqp.amqp_url;
            let sampler = actix_rt::spawn(sample_queue_depths(url.clone(), topology.clone(), metrics.clone()));
            Ok((
                Arc::new(AmqpInbound::new(url.clone(), topology.clone(), settings.amqp.settle_confirm_timeout)),
                Arc::new(AmqpOutbound::new(url.clone(), topology)),
                Some(sampler),
            ))
        }
        #[cfg(feature = "servicebus")]
        BrokerKind::Servicebus => {
            use actors::servicebus::{ServiceBusInbound, ServiceBusOutbound};
            let config = Arc::new(settings.servicebus.clone());
            Ok((
                Arc::new(ServiceBusInbound::new(config.clone(), worker.queues.inbound_queue.clone())),
                Arc::new(ServiceBusOutbound::new(config)),
                None,
            ))
        }
        #[cfg(not(feature = "servicebus"))]
        BrokerKind::Servicebus => Err(actors::broker::BrokerChoiceError::ServiceBusNotBuilt.into()),
    }
}

impl Application {
    /// Starts everything on the current actix system. The health endpoint comes up first, so
    /// liveness answers (and readiness says 503) while dependencies are still being reached.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        tracing::info!(settings = %serde_json::to_string(&settings)?, "starting order-process");
        let health = Health::default();
        let (exporter, metrics) = MetricsExporter::new()?;
        let exporter = Arc::new(exporter);
        let (stop_http, stopped) = oneshot::channel::<()>();
        let (http_addr, server) = http::serve(settings.http.http_addr, health.clone(), exporter.clone(), async {
            let _ = stopped.await;
        })
        .await
        .with_context(|| format!("cannot listen on {} (ORDER_PROCESS_HTTP_ADDR)", settings.http.http_addr))?;
        let http = actix_rt::spawn(server);
        tracing::info!(%http_addr, "health endpoints up");

        let worker = &settings.worker;
        let db = processor::connect(&worker.processor.database, worker.processor.sql_retry.timeout)
            .await
            .context("DATABASE_URL is not usable")?;
        if settings.migrate_on_start {
            until_ok("apply database migrations", || Migrator::up(&db, None)).await;
            tracing::info!("database schema up to date");
        }
        let redis = status_writer::redis_client(&worker.status).context("REDIS_URL is not usable")?;
        let reconnects = metrics.actor(actors::metrics::Actor::StatusWriter);
        let connected_before = std::sync::atomic::AtomicBool::new(false);
        redis.on_reconnect(move |_| {
            // fred reports the first connection as a reconnection too.
            if connected_before.swap(true, std::sync::atomic::Ordering::Relaxed) {
                DependencyReconnected.emit(&reconnects);
            }
            async { Ok(()) }
        });
        redis.connect();

        let (inbound, outbound, sampler) = broker_ports(&settings, &metrics)?;
        let ports = Ports {
            inbound,
            outbound,
            orders: Arc::new(SeaOrmOrderStore::new(db.clone())),
            statuses: Arc::new(RedisStatusStore::new(redis.clone(), &worker.status)),
        };
        let worker = Worker::start(ports, worker.clone(), health, metrics);
        Ok(Self { worker, http_addr, stop_http, http, db, redis, metrics: exporter, sampler, settings })
    }

    /// The address the health endpoint is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The Prometheus exposition of this worker's metrics (what `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    pub fn health(&self) -> &Health {
        &self.worker.health
    }

    /// Runs until `shutdown` completes, then drains: no new deliveries, the ones in flight finish
    /// (up to the drain timeout) and are acked, connections close.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        shutdown.await;
        let timeout = self.settings.worker.consumer.drain_timeout;
        tracing::info!(?timeout, "draining");
        match self.worker.drain(timeout).await {
            Ok(report) if report.abandoned > 0 => {
                tracing::warn!(
                    abandoned = report.abandoned,
                    "drain timed out; unfinished deliveries return to the queue"
                )
            }
            Ok(_) => tracing::info!("drained"),
            // The consumer stopped on its own (its connection broke): what it had returns to the
            // queue with that connection. Still a clean shutdown.
            Err(error) => {
                tracing::warn!(%error, "the consumer stopped during the drain; unsettled deliveries return to the queue")
            }
        }
        if let Some(sampler) = self.sampler {
            sampler.abort();
        }
        let _ = self.redis.quit().await;
        let _ = self.db.close().await;
        let _ = self.stop_http.send(());
        let _ = self.http.await;
        if let Ok(exporter) = Arc::try_unwrap(self.metrics) {
            exporter.shutdown().await;
        }
        Ok(())
    }
}

/// Samples the depth of the inbound and dead-letter queues, so that an alert can fire on a growing
/// backlog or dead-letter queue. A failed sample is skipped (and logged at debug).
async fn sample_queue_depths(url: AmqpUrls, topology: Arc<Topology>, metrics: Metrics) {
    // The first sample after one interval: by then the consumer has declared the queues.
    let first = tokio::time::Instant::now() + QUEUE_SAMPLE_INTERVAL;
    let mut every = tokio::time::interval_at(first, QUEUE_SAMPLE_INTERVAL);
    loop {
        every.tick().await;
        match actors::amqp::queue_depths(&url, &topology).await {
            Ok((inbound, dead_letter)) => {
                metrics.queue_depth("inbound", inbound);
                metrics.queue_depth("dead_letter", dead_letter);
            }
            Err(error) => tracing::debug!(error = %actors::error::Chain(&error), "could not sample the queue depths"),
        }
    }
}

/// Applies pending migrations and returns.
pub async fn migrate(database: &DatabaseConfig) -> anyhow::Result<()> {
    let db = processor::connect(database, Duration::from_secs(30)).await.context("DATABASE_URL is not usable")?;
    Migrator::up(&db, None).await.context("migration failed")?;
    db.close().await?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// the future is first polled, so a signal that arrives during startup is not lost (and does not
/// kill the process with the default action).
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail on Unix");
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing a SIGINT handler cannot fail on Unix");
    async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    }
}
