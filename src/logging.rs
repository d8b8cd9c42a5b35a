//! slog logging: `term` (human) or `json` lines, to stderr or a file, through
//! a bounded asynchronous channel that drops (and counts) rather than blocks.
//!
//! Level policy: `error` — something failed and was not retried away;
//! `warn` — bad input or a retried failure; `info` — lifecycle (start, loaded,
//! finished, stopping); `debug` — per-event detail. Never a credential.

use serde::Deserialize;
use slog::{o, Drain, LevelFilter, Logger};
use std::fs::OpenOptions;

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The least severe level written (`CSS_LOG_LEVEL`, `--log-level`).
    /// Default info.
    pub level: Level,
    /// Log to this file instead of stderr (`CSS_LOG_FILE`, `--log-file`).
    /// Default empty: stderr.
    pub file: String,
    /// `term` (for people) or `json` (one object per line). Default term.
    pub format: Format,
}

/// `log.level`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    Crit,
    Off,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Term,
    Json,
}

/// Flushes the asynchronous log channel when dropped: hold it until exit, so
/// the last lines (shutdown, fatal errors) are written.
pub struct Guard {
    _flush: Option<slog_async::AsyncGuard>,
}

/// Builds the root logger; fails only when the log file cannot be opened.
pub fn build(cfg: &Config) -> std::io::Result<(Logger, Guard)> {
    let level = match cfg.level {
        Level::Debug => Some(slog::Level::Debug),
        Level::Info => Some(slog::Level::Info),
        Level::Warn => Some(slog::Level::Warning),
        Level::Error => Some(slog::Level::Error),
        Level::Crit => Some(slog::Level::Critical),
        Level::Off => None,
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
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = if cfg.format == Format::Json {
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
