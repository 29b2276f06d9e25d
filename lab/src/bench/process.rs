//! CPU and memory of the worker and of the servers, read from `/proc` (Linux).

use std::collections::BTreeMap;

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
