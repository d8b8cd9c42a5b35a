//! The HTTP listener: actix-web's own [`HttpServer`], over TLS when TLS is on.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use actix_server::Server;
use actix_web::{web, HttpServer};

use super::State;

/// How long an idle keep-alive connection is kept.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a client has to send its first request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection may take to shut down.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pending connections the kernel queues before they are accepted.
const BACKLOG: u32 = 1024;
/// How long a graceful stop waits for requests in flight.
const SHUTDOWN_TIMEOUT: u64 = 5;

/// Binds `bind` and builds the server (not yet running); the address is the
/// bound one (the real port when `bind` asks for port 0).
pub fn listen(
    state: web::Data<State>,
    bind: SocketAddr,
    tls: Option<rustls::ServerConfig>,
    workers: usize,
) -> io::Result<(SocketAddr, Server)> {
    let server = HttpServer::new(move || super::app(state.clone()))
        .workers(workers)
        .backlog(BACKLOG)
        .keep_alive(KEEP_ALIVE)
        .client_request_timeout(REQUEST_TIMEOUT)
        .client_disconnect_timeout(DISCONNECT_TIMEOUT)
        // A client that closes its side is gone: its stream stops at once
        // (an idle stream would otherwise notice only at its next write).
        .h1_allow_half_closed(false)
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT);
    let server = match tls {
        None => server.bind(bind)?,
        Some(tls) => server.bind_rustls_0_23(bind, tls)?,
    };
    let addr = server.addrs()[0];
    Ok((addr, server.run()))
}
