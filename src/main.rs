//! presenced: command line, configuration and wiring. Starts the shards,
//! waits for SIGINT/SIGTERM, and shuts down gracefully.

mod cli;
mod config;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let config = match config::Config::from_cli(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("presenced: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    // Block the shutdown signals before any thread starts, so every thread
    // inherits the mask and only `wait_for_signal` receives them.
    let signals = shutdown_signals();
    let server = match presence_core::runtime::start(config.engine.clone()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("presenced: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        listen = %server.local_addr(),
        shards = config.engine.shards,
        "presenced listening on udp+tcp {}",
        server.local_addr()
    );
    let signal = wait_for_signal(&signals);
    tracing::info!(signal, "shutting down");
    server.shutdown();
    server.join();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is a valid signal set; sigwait writes the signal number.
    unsafe {
        while libc::sigwait(set, &mut signal) != 0 {}
    }
    signal
}
