//! A hosting panel that embeds PAKKT instead of running `pakkt-server`.
//!
//! The panel keeps PAKKT's data in its own tables ([`store::PanelStore`],
//! a `pakkt_core::store::Store` of its own), calls PAKKT's use cases
//! (`pakkt_core::service::Pakkt`) directly from its code, and serves the
//! two agent endpoints itself ([`panel::agent_endpoints`]), so that an
//! unmodified `pakkt-agent` connects to the panel as it would to a server.
//! The flow ([`panel::run`]): add an agent for a customer, start it (or
//! print how to), protect UDP port 30120 once it has connected, and wait
//! until the agent reports the rule loaded. See `docs/embedding.md`.
//!
//! ```sh
//! cargo build -p pakkt-agent --bin pakkt-agent
//! cargo run -p pakkt-agent --example embedded_panel -- --agent target/debug/pakkt-agent
//! ```
//!
//! Without `--agent` the panel prints the `pakkt-agent` command to run in
//! another terminal and waits for it.

mod panel;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::Parser;

/// A hosting panel embedding PAKKT's use cases, with its own store.
#[derive(Debug, Parser)]
struct Args {
    /// Where the panel serves the agent endpoints.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A pakkt-agent binary to start on the memory dataplane; without it,
    /// the panel prints the command to run.
    #[arg(long)]
    agent: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let launch = |origin: &str, token: &str| {
        if let Some(binary) = &args.agent {
            return Ok(Some(panel::spawn_agent(binary, origin, token, Stdio::inherit())?));
        }
        println!("start the agent:\n  PAKKT_AGENT_TOKEN={token} pakkt-agent --server {origin} --dataplane memory");
        Ok(None)
    };
    let outcome = panel::run(listener, launch, Duration::from_mins(10)).await?;
    println!(
        "rule {} {} in slot {} on {} of agent {} ({:?})",
        outcome.rule.id,
        outcome.rule.status.as_str(),
        outcome.rule.slot.map_or_else(|| "-".to_owned(), |s| s.to_string()),
        outcome.rule.iface.as_deref().unwrap_or("?"),
        outcome.agent.name,
        outcome.agent.status,
    );
    Ok(())
}
