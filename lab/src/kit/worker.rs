//! The real `order-process` binary as a child process, configured from a [`Settings`] value
//! through [`super::child::settings_env`]: what a test or a benchmark sets is what the child runs
//! with, without a hand-written list of variables.

use super::child::settings_env;
use super::{Sandbox, eventually};
use actors::retry::RetryPolicy;
use anyhow::Context;
use order_process::settings::Settings;
use sea_orm::ConnectionTrait;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The worker as a child process, its log in a file.
pub struct WorkerProcess {
    child: Child,
    /// `host:port` of its health and metrics endpoints.
    pub http: String,
    pub log: PathBuf,
    drain_timeout: Duration,
}

/// The `order-process` binary next to the running executable (in `target/<profile>/`, where
/// `cargo build` puts it), or the one named by `ORDER_PROCESS_BIN`.
pub fn worker_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ORDER_PROCESS_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let found = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("order-process"))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("no order-process binary beside {}: run `cargo build --release -p order-process` (or set ORDER_PROCESS_BIN)", exe.display()))?;
    Ok(found)
}

impl WorkerProcess {
    /// Starts `binary` with `settings` (its HTTP endpoint on a free loopback port), logging JSON
    /// lines to `log`, filtered by `rust_log` (`RUST_LOG`; `None`: the worker's default level).
    pub fn spawn(binary: &Path, settings: &Settings, rust_log: Option<&str>, log: PathBuf) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut settings = settings.clone();
        settings.http.http_addr = ([127, 0, 0, 1], port).into();
        settings.log.log_format = order_process::telemetry::LogFormat::Json;
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(settings_env(&settings));
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let drain_timeout = settings.worker.consumer.drain_timeout;
        Ok(Self { child, http: format!("127.0.0.1:{port}"), log, drain_timeout })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Waits until the worker reports ready (consumer attached), up to `limit`.
    pub async fn ready(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.get("/health/ready").await.is_ok_and(|(status, _)| status == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the worker did not become ready within {limit:?} (log: {})", self.log.display())
    }

    /// A tiny HTTP/1.0 GET, enough for the health and metrics endpoints.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.http).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.http).as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    }

    /// SIGKILL.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("the worker can be killed");
    }

    /// SIGTERM; returns the exit code and how long the drain took.
    pub async fn terminate(mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        signal(self.pid(), "TERM").await;
        let status = tokio::time::timeout(self.drain_timeout + Duration::from_secs(10), self.child.wait())
            .await
            .expect("the worker exits after SIGTERM")
            .expect("waiting for the worker");
        (status.code(), started.elapsed())
    }

    /// SIGTERM, and an error unless the worker exits 0.
    pub async fn stop(self) -> anyhow::Result<()> {
        let (code, _) = self.terminate().await;
        anyhow::ensure!(code == Some(0), "the worker exited with {code:?}");
        Ok(())
    }
}

async fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().await;
    assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
}

/// The drain timeout of the workers [`WorkerProcess::start`] starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The sandbox's settings for a worker that must ride out faults within a test's time: short
/// retry delays and many attempts (a fault outlasts the in-process retries, never the broker
/// ones), quick in-process retries.
pub fn resilient(sandbox: &Sandbox) -> Settings {
    let mut settings = sandbox.settings.clone();
    let worker = &mut settings.worker;
    worker.consumer.redelivery.retry_delays = "250ms,500ms,1s,2s".parse().expect("valid delays");
    worker.consumer.redelivery.max_attempts = 30;
    worker.consumer.drain_timeout = DRAIN_TIMEOUT;
    let quick: RetryPolicy = "timeout=2s,retries=2,backoff=50ms..500ms".parse().expect("a valid policy");
    worker.processor.sql_retry = quick;
    worker.status.redis_retry = RetryPolicy { timeout: Duration::from_secs(1), ..quick };
    worker.publisher.publish_retry = quick;
    settings
}

impl WorkerProcess {
    /// Starts worker number `number` of a sandbox with its [`resilient`] settings, logging at info
    /// to `target/chaos/{id}-worker-{number}.log`.
    pub fn start(sandbox: &Sandbox, number: usize) -> Self {
        let binary = worker_binary().expect("the order-process binary is built");
        Self::spawn(&binary, &resilient(sandbox), Some("info"), log_path(sandbox, number)).expect("the worker starts")
    }
}

/// Where the logs of a sandbox's child workers go: `target/chaos/{id}-worker-{number}.log`.
pub fn log_path(sandbox: &Sandbox, number: usize) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/chaos");
    std::fs::create_dir_all(&dir).expect("the log directory can be created");
    dir.join(format!("{}-worker-{number}.log", sandbox.id))
}

/// Starts worker number 1 and waits until it created the schema and the queues.
pub async fn start_first_worker(sandbox: &Sandbox) -> WorkerProcess {
    let worker = WorkerProcess::start(sandbox, 1);
    eventually("the schema", || async {
        sandbox.db.execute_unprepared("SELECT 1 FROM orders LIMIT 1").await.ok().map(|_| ())
    })
    .await;
    eventually("the queues", || async {
        let channel = sandbox.amqp.create_channel().await.ok()?;
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        channel.queue_declare(sandbox.inbound().into(), passive, Default::default()).await.ok().map(|_| ())
    })
    .await;
    worker
}
