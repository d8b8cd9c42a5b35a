//! The `cluster-state-service` binary: load configuration, set up logging,
//! start the service, wait for a signal.

use css::config::{self, Mode};
use css::service::Service;
use std::process::ExitCode;

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
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
