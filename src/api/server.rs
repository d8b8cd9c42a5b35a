//! The HTTP listener: actix-server accepts connections, each one is put
//! behind a framing [`Guarded`] (after TLS, when TLS is on) and served by
//! actix-http's HTTP/1 dispatcher with the API [`app`](super::app).
//!
//! This is what `actix_web::HttpServer` builds, with the one thing it cannot
//! do: wrap the connection's I/O.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use actix_http::{h1::H1Service, HttpService};
use actix_server::{GracefulShutdownSignal, Server, ServerBuilder};
use actix_service::ServiceFactoryExt as _;
use actix_service::{fn_service, map_config, IntoServiceFactory as _, ServiceFactory};
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_tls::accept::TlsError;
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;
use actix_web::web;

use super::framing::Guarded;
use super::State;

/// How long an idle keep-alive connection is kept.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a client has to send its first request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection may take to shut down.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pending connections the kernel queues before they are accepted.
const BACKLOG: i32 = 1024;
/// How long a graceful stop waits for requests in flight.
const SHUTDOWN_TIMEOUT: u64 = 5;

/// Binds `bind` and builds the server (not yet running).
pub fn listen(
    state: web::Data<State>,
    bind: SocketAddr,
    tls: Option<rustls::ServerConfig>,
    workers: usize,
) -> io::Result<(SocketAddr, Server)> {
    let listener = tcp_listener(bind)?;
    let addr = listener.local_addr()?;
    let builder = ServerBuilder::default()
        .workers(workers)
        .backlog(BACKLOG as u32)
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT);
    let shutdown = builder.graceful_shutdown_signal();
    let builder = match tls {
        None => builder.listen("css-http", listener, move || {
            fn_service(|io: TcpStream| async move {
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                Ok::<_, actix_http::error::DispatchError>((Guarded::new(io), peer))
            })
            .and_then(http1(state.clone(), addr, false, shutdown.clone()))
        })?,
        Some(tls) => builder.listen("css-https", listener, move || {
            fn_service(|io: TcpStream| async move {
                let _ = io.set_nodelay(true);
                Ok::<_, TlsError<io::Error, Infallible>>(io)
            })
            .and_then(Acceptor::new(tls.clone()))
            .map_err(|e| match e {
                TlsError::Tls(e) => actix_http::error::DispatchError::Io(e),
                TlsError::Timeout => actix_http::error::DispatchError::SlowRequestTimeout,
                TlsError::Service(never) => match never {},
            })
            .and_then(fn_service(|io: TlsStream<TcpStream>| async move {
                let peer = io.get_ref().0.peer_addr().ok();
                Ok((Guarded::new(io), peer))
            }))
            .and_then(http1(state.clone(), addr, true, shutdown.clone()))
        })?,
    };
    Ok((addr, builder.run()))
}

/// The HTTP/1 service over a guarded connection.
fn http1<T>(
    state: web::Data<State>,
    addr: SocketAddr,
    secure: bool,
    shutdown: GracefulShutdownSignal,
) -> impl ServiceFactory<
    (Guarded<T>, Option<SocketAddr>),
    Config = (),
    Response = (),
    Error = actix_http::error::DispatchError,
    InitError = (),
>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let app = super::app(state)
        .into_factory()
        .map_err(|err: actix_web::Error| err.as_response_error().error_response());
    let mut builder: actix_http::HttpServiceBuilder<Guarded<T>, _> = HttpService::build()
        .keep_alive(KEEP_ALIVE)
        .client_request_timeout(REQUEST_TIMEOUT)
        .client_disconnect_timeout(DISCONNECT_TIMEOUT)
        // A client that closes its side is gone: its stream stops at once
        // (an idle stream would otherwise notice only at its next write).
        .h1_allow_half_closed(false)
        .local_addr(addr)
        .graceful_shutdown_signal(move || {
            let signal = shutdown.clone();
            async move { signal.notified().await }
        })
        .on_connect_ext(|io: &Guarded<T>, data| {
            data.insert(io.verdict());
        });
    if secure {
        builder = builder.secure();
    }
    // The app's own configuration as HttpServer makes it (actix-web's only
    // constructor for it is the one actix-test uses).
    let service: H1Service<Guarded<T>, _, _> = builder.h1(map_config(app, move |()| {
        AppConfig::__priv_test_new(secure, addr.to_string(), addr)
    }));
    service
}

/// A listening socket as actix-server makes one (`SO_REUSEADDR`, a backlog
/// of [`BACKLOG`]).
fn tcp_listener(bind: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&bind.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
