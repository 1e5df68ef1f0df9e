//! presenced: command line, configuration and wiring. Starts the shards,
//! waits for SIGINT/SIGTERM, and shuts down gracefully.

mod cli;
mod config;

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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
    // The filter sits behind a reload handle so the management plane can
    // change it at run time (PUT /v1/config/log).
    let initial_filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| tracing_subscriber::EnvFilter::try_new(f).is_ok())
        // The storage engine's own lines (databases created, tables
        // written) are routine: its warnings and errors are what matter.
        .unwrap_or_else(|| "info,fjall=warn,lsm_tree=warn".into());
    let (filter, filter_handle) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new(&initial_filter));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    let set_log_filter: presence_mgmt::LogFilterSetter = Arc::new(move |directives: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        filter_handle.reload(filter).map_err(|e| e.to_string())
    });
    let mgmt_token = match config
        .mgmt
        .token_file
        .as_deref()
        .map(presence_mgmt::read_token_file)
        .transpose()
    {
        Ok(token) => token,
        Err(e) => {
            eprintln!("presenced: {e}");
            return ExitCode::from(2);
        }
    };

    // Block the shutdown signals before any thread starts, so every thread
    // inherits the mask and only `wait_for_signal` receives them.
    let signals = shutdown_signals();
    let server = match presence_runtime::start(config.engine.clone()) {
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
    let mut mgmt_options = presence_mgmt::MgmtOptions::new(config.mgmt.listen);
    mgmt_options.token = mgmt_token;
    mgmt_options.rules_dir = config.engine.rules_dir();
    mgmt_options.limits = config.mgmt.limits();
    mgmt_options.store = server.store();
    mgmt_options.log = Some(presence_mgmt::LogControl {
        initial: initial_filter,
        set: set_log_filter,
    });
    let mgmt = match presence_mgmt::start(mgmt_options, server.controls()) {
        Ok(mgmt) => mgmt,
        Err(e) => {
            eprintln!("presenced: {e}");
            server.shutdown();
            server.join();
            return ExitCode::from(1);
        }
    };
    // Logged after the SIP line: tests read the port from it.
    tracing::info!("management plane listening on http://{}", mgmt.local_addr());
    let signal = wait_for_signal(&signals);
    tracing::info!(signal, "shutting down");
    mgmt.shutdown();
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
    unsafe { while libc::sigwait(set, &mut signal) != 0 {} }
    signal
}
