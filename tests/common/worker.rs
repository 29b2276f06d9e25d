//! The real `order-process` binary as a child process, with the settings of a [`TestEnv`].

use super::*;
use sea_orm::ConnectionTrait;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The worker as a child process, its logs in `target/chaos/`.
pub struct WorkerProcess {
    child: Child,
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chaos");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl WorkerProcess {
    pub fn start(env: &TestEnv, number: usize) -> Self {
        let log = std::fs::File::create(log_dir().join(format!("{}-worker-{number}.log", env.id))).unwrap();
        let s = &env.settings;
        let child = Command::new(env!("CARGO_BIN_EXE_order-process"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AMQP_URL", s.amqp.url.expose())
            .env("DATABASE_URL", s.processor.database_url.expose())
            .env("REDIS_URL", s.status.redis_url.expose())
            .env("ORDER_PROCESS_INBOUND_QUEUE", &s.amqp.inbound_queue)
            .env("ORDER_PROCESS_OUTBOUND_QUEUE", &s.amqp.outbound_queue)
            .env("ORDER_PROCESS_REDIS_KEY_PREFIX", &s.status.key_prefix)
            .env("ORDER_PROCESS_HTTP_ADDR", "127.0.0.1:0")
            .env("ORDER_PROCESS_RETRY_DELAYS", "250ms,500ms,1s,2s")
            .env("ORDER_PROCESS_MAX_ATTEMPTS", "30")
            .env("ORDER_PROCESS_DRAIN_TIMEOUT", format!("{}s", DRAIN_TIMEOUT.as_secs()))
            .env("ORDER_PROCESS_SQL_RETRY", "timeout=2s,retries=2,backoff=50ms..500ms")
            .env("ORDER_PROCESS_REDIS_RETRY", "timeout=1s,retries=2,backoff=50ms..500ms")
            .env("ORDER_PROCESS_PUBLISH_RETRY", "timeout=2s,retries=2,backoff=50ms..500ms")
            .env("ORDER_PROCESS_BATCH_SIZE", s.consumer.batch_size.to_string())
            .env("ORDER_PROCESS_BATCH_LINGER", actors::retry::format_duration(s.consumer.batch_linger))
            .env("ORDER_PROCESS_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        Self { child }
    }

    pub async fn kill(mut self) {
        self.child.kill().await.unwrap(); // SIGKILL
    }

    /// SIGTERM; returns the exit code and how long the drain took.
    pub async fn terminate(mut self) -> (Option<i32>, Duration) {
        let pid = self.child.id().expect("running") as i32;
        let started = Instant::now();
        signal(pid, "TERM").await;
        let status = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(10), self.child.wait())
            .await
            .expect("the worker exits after SIGTERM")
            .unwrap();
        (status.code(), started.elapsed())
    }
}

async fn signal(pid: i32, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().await.unwrap();
    assert!(status.success());
}

/// Starts worker number 1 and waits until it created the schema and the queues.
pub async fn start_first_worker(env: &TestEnv) -> WorkerProcess {
    let worker = WorkerProcess::start(env, 1);
    eventually("the schema", || async {
        env.db.execute_unprepared("SELECT 1 FROM orders LIMIT 1").await.ok().map(|_| ())
    })
    .await;
    eventually("the queues", || async {
        let channel = env.amqp.create_channel().await.ok()?;
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        channel.queue_declare(env.inbound().into(), passive, Default::default()).await.ok().map(|_| ())
    })
    .await;
    worker
}
