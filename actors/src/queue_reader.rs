//! QueueReader: consumes the ECS event queue (SQS), the service's source in
//! production.
//!
//! `pollers` loops each long-poll up to 10 messages, hand them to the
//! EventDecoder, and delete (in one batch) only the messages whose effect is
//! durably stored — applied, stale or ignored: a message is never
//! acknowledged before its effect is durable. Undecodable messages
//! go to the dead-letter queue when one is configured, and are then deleted;
//! otherwise they are left to the queue's own redrive policy. While the store
//! is unavailable nothing is received, so nothing is acknowledged that was
//! not written. Every error backs off, and the backoff resets after a success.
//!
//! Stopping ([`Drain`]) starts no new receive and lets the receives in
//! progress return: SQS would otherwise hand a message to a long poll whose
//! client has gone, and hide it for the visibility timeout. What they
//! return is applied and acknowledged while the grace period lasts; what is
//! still held when it ends (or arrives too late to apply, or cannot be
//! stored) is handed back at once (`ChangeMessageVisibility` 0) so the next
//! process receives it.

use crate::decoder::{Decode, EventDecoder, MessageOutcome, RawMessage};
use crate::metrics::Metrics;
use crate::reader::{Health, Reader, SourceState, SourceStatus};
use crate::retry::Backoff;
use actix::prelude::*;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName,
};
use aws_sdk_sqs::Client;
use slog::{error, info, warn, Logger};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most messages SQS returns in one receive.
const MAX_MESSAGES: i32 = 10;
/// Attempts at deleting one batch; what is left reappears and is a no-op then.
const DELETE_ATTEMPTS: u32 = 3;
/// What a drain keeps of its grace period for handing messages back.
const HAND_BACK_TIME: Duration = Duration::from_secs(1);
/// A batch received while stopping is applied only if this much of the
/// grace period is left; otherwise it is handed back at once.
const MIN_APPLY_TIME: Duration = Duration::from_secs(2);

/// `[source]`: the SQS queue of ECS events.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Queue name, `sqs://NAME` or queue URL; empty: no queue. Default empty.
    pub queue: String,
    /// One queue per region (accounts.md), each read by its own
    /// QueueReader; replaces `queue`, and cannot be set with it. Default empty.
    pub queues: Vec<RegionQueue>,
    /// Long-poll wait of a receive, 0–20 s (SQS's limit). A stop waits for
    /// the receives in progress, so this stays below the stop's grace
    /// period. Default 5s.
    #[serde(with = "humantime_serde")]
    pub wait_time: Duration,
    /// How long a received message stays hidden; must exceed the worst time
    /// from receive to durable write. Default 1m.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// Concurrent receive loops of 10 messages each, 1–64. Default 2.
    pub pollers: usize,
    /// Name, `sqs://NAME` or URL of the queue undecodable messages go to;
    /// empty: the queue's own redrive policy. Default empty.
    pub dead_letter_queue: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            queue: String::new(),
            queues: Vec::new(),
            wait_time: Duration::from_secs(5),
            visibility_timeout: Duration::from_secs(60),
            pollers: 2,
            dead_letter_queue: String::new(),
        }
    }
}

impl Config {
    /// Ranges serde's types do not check.
    pub fn check(&self, problems: &mut Vec<String>) {
        crate::check::within("source.pollers", self.pollers, 1, 64, problems);
        if !self.queue.is_empty() && !self.queues.is_empty() {
            problems.push("source.queue and source.queues cannot both be set".into());
        }
        for (i, q) in self.queues.iter().enumerate() {
            if q.queue.is_empty() {
                problems.push(format!("source.queues[{i}].queue: must not be empty"));
            }
            if let Some(r) = q
                .region
                .as_deref()
                .filter(|r| !crate::arn::is_valid_region(r))
            {
                problems.push(format!(
                    "source.queues[{i}].region: {r:?} is not a region name (such as us-east-1)"
                ));
            }
        }
        if self.wait_time > Duration::from_secs(20) {
            problems.push("source.wait_time: SQS waits at most 20s".into());
        }
    }

    /// Every queue to read, each with its region (`None`: the ambient one).
    pub fn all_queues(&self) -> Vec<RegionQueue> {
        match self.queue.is_empty() {
            false => vec![RegionQueue {
                queue: self.queue.clone(),
                region: None,
            }],
            true => self.queues.clone(),
        }
    }

    /// The settings of the reader of one of [`Config::all_queues`].
    pub fn for_queue(&self, q: &RegionQueue) -> Config {
        Config {
            queue: q.queue.clone(),
            queues: Vec::new(),
            ..self.clone()
        }
    }

    fn dead_letter_queue(&self) -> Option<&str> {
        Some(self.dead_letter_queue.as_str()).filter(|q| !q.is_empty())
    }
}

/// One entry of `source.queues`: a queue and the region it is in.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionQueue {
    /// Name, `sqs://NAME` or URL.
    pub queue: String,
    /// Default: the ambient region (`AWS_REGION`).
    #[serde(default)]
    pub region: Option<String>,
}

/// What a `--queue` value names.
#[derive(Debug, PartialEq, Eq)]
enum QueueRef {
    /// A queue name (`NAME` or `sqs://NAME`): its URL is looked up.
    Name(String),
    Url(String),
}

impl QueueRef {
    fn parse(q: &str) -> QueueRef {
        if q.starts_with("https://") || q.starts_with("http://") {
            QueueRef::Url(q.to_owned())
        } else {
            QueueRef::Name(q.strip_prefix("sqs://").unwrap_or(q).to_owned())
        }
    }
}

/// Finds the URL of a queue given as a name, `sqs://NAME` or URL.
async fn queue_url(client: &Client, q: &str) -> Result<String, String> {
    match QueueRef::parse(q) {
        QueueRef::Url(url) => Ok(url),
        QueueRef::Name(name) => client
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot find queue {name}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            })?
            .queue_url()
            .map(str::to_owned)
            .ok_or_else(|| format!("no URL for queue {name}")),
    }
}

/// What a QueueReader works with.
pub struct Wiring {
    pub client: Client,
    pub config: Config,
    /// Decodes and stores what is received.
    pub decoder: Addr<EventDecoder>,
    /// Nothing is received while the store could not take it.
    pub reader: Reader,
    /// Where the queue's state is shown (`/readyz`, `css_source_up`).
    pub status: SourceStatus,
    pub metrics: Arc<Metrics>,
    pub log: Logger,
}

struct Inner {
    wiring: Wiring,
    stopping: AtomicBool,
    /// When a drain's grace period ends; set when stopping.
    deadline: Mutex<Option<Instant>>,
    /// The queue's URL, once resolved.
    url: OnceLock<String>,
    /// Receives in progress and batches received and not yet finished.
    in_flight: watch::Sender<usize>,
    /// Receipt handles of the messages received and not yet finished, by
    /// batch: what a drain hands back when its grace period ends.
    held: Mutex<HashMap<u64, Vec<String>>>,
    next_batch: AtomicU64,
}

impl Inner {
    /// Whether a batch received now is too late to apply within the grace.
    fn too_late(&self) -> bool {
        let deadline = *self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) < MIN_APPLY_TIME)
    }

    fn hold(&self, messages: &[Message]) -> u64 {
        let id = self.next_batch.fetch_add(1, Ordering::SeqCst);
        let handles = messages
            .iter()
            .filter_map(|m| m.receipt_handle().map(str::to_owned));
        self.held_set().insert(id, handles.collect());
        id
    }

    fn held_set(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<String>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stop receiving; answered once the receives in progress have returned and
/// what they returned is finished and acknowledged (or, where it could not
/// be stored, handed back), or after `grace` (less [`HAND_BACK_TIME`]), once
/// what is still held is handed back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub grace: Duration,
}

/// The QueueReader actor.
pub struct QueueReader {
    inner: Arc<Inner>,
}

impl QueueReader {
    pub fn new(wiring: Wiring) -> Self {
        QueueReader {
            inner: Arc::new(Inner {
                wiring,
                stopping: AtomicBool::new(false),
                deadline: Mutex::new(None),
                url: OnceLock::new(),
                in_flight: watch::channel(0).0,
                held: Mutex::new(HashMap::new()),
                next_batch: AtomicU64::new(0),
            }),
        }
    }
}

impl std::ops::Deref for Inner {
    type Target = Wiring;

    fn deref(&self) -> &Wiring {
        &self.wiring
    }
}

impl Actor for QueueReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(run(self.inner.clone()).into_actor(self));
    }
}

impl Supervised for QueueReader {
    fn restarting(&mut self, _: &mut Context<Self>) {
        warn!(self.inner.log, "QueueReader restarting");
    }
}

impl Handler<Drain> for QueueReader {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        let inner = self.inner.clone();
        *inner.deadline.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + msg.grace);
        inner.stopping.store(true, Ordering::SeqCst);
        let mut in_flight = inner.in_flight.subscribe();
        Box::pin(async move {
            let wait = msg.grace.saturating_sub(HAND_BACK_TIME);
            let _ = tokio::time::timeout(wait, in_flight.wait_for(|n| *n == 0)).await;
            let held: Vec<String> = inner.held_set().drain().flat_map(|(_, h)| h).collect();
            if !held.is_empty() {
                if let Some(url) = inner.url.get() {
                    let back = hand_back(&inner, url, &held);
                    let _ = tokio::time::timeout(HAND_BACK_TIME, back).await;
                }
            }
        })
    }
}

async fn run(inner: Arc<Inner>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let urls = loop {
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let main = queue_url(&inner.client, &inner.config.queue).await;
        let dlq = match inner.config.dead_letter_queue() {
            Some(q) => queue_url(&inner.client, q).await.map(Some),
            None => Ok(None),
        };
        match (main, dlq) {
            (Ok(main), Ok(dlq)) => break (main, dlq),
            (Err(e), _) | (_, Err(e)) => {
                inner.status.set(SourceState::Down);
                let delay = backoff.delay();
                warn!(inner.log, "cannot resolve the queue; retrying"; "error" => e, "retry_in_ms" => delay.as_millis() as u64);
                tokio::time::sleep(delay).await;
            }
        }
    };
    info!(inner.log, "receiving events"; "queue" => &urls.0, "pollers" => inner.config.pollers,
        "dead_letter_queue" => urls.1.clone().unwrap_or_default());
    let _ = inner.url.set(urls.0.clone());
    let urls = Arc::new(urls);
    let pollers: Vec<_> = (0..inner.config.pollers.max(1))
        .map(|_| actix::spawn(poll(inner.clone(), urls.clone())))
        .collect();
    for p in pollers {
        let _ = p.await;
    }
}

/// One receive loop. A receive counts as in flight from before it starts
/// (then `stopping` is read) until what it returned is finished, so that a
/// drain waits for it.
async fn poll(inner: Arc<Inner>, urls: Arc<(String, Option<String>)>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        if !inner.reader.health().writable() {
            // Nothing is received that could not be written.
            inner.reader.wait_for(Health::writable).await;
        }
        inner.in_flight.send_modify(|n| *n += 1);
        let go = !inner.stopping.load(Ordering::SeqCst);
        if go {
            receive(&inner, &urls.0, urls.1.as_deref(), &mut backoff).await;
        }
        inner.in_flight.send_modify(|n| *n -= 1);
        if !go {
            return;
        }
    }
}

/// One receive, and what becomes of the messages it returned.
async fn receive(inner: &Inner, url: &str, dlq: Option<&str>, backoff: &mut Backoff) {
    let m = &inner.metrics;
    let wait = inner.config.wait_time.as_secs().min(20) as i32;
    let visibility = inner.config.visibility_timeout.as_secs().clamp(1, 43_200) as i32;
    let started = Instant::now();
    let received = inner
        .client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(MAX_MESSAGES)
        .wait_time_seconds(wait)
        .visibility_timeout(visibility)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await;
    m.sqs
        .receive_seconds
        .observe(started.elapsed().as_secs_f64());
    let messages = match received {
        Ok(out) => {
            backoff.reset();
            if inner.status.set(SourceState::Up) {
                info!(inner.log, "the queue answers");
            }
            out.messages.unwrap_or_default()
        }
        Err(e) => {
            m.sqs.receive_errors.inc();
            inner.status.set(SourceState::Down);
            let delay = backoff.delay();
            warn!(inner.log, "receive failed; backing off";
                "error" => %aws_sdk_sqs::error::DisplayErrorContext(&e), "retry_in_ms" => delay.as_millis() as u64);
            tokio::time::sleep(delay).await;
            return;
        }
    };
    if messages.is_empty() {
        return;
    }
    let batch = inner.hold(&messages);
    if inner.too_late() {
        // Stopping, with no time left to apply them: the next process gets them.
        let handles = inner.held_set().remove(&batch).unwrap_or_default();
        hand_back(inner, url, &handles).await;
        return;
    }
    let stored = handle(inner, url, dlq, messages, backoff).await;
    let handles = inner.held_set().remove(&batch).unwrap_or_default();
    if !stored && inner.stopping.load(Ordering::SeqCst) {
        // Not written, and this process stops: the next one takes them now.
        hand_back(inner, url, &handles).await;
    }
}

/// Makes the messages of `handles` visible on the queue again at once
/// (`ChangeMessageVisibility` 0), so another process receives them now.
async fn hand_back(inner: &Inner, url: &str, handles: &[String]) {
    let mut back = 0;
    for chunk in handles.chunks(MAX_MESSAGES as usize) {
        let entries = chunk.iter().enumerate().filter_map(|(i, h)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(h)
                .visibility_timeout(0)
                .build()
                .ok()
        });
        let sent = inner
            .client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries.collect()))
            .send()
            .await;
        match sent {
            Ok(out) => back += chunk.len() - out.failed().len(),
            Err(e) => {
                warn!(inner.log, "cannot hand messages back; they reappear after the visibility timeout";
                "count" => chunk.len(), "error" => %aws_sdk_sqs::error::DisplayErrorContext(&e))
            }
        }
    }
    info!(inner.log, "stopping: handed messages back to the queue"; "count" => back, "of" => handles.len());
}

async fn handle(
    inner: &Inner,
    url: &str,
    dlq: Option<&str>,
    messages: Vec<Message>,
    backoff: &mut Backoff,
) -> bool {
    let raw: Vec<RawMessage> = messages
        .iter()
        .map(|msg| RawMessage {
            id: msg.message_id().unwrap_or_default().to_owned(),
            body: msg.body().unwrap_or_default().to_owned(),
            receive_count: msg
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
        })
        .collect();
    let outcomes = match inner.decoder.send(Decode { messages: raw }).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            // Not written, so not deleted: the messages come back after their
            // visibility timeout.
            warn!(inner.log, "batch not stored; leaving it on the queue"; "error" => %e, "count" => messages.len());
            pause(inner, backoff).await;
            return false;
        }
        Err(e) => {
            error!(inner.log, "decoder unreachable"; "error" => %e);
            pause(inner, backoff).await;
            return false;
        }
    };
    let mut done = Vec::with_capacity(messages.len());
    for (msg, outcome) in messages.iter().zip(outcomes) {
        match outcome {
            MessageOutcome::Applied | MessageOutcome::Stale | MessageOutcome::Ignored => {
                done.push(msg)
            }
            MessageOutcome::Invalid(reason) => {
                if let Some(dlq) = dlq {
                    if dead_letter(inner, dlq, msg, &reason.to_string()).await {
                        done.push(msg);
                    }
                }
            }
        }
    }
    delete(inner, url, &done).await;
    true
}

/// Backs off after a failure, unless the reader is stopping.
async fn pause(inner: &Inner, backoff: &mut Backoff) {
    let delay = backoff.delay();
    if !inner.stopping.load(Ordering::SeqCst) {
        tokio::time::sleep(delay).await;
    }
}

async fn dead_letter(inner: &Inner, dlq: &str, msg: &Message, reason: &str) -> bool {
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
    };
    let mut send = inner
        .client
        .send_message()
        .queue_url(dlq)
        .message_body(msg.body().unwrap_or_default());
    if let (Ok(r), Ok(id)) = (attr(reason), attr(msg.message_id().unwrap_or_default())) {
        send = send
            .message_attributes("css-error", r)
            .message_attributes("css-message-id", id);
    }
    match send.send().await {
        Ok(_) => {
            inner.metrics.sqs.dead_lettered.inc();
            true
        }
        Err(e) => {
            warn!(inner.log, "cannot dead-letter a message; it stays on the queue";
                "message_id" => msg.message_id().unwrap_or_default(),
                "error" => %aws_sdk_sqs::error::DisplayErrorContext(&e));
            false
        }
    }
}

async fn delete(inner: &Inner, url: &str, messages: &[&Message]) {
    let mut pending: Vec<(String, String)> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Some((i.to_string(), m.receipt_handle()?.to_owned())))
        .collect();
    let m = &inner.metrics;
    for attempt in 1..=DELETE_ATTEMPTS {
        if pending.is_empty() {
            return;
        }
        let entries: Vec<_> = pending
            .iter()
            .filter_map(|(id, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(id)
                    .receipt_handle(handle)
                    .build()
                    .ok()
            })
            .collect();
        let started = Instant::now();
        let res = inner
            .client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
        m.sqs
            .delete_seconds
            .observe(started.elapsed().as_secs_f64());
        match res {
            Ok(out) => {
                let failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
                pending.retain(|(id, _)| failed.contains(&id.as_str()));
                if !pending.is_empty() {
                    m.sqs.delete_errors.inc();
                }
            }
            Err(e) => {
                m.sqs.delete_errors.inc();
                warn!(inner.log, "delete failed; retrying"; "attempt" => attempt,
                    "error" => %aws_sdk_sqs::error::DisplayErrorContext(&e));
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
    }
    if !pending.is_empty() {
        // They reappear after the visibility timeout and are stale no-ops then.
        warn!(inner.log, "messages not deleted; they will be received again"; "count" => pending.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_references() {
        assert_eq!(QueueRef::parse("events"), QueueRef::Name("events".into()));
        assert_eq!(
            QueueRef::parse("sqs://events"),
            QueueRef::Name("events".into())
        );
        assert_eq!(
            QueueRef::parse("https://sqs.us-west-2.amazonaws.com/1/events"),
            QueueRef::Url("https://sqs.us-west-2.amazonaws.com/1/events".into())
        );
    }
}
