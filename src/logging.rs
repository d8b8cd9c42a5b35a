//! slog logging: `term` (human) or `json` lines, to stderr or a file, through
//! a bounded asynchronous channel that drops (and counts) rather than blocks.
//!
//! Level policy: `error` — something failed and was not retried away;
//! `warn` — bad input or a retried failure; `info` — lifecycle (start, loaded,
//! finished, stopping); `debug` — per-event detail. Never a credential.

use crate::config::Log;
use slog::{o, Drain, Level, LevelFilter, Logger};
use std::fs::OpenOptions;

/// Flushes the asynchronous log channel when dropped: hold it until exit, so
/// the last lines (shutdown, fatal errors) are written.
pub struct Guard {
    _flush: Option<slog_async::AsyncGuard>,
}

/// Builds the root logger; fails only when the log file cannot be opened.
pub fn build(cfg: &Log) -> std::io::Result<(Logger, Guard)> {
    let level = match cfg.level.as_str() {
        "debug" => Some(Level::Debug),
        "warn" => Some(Level::Warning),
        "error" => Some(Level::Error),
        "crit" => Some(Level::Critical),
        "off" => None,
        _ => Some(Level::Info),
    };
    let Some(level) = level else {
        return Ok((Logger::root(slog::Discard, o!()), Guard { _flush: None }));
    };
    let writer: Box<dyn std::io::Write + Send> = if cfg.file.is_empty() {
        Box::new(std::io::stderr())
    } else {
        Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&cfg.file)?,
        )
    };
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = if cfg.format == "json" {
        Box::new(
            slog_json::Json::new(writer)
                .add_default_keys()
                .build()
                .fuse(),
        )
    } else {
        let decorator = slog_term::PlainDecorator::new(writer);
        Box::new(slog_term::FullFormat::new(decorator).build().fuse())
    };
    let (drain, guard) = slog_async::Async::new(LevelFilter::new(drain, level).fuse())
        .chan_size(8192)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .build_with_guard();
    Ok((
        Logger::root(drain.fuse(), o!("service" => "cluster-state-service")),
        Guard {
            _flush: Some(guard),
        },
    ))
}

/// A logger that writes nothing (tests).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}
