//! sipload: the bench suite's SIP load generator. See benches/README.md.

use clap::Parser;

use presence_benches::cli::Cli;
use presence_benches::commands::execute;
use presence_benches::runner::RunError;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match execute(&cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sipload: {err}");
            match err {
                RunError::Config(_) => std::process::ExitCode::from(2),
                RunError::Io(_) => std::process::ExitCode::from(1),
            }
        }
    }
}
