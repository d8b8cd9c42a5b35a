//! The `cluster-state-service` binary: load configuration, set up logging,
//! start the service, wait for a signal.

use css::config::{self, Mode};
use css::service::Service;
use std::process::ExitCode;

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    bound_malloc_arenas();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = std::env::vars().collect();
    let loaded = match config::load(&args, &env) {
        Ok(l) => l,
        Err(problems) => {
            eprint!("{problems}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match loaded.mode {
        Mode::Help => {
            print!("{}", config::help());
            return ExitCode::SUCCESS;
        }
        Mode::Version => {
            println!("cluster-state-service {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Mode::Run => {}
    }
    let (log, _flush_on_exit) = match css::logging::build(&loaded.settings.log) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "invalid configuration (1 problem(s)):\n  - cannot open log file {}: {e}",
                loaded.settings.log.file
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // A panic is logged as every other line is (and still printed).
    let print = std::panic::take_hook();
    let panic_log = log.clone();
    std::panic::set_hook(Box::new(move |info| {
        slog::crit!(panic_log, "panicked"; "panic" => %info);
        print(info);
    }));
    match actix_web::rt::System::new().block_on(run(loaded, log.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            slog::crit!(log, "cannot start"; "error" => %e);
            eprintln!("cluster-state-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(loaded: config::Loaded, log: slog::Logger) -> anyhow::Result<()> {
    slog::info!(log, "starting"; "version" => env!("CARGO_PKG_VERSION"),
        "config" => loaded.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "data_dir" => %loaded.settings.store.data_dir.display());
    let service = Service::start(&loaded.settings, loaded.feed, log.clone()).await?;
    wait_for_signal().await;
    slog::info!(
        log,
        "signal received; shutting down (a second signal exits at once)"
    );
    actix_web::rt::spawn(async {
        wait_for_signal().await;
        std::process::exit(130);
    });
    service.stop().await;
    slog::info!(log, "stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// glibc's malloc gives a thread that finds the arenas busy an arena of its
/// own, up to 8 per core, and each arena keeps what was freed in it: after
/// large answers built on the HTTP workers and the store's blocking threads
/// (a list of the past, a full list), RSS stays higher by what every arena
/// kept. One arena per core bounds that at little cost in contention
/// (`BENCHMARKS.md`, History). `MALLOC_ARENA_MAX`, when set, is left to rule.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = i32::try_from(cores).unwrap_or(i32::MAX);
    // SAFETY: mallopt sets one of the allocator's tunables; no thread of
    // this process has started yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc_arenas() {}
