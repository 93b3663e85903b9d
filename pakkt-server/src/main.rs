//! `pakkt-server`: see `pakkt-server --help` and DESIGN §3.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use pakkt_server::cli::Cli;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pakkt-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
