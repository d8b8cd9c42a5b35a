//! One client per etcd member. Calls go to the member that answered last; a
//! member that cannot be reached (down, cut off, or without a leader) is left
//! for the next, so a cluster that keeps its quorum keeps answering, and a
//! failed call counts as a store failure only when no member answered.

use crate::retry::Backoff;
use etcd_client::{Client, ConnectOptions};
use slog::{info, Logger};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Rounds over every member before a call fails (between rounds: a short
/// wait, long enough for an election).
const ROUNDS: usize = 4;

pub(super) struct Members {
    endpoints: Vec<String>,
    options: ConnectOptions,
    clients: Vec<OnceCell<Client>>,
    /// The member calls go to first.
    current: AtomicUsize,
    log: Logger,
}

/// Whether `e` says the member could not serve the call (rather than that
/// the call itself was refused): the next member may.
pub(super) fn unreachable(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

impl Members {
    pub(super) fn new(endpoints: &[String], options: ConnectOptions, log: Logger) -> Members {
        Members {
            endpoints: endpoints.to_vec(),
            options,
            clients: endpoints.iter().map(|_| OnceCell::new()).collect(),
            current: AtomicUsize::new(0),
            log,
        }
    }

    /// The client of member `i`, connected on first use.
    async fn client(&self, i: usize) -> Result<Client, etcd_client::Error> {
        self.clients[i]
            .get_or_try_init(|| Client::connect([&self.endpoints[i]], Some(self.options.clone())))
            .await
            .cloned()
    }

    /// Runs `call` on the current member, moving on to the others while a
    /// member cannot serve it.
    pub(super) async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len().max(1);
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut failure = None;
        for attempt in 0..ROUNDS * n {
            if attempt > 0 && attempt % n == 0 {
                tokio::time::sleep(backoff.delay()).await;
            }
            let i = (first + attempt) % n;
            let result = match self.client(i).await {
                Ok(client) => call(client).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if unreachable(&e) => failure = Some(e),
                done => {
                    if self.current.swap(i, Ordering::Relaxed) != i {
                        info!(self.log, "etcd calls go to another member";
                            "endpoint" => &self.endpoints[i]);
                    }
                    return done;
                }
            }
        }
        Err(failure.unwrap_or_else(|| etcd_client::Error::InvalidArgs("no etcd endpoints".into())))
    }
}
