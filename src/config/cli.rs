//! The command line, declared with clap. A flag sets the configuration key
//! named beside it; flags win over the file and the environment.

use super::Mode;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use serde_json::Value;
use std::path::PathBuf;

/// The flags of `cluster-state-service`.
#[derive(Debug, Default, Parser)]
#[command(
    name = "cluster-state-service",
    version,
    about = "cluster-state-service: a live, queryable copy of the state of Amazon ECS clusters",
    args_override_self = true,
    after_help = "Precedence: defaults < --config file < CSS_* environment (CSS_SECTION__KEY) < flags."
)]
pub struct Cli {
    /// listen address (server.bind; default 127.0.0.1:3000)
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// use the etcd store (store.etcd_endpoints; repeatable, or comma-separated)
    #[arg(
        long = "etcd-endpoint",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    etcd_endpoints: Vec<String>,
    /// SQS queue name, sqs://NAME or URL (source.queue)
    #[arg(long, value_name = "NAME", alias = "queue_name")]
    queue: Option<String>,
    /// TOML configuration file
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// embedded store directory (store.data_dir; default ./data)
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: Option<String>,
    /// feed the pipeline from the built-in ECS simulator
    #[arg(long)]
    pub simulate: bool,
    /// feed the pipeline from a file of EventBridge events, one per line
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// debug, info, warn, error, crit or off (log.level)
    #[arg(long = "log-level", value_name = "LEVEL", env = "CSS_LOG_LEVEL")]
    log_level: Option<String>,
    /// log to FILE instead of stderr (log.file)
    #[arg(long = "log-file", value_name = "FILE", env = "CSS_LOG_FILE")]
    log_file: Option<String>,
}

/// What the command line asks for, and every problem in it.
pub struct Parsed {
    pub mode: Mode,
    pub cli: Cli,
    pub problems: Vec<String>,
}

/// The text of `--help`.
pub fn help() -> String {
    Cli::command().render_help().to_string()
}

/// Parses `args` (without the program name). Every bad argument is reported:
/// each is set aside and the rest parsed again, at most once per argument.
pub fn parse(args: &[String]) -> Parsed {
    let mut args = args.to_vec();
    let mut problems = Vec::new();
    for _ in 0..=args.len() {
        let argv = std::iter::once("cluster-state-service".to_owned()).chain(args.iter().cloned());
        let err = match Cli::command().try_get_matches_from(argv) {
            Ok(m) => match Cli::from_arg_matches(&m) {
                Ok(cli) => {
                    return Parsed {
                        mode: Mode::Run,
                        cli,
                        problems,
                    }
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        let mode = match err.kind() {
            ErrorKind::DisplayHelp => Mode::Help,
            ErrorKind::DisplayVersion => Mode::Version,
            _ => {
                let (problem, bad) = problem(&err);
                problems.push(problem);
                match bad.and_then(|b| args.iter().position(|a| *a == b)) {
                    Some(i) => {
                        args.remove(i);
                        continue;
                    }
                    None => break,
                }
            }
        };
        return Parsed {
            mode,
            cli: Cli::default(),
            problems: Vec::new(),
        };
    }
    Parsed {
        mode: Mode::Run,
        cli: Cli::default(),
        problems,
    }
}

/// One line for a clap error, and the argument to set aside.
fn problem(err: &clap::Error) -> (String, Option<String>) {
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let arg = context(ContextKind::InvalidArg);
    let flag = arg
        .as_deref()
        .map(|a| a.split([' ', '=']).next().unwrap_or(a).to_owned());
    match err.kind() {
        ErrorKind::UnknownArgument => {
            let a = arg.unwrap_or_default();
            (format!("unknown argument `{a}` (see --help)"), Some(a))
        }
        ErrorKind::InvalidValue | ErrorKind::NoEquals => {
            let f = flag.unwrap_or_default();
            (format!("{f} needs a value"), Some(f))
        }
        ErrorKind::TooManyValues if context(ContextKind::InvalidValue).is_some() => {
            let f = flag.unwrap_or_default();
            (format!("{f} takes no value"), None)
        }
        _ => {
            let text = err.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            (first.trim_start_matches("error: ").to_owned(), None)
        }
    }
}

impl Cli {
    /// The configuration keys the flags set, in the order applied.
    pub fn overrides(&self) -> Vec<(&'static str, Value)> {
        let text = |key, v: &Option<String>| v.clone().map(|v| (key, Value::String(v)));
        let mut out: Vec<_> = [
            text("server.bind", &self.bind),
            text("source.queue", &self.queue),
            text("store.data_dir", &self.data_dir),
            text("log.level", &self.log_level),
            text("log.file", &self.log_file),
        ]
        .into_iter()
        .flatten()
        .collect();
        let endpoints: Vec<Value> = self
            .etcd_endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| Value::String(e.to_owned()))
            .collect();
        if !endpoints.is_empty() {
            out.push(("store.etcd_endpoints", Value::Array(endpoints)));
            out.push(("store.backend", Value::String("etcd".into())));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(a: &[&str]) -> Parsed {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_bad_argument_is_reported_at_once() {
        let p = parse_all(&["--frobnicate", "--simulate", "stray", "--replay"]);
        assert_eq!(
            p.problems,
            [
                "unknown argument `--frobnicate` (see --help)",
                "unknown argument `stray` (see --help)",
                "--replay needs a value",
            ]
        );
        assert!(parse_all(&["--simulate=yes"]).problems[0].contains("--simulate"));
    }

    #[test]
    fn flags_set_their_keys_and_the_last_one_wins() {
        let p = parse_all(&[
            "--bind",
            "a:1",
            "--bind=b:2",
            "--queue_name",
            "q",
            "--etcd-endpoint",
            "x:1,y:2",
        ]);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let o = p.cli.overrides();
        assert_eq!(o[0], ("server.bind", Value::String("b:2".into())));
        assert_eq!(o[1], ("source.queue", Value::String("q".into())));
        assert!(o.contains(&("store.backend", Value::String("etcd".into()))));
        assert_eq!(parse_all(&["--help"]).mode, Mode::Help);
        assert_eq!(parse_all(&["-V"]).mode, Mode::Version);
    }
}
