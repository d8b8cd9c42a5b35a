//! `--replay FILE`: EventBridge events, one JSON per line, fed through the
//! pipeline in batches. Blank lines are skipped; bad lines are counted, logged
//! with their line number, and reported at the end; they never stop the replay.
//!
//! FILE may be a pipe: whenever the input pauses, or the first line read has
//! waited `LINGER`, the lines read so far are sent at once instead of waiting
//! for a full batch.

use crate::decoder::decode::MAX_BODY_BYTES;
use crate::decoder::{Decode, EventDecoder, MessageOutcome, RawMessage};
use crate::retry::Backoff;
use actix::prelude::*;
use slog::{error, info, warn, Logger};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Lines per batch sent to the decoder.
pub const BATCH: usize = 1000;
/// Read-ahead: tokio reads a file in pieces of at most 2 MiB, about a full
/// batch of typical events.
const READ_AHEAD: usize = 2 * 1024 * 1024;
/// Longest a read line waits in a batch before the batch is sent, when the
/// input keeps coming but slowly (a pipe fed line by line): without it such
/// a batch would only go at `BATCH` lines or at a pause. A file replays far
/// faster than this, so its batches stay full.
const LINGER: Duration = Duration::from_millis(20);
/// Attempts at one batch while the store is unavailable.
const MAX_ATTEMPTS: u32 = 10;

/// How far a replay got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub lines: u64,
    pub applied: u64,
    pub stale: u64,
    pub ignored: u64,
    pub invalid: u64,
    /// Lines that could not be stored after every retry.
    pub failed: u64,
    pub done: bool,
}

/// Get the replay's report so far.
#[derive(Message)]
#[rtype(result = "Report")]
pub struct GetReport;

/// The replay source actor.
pub struct ReplaySource {
    path: PathBuf,
    decoder: Addr<EventDecoder>,
    log: Logger,
    report: Arc<Mutex<Report>>,
}

impl ReplaySource {
    pub fn new(path: PathBuf, decoder: Addr<EventDecoder>, log: Logger) -> Self {
        ReplaySource {
            path,
            decoder,
            log,
            report: Arc::default(),
        }
    }
}

impl Actor for ReplaySource {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let run = replay(
            self.path.clone(),
            self.decoder.clone(),
            self.report.clone(),
            self.log.clone(),
        );
        ctx.spawn(run.into_actor(self));
    }
}

impl Supervised for ReplaySource {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // Replaying again from the start is harmless: the version rule makes
        // every event already applied a stale no-op.
        warn!(
            self.log,
            "replay source restarting from the start of the file"
        );
        self.report = Arc::default();
    }
}

impl Handler<GetReport> for ReplaySource {
    type Result = MessageResult<GetReport>;

    fn handle(&mut self, _: GetReport, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.report.lock().map(|r| r.clone()).unwrap_or_default())
    }
}

/// Reads one line of at most `MAX_BODY_BYTES`; a longer one is consumed and
/// returned cut short, flagged as oversized. `None` at the end of the file.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let limit = MAX_BODY_BYTES as u64 + 1;
    let n = (&mut *r).take(limit).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') || (n as u64) < limit {
        return Ok(Some(false));
    }
    let mut skip = Vec::new();
    loop {
        skip.clear();
        let m = (&mut *r)
            .take(64 * 1024)
            .read_until(b'\n', &mut skip)
            .await?;
        if m == 0 || skip.last() == Some(&b'\n') {
            return Ok(Some(true));
        }
    }
}

/// True when nothing more can be read without waiting. A read this starts
/// goes on in the background and is picked up by the next one.
async fn input_paused<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> bool {
    // A zero timeout polls the read once before it gives up.
    tokio::time::timeout(Duration::ZERO, r.fill_buf())
        .await
        .is_err()
}

async fn replay(
    path: PathBuf,
    decoder: Addr<EventDecoder>,
    report: Arc<Mutex<Report>>,
    log: Logger,
) {
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            error!(log, "cannot open replay file"; "path" => %path.display(), "error" => %e);
            return;
        }
    };
    info!(log, "replaying events"; "path" => %path.display());
    let mut reader = BufReader::with_capacity(READ_AHEAD, file);
    let mut buf = Vec::new();
    let mut lineno = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    let mut first_read = Instant::now();
    let mut eof = false;
    while !eof {
        if !batch.is_empty() && (first_read.elapsed() >= LINGER || input_paused(&mut reader).await)
        {
            let messages = std::mem::take(&mut batch);
            send(&decoder, messages, &report, &log).await;
        }
        match read_line(&mut reader, &mut buf).await {
            Ok(Some(oversized)) => {
                lineno += 1;
                let body = if oversized {
                    // Keep it oversized so that the decoder reports it as such.
                    "x".repeat(MAX_BODY_BYTES + 1)
                } else {
                    String::from_utf8_lossy(&buf).trim().to_owned()
                };
                if !body.is_empty() {
                    if batch.is_empty() {
                        first_read = Instant::now();
                    }
                    batch.push(RawMessage::new(format!("line {lineno}"), body));
                }
            }
            Ok(None) => eof = true,
            Err(e) => {
                error!(log, "cannot read replay file"; "path" => %path.display(), "line" => lineno + 1, "error" => %e);
                eof = true;
            }
        }
        if batch.len() >= BATCH || (eof && !batch.is_empty()) {
            let messages = std::mem::take(&mut batch);
            send(&decoder, messages, &report, &log).await;
        }
    }
    let final_report = {
        let Ok(mut r) = report.lock() else { return };
        r.done = true;
        r.lines = lineno;
        r.clone()
    };
    info!(log, "replay finished"; "path" => %path.display(), "lines" => final_report.lines,
        "applied" => final_report.applied, "stale" => final_report.stale,
        "ignored" => final_report.ignored, "invalid" => final_report.invalid,
        "failed" => final_report.failed);
}

async fn send(
    decoder: &Addr<EventDecoder>,
    messages: Vec<RawMessage>,
    report: &Mutex<Report>,
    log: &Logger,
) {
    let n = messages.len() as u64;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    for attempt in 1..=MAX_ATTEMPTS {
        let res = decoder
            .send(Decode {
                messages: messages.clone(),
            })
            .await;
        match res {
            Ok(Ok(outcomes)) => {
                let Ok(mut r) = report.lock() else { return };
                for o in outcomes {
                    match o {
                        MessageOutcome::Applied => r.applied += 1,
                        MessageOutcome::Stale => r.stale += 1,
                        MessageOutcome::Ignored => r.ignored += 1,
                        MessageOutcome::Invalid(_) => r.invalid += 1,
                    }
                }
                return;
            }
            Ok(Err(e)) => {
                warn!(log, "replay batch not stored; retrying"; "attempt" => attempt, "error" => %e)
            }
            Err(e) => {
                warn!(log, "decoder unreachable; retrying"; "attempt" => attempt, "error" => %e)
            }
        }
        tokio::time::sleep(backoff.delay()).await;
    }
    error!(log, "replay batch dropped after retries"; "lines" => n);
    if let Ok(mut r) = report.lock() {
        r.failed += n;
    }
}
