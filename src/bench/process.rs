//! The worker under test as a child process, and CPU and memory read from `/proc` (Linux).

use anyhow::Context;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields count from after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// Peak resident memory of a process, in MiB (`VmHWM`).
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The processes of PostgreSQL, Redis and RabbitMQ, by name.
pub fn server_pids() -> BTreeMap<&'static str, Vec<u32>> {
    let mut servers: BTreeMap<&'static str, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return servers };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
        let server = match comm.trim() {
            c if c.starts_with("postgres") => "postgresql",
            c if c.starts_with("redis-server") => "redis",
            c if c.starts_with("beam.smp") || c.starts_with("erl_child") || c.starts_with("epmd") => "rabbitmq",
            _ => continue,
        };
        servers.entry(server).or_default().push(pid);
    }
    servers
}

/// CPU seconds used so far by each server (PostgreSQL backends come and go; those that exited
/// during a run are missed, so the figure is a lower bound).
pub fn servers_cpu() -> BTreeMap<&'static str, f64> {
    server_pids().into_iter().map(|(name, pids)| (name, pids.into_iter().filter_map(cpu_seconds).sum())).collect()
}

/// A running `order-process run`.
pub struct Worker {
    child: Child,
    pub http: String,
}

impl Worker {
    pub async fn start(env: &[(String, String)]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = std::fs::File::create(std::env::temp_dir().join(format!("order-process-bench-{port}.log")))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("run")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("ORDER_PROCESS_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDER_PROCESS_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the worker")?;
        let worker = Self { child, http: format!("127.0.0.1:{port}") };
        for _ in 0..600 {
            if worker.get("/health/ready").await.is_ok_and(|(status, _)| status == 200) {
                return Ok(worker);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the worker did not become ready within 30 s")
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
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

    /// SIGTERM, and wait for the exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().await?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let exit = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??;
        anyhow::ensure!(exit.success(), "the worker exited with {exit}");
        Ok(())
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(peak_rss_mib(pid).unwrap() > 1.0);
    }
}
