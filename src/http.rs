//! Health and metrics endpoints over warp. There is no business HTTP API: orders only arrive by
//! queue.
//!
//! - `GET /health/live`: 200 while the process runs, 503 once an actor is gone for good (it
//!   panicked: only a restart helps).
//! - `GET /health/ready`: 200 once the consumer is attached to its queue, 503 before that, while
//!   reconnecting, and from the moment draining starts.
//! - `GET /metrics`: Prometheus text format.

use crate::telemetry::MetricsExporter;
use actors::Health;
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use warp::Filter;
use warp::http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize)]
pub struct HttpConfig {
    /// Address of the health endpoints (and metrics); port 0 picks a free port.
    #[arg(long, env = "ORDER_PROCESS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        actors::config::defaults()
    }
}

pub fn routes(
    health: Health,
    metrics: Arc<MetricsExporter>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let live_health = health.clone();
    let live = warp::path!("health" / "live").map(move || {
        if live_health.live() {
            warp::reply::with_status("live", StatusCode::OK)
        } else {
            warp::reply::with_status("an actor is gone; restart the process", StatusCode::SERVICE_UNAVAILABLE)
        }
    });
    let ready = warp::path!("health" / "ready").map(move || {
        let (status, text) = if health.draining() {
            (StatusCode::SERVICE_UNAVAILABLE, "draining")
        } else if health.consumer_attached() {
            (StatusCode::OK, "ready")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "consumer not attached")
        };
        warp::reply::with_status(text, status)
    });
    let metrics = warp::path!("metrics").map(move || {
        warp::reply::with_header(metrics.render(), "content-type", "text/plain; version=0.0.4; charset=utf-8")
    });
    warp::get().and(live.or(ready).or(metrics))
}

/// Binds `addr` and serves until `shutdown` completes; returns the bound address (useful with
/// port 0) and the server future to spawn.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    metrics: Arc<MetricsExporter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = warp::serve(routes(health, metrics)).incoming(listener).graceful(shutdown).run();
    Ok((bound, server))
}
