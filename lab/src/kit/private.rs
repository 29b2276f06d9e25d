//! PostgreSQL and Redis servers of a test's own, on their own ports and data directories, for
//! tests that stop and start a dependency: they never disturb the shared services that every
//! other test is using at the same time.
//!
//! PostgreSQL runs as the `postgres` system user (initdb refuses root), with trust
//! authentication on 127.0.0.1 only; Redis keeps nothing on disk. Both are stopped, and their
//! directories removed, when the value is dropped.

use anyhow::Context;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !ready() {
        anyhow::ensure!(Instant::now() < deadline, "{what} did not come up within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A PostgreSQL server of this test's own.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL's server binaries (/usr/lib/postgresql)")?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").is_file())
            .context("no initdb under /usr/lib/postgresql")?;
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("op-private-pg-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        run(Command::new("chown").arg("postgres:").arg(&dir))?;
        let data = dir.join("data");
        run(Command::new("su").args(["postgres", "-c"]).arg(format!(
            "{} -D {} -U postgres -A trust --no-sync >/dev/null",
            bin.join("initdb").display(),
            data.display()
        )))?;
        let server = Self { port, dir, bin };
        server.start_again()?;
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, action: &str, extra: &str) -> anyhow::Result<()> {
        run(Command::new("su").args(["postgres", "-c"]).arg(format!(
            "{} -D {} -l {} {extra} {action} >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.dir.join("data").display(),
            self.dir.join("log").display(),
        )))
    }

    pub fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl("stop", "-m fast -w")
    }

    pub fn start_again(&self) -> anyhow::Result<()> {
        let options =
            format!("-w -o \"-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off\"", self.port, self.dir.display());
        self.pg_ctl("start", &options)?;
        wait_until("the private PostgreSQL", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        })
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis server of this test's own.
pub struct PrivateRedis {
    pub port: u16,
}

impl PrivateRedis {
    pub fn start() -> anyhow::Result<Self> {
        let server = Self { port: free_port()? };
        server.start_again()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]).args(args);
        command
    }

    /// Stops it, keeping its keys (saved on the way down, as a Redis with persistence would).
    pub fn stop(&self) -> anyhow::Result<()> {
        let _ = self.cli(&["shutdown", "save"]).output();
        wait_until("the private Redis to stop", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
        })
    }

    pub fn start_again(&self) -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("op-private-redis-{}", self.port));
        std::fs::create_dir_all(&dir)?;
        run(Command::new("redis-server")
            .args(["--daemonize", "yes", "--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir))?;
        wait_until("the private Redis", Duration::from_secs(10), || {
            self.cli(&["ping"]).output().is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        })
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.cli(&["shutdown", "nosave"]).output();
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("op-private-redis-{}", self.port)));
    }
}
