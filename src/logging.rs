//! slog logging: `term` (human) or `json` lines, to stderr or a file, through
//! a bounded asynchronous channel that drops (and counts) rather than blocks.
//!
//! Libraries log through `log` (actix) and `tracing` (the AWS SDK, tonic,
//! h2; its `log` feature turns their events into `log` records); both reach
//! this logger through `slog-stdlog`, with their target as `library`, at `warn` and above,
//! or at `debug` with `log.level = "debug"`.
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
    _libraries: Option<slog_scope::GlobalLoggerGuard>,
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
        return Ok((
            Logger::root(slog::Discard, o!()),
            Guard {
                _flush: None,
                _libraries: None,
            },
        ));
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
    let log = Logger::root(drain.fuse(), o!("service" => "cluster-state-service"));
    let libraries = slog_scope::set_global_logger(log.new(o!(
        "library" => slog::FnValue(|r: &slog::Record| r.tag().to_owned())
    )));
    // Another logger may own `log` already (a test binary): keep it.
    if slog_stdlog::init_with_level(log::Level::Trace).is_ok() {
        log::set_max_level(library_level(cfg.level));
    }
    Ok((
        log,
        Guard {
            _flush: Some(guard),
            _libraries: Some(libraries),
        },
    ))
}

/// The least severe level of the libraries' records that is written: `warn`,
/// or the service's own level when that is `debug` or more severe than `warn`.
fn library_level(level: Level) -> log::LevelFilter {
    match level {
        Level::Debug => log::LevelFilter::Debug,
        Level::Info | Level::Warn => log::LevelFilter::Warn,
        Level::Error | Level::Crit => log::LevelFilter::Error,
        Level::Off => log::LevelFilter::Off,
    }
}

/// A logger that writes nothing (tests).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}
