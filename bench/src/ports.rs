//! Loopback ports for the servers the tests and the benchmark start.

use std::net::{SocketAddr, TcpListener};

/// A loopback port for a server to bind, taken from below the kernel's
/// ephemeral range: the kernel never hands those to a socket bound to port 0
/// (as every client connection and every `:0` listener is), so nothing else
/// takes the port between this check and the server's own bind. Each call
/// takes the next port of this process's own sequence that is free now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000, ephemeral_low.max(10_100));
    let span = high - low;
    // Apart from other test processes' sequences, by process id.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {low} and {high}");
}

/// [`free_port`] on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
