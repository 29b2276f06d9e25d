//! TCP_NODELAY on the database connections.
//!
//! sqlx 0.9.0 stopped disabling Nagle's algorithm on its TCP sockets (transact-rs/sqlx#4335; the
//! fix, #4336, is merged but not released). A statement larger than the socket's send buffer, such
//! as a batch insert, then leaves its tail waiting for the server's delayed ACK: about 40 ms per
//! batch, which capped batched inserts at a tenth of their speed here. Until sqlx ships the fix,
//! every new pool connection sets the option on the process's sockets that lead to the database
//! server. Remove this module when sqlx > 0.9.0 is in use.

use sea_orm::sqlx::postgres::PgConnectOptions;
use socket2::SockRef;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{BorrowedFd, RawFd};

/// The addresses of the PostgreSQL server of `url`, if it is reached over TCP.
pub fn server_addresses(url: &str) -> Vec<SocketAddr> {
    if !url.starts_with("postgres") {
        return Vec::new();
    }
    let Ok(options) = url.parse::<PgConnectOptions>() else { return Vec::new() };
    let host = options.get_host();
    if host.starts_with('/') {
        return Vec::new(); // a Unix socket: no Nagle
    }
    (host, options.get_port()).to_socket_addrs().map(Iterator::collect).unwrap_or_default()
}

/// Sets TCP_NODELAY on every socket of this process connected to one of `server`.
pub fn set_towards(server: &[SocketAddr]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return };
    for fd in entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok()) {
        // SAFETY: the descriptor was open when listed. Should another thread close it (and the
        // number be reused) meanwhile, the calls below fail or touch another socket of this
        // process, for which TCP_NODELAY is harmless.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = SockRef::from(&fd);
        let towards_server =
            socket.peer_addr().ok().and_then(|a| a.as_socket()).is_some_and(|peer| server.contains(&peer));
        if towards_server {
            let _ = socket.set_tcp_nodelay(true);
        }
    }
}
