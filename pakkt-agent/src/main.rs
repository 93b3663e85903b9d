//! `pakkt-agent`: the command line of DESIGN §3.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use pakkt_agent::control::{HttpControlPlane, HttpOptions};
use pakkt_agent::daemon::{Agent, AgentConfig};
use pakkt_agent::host::{HostDataplane, HostPlane, default_route_iface};
use pakkt_core::account::AgentToken;
use pakkt_core::agent::{DataplaneMode, EgressMode, HostInfo};
use pakkt_core::dataplane::Dataplane;
use pakkt_core::memory::MemoryDataplane;
use tokio::sync::watch;

/// Which dataplane enforces the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DataplaneKind {
    /// The PAKKT Engine (XDP) and nftables on `--iface`.
    Xdp,
    /// An in-process model of the engine: no root needed (demos, tests).
    Memory,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The PAKKT agent: keeps this host's protection in line with its server.
#[derive(Debug, Parser)]
#[command(name = "pakkt-agent", version, about)]
struct Cli {
    /// The control-plane server's origin, e.g. http://10.0.0.1:8080 (a
    /// trailing /api/v1 is accepted too).
    #[arg(long, env = "PAKKT_SERVER", global = true)]
    server: Option<String>,
    /// The agent's token (pakkt_agent_…). Prefer --token-file: a token on
    /// the command line shows in `ps`.
    #[arg(long, env = "PAKKT_AGENT_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A file holding the agent's token.
    #[arg(long, global = true, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Which dataplane enforces the rules.
    #[arg(long, value_enum, default_value_t = DataplaneKind::Xdp, global = true)]
    dataplane: DataplaneKind,
    /// The interface to protect (default: the interface of the default route).
    #[arg(long, global = true)]
    iface: Option<String>,
    /// Where the engine's program and maps are pinned (default
    /// /sys/fs/bpf/pakkt/<iface>/).
    #[arg(long, global = true)]
    bpffs_dir: Option<PathBuf>,
    /// A PEM certificate of a private CA to trust for the server.
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
    /// Seconds between metrics reports.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    report_interval: u64,
    /// Feed the memory dataplane synthetic traffic of about this many packets
    /// a second (demos and the panel).
    #[arg(long, num_args = 0..=1, default_missing_value = "2000", value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    simulate_traffic: Option<u32>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464); off
    /// by default.
    #[arg(long, global = true)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// How to attach the engine.
    #[arg(long, value_enum, default_value_t = XdpMode::Auto, global = true)]
    xdp_mode: XdpMode,
    /// How to attach the engine's egress observer (it verifies the sources
    /// the host answers, for protect rules).
    #[arg(long, env = "PAKKT_EGRESS", value_enum, default_value_t = Egress::Auto, global = true)]
    egress: Egress,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Remove the PAKKT Engine from --iface and delete its pins (the
    /// protection stops).
    Detach,
}

/// How the engine is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum XdpMode {
    /// Native XDP, falling back to generic when the driver has none.
    Auto,
    /// Native (driver) XDP only.
    Native,
    /// Generic (skb) XDP only.
    Generic,
}

/// How the egress observer is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Egress {
    /// A tcx link where the kernel has it (Linux 6.6 and later), else a
    /// filter on the clsact qdisc.
    Auto,
    /// A tcx link only.
    Tcx,
    /// A clsact filter only.
    Clsact,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAKKT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn read_token(cli: &Cli) -> anyhow::Result<AgentToken> {
    let raw = match (&cli.token, &cli.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read the token file {}", path.display()))?
        }
        (None, None) => bail!("no token: give --token-file PATH, --token TOKEN or PAKKT_AGENT_TOKEN"),
    };
    raw.trim().parse::<AgentToken>().map_err(|e| anyhow::anyhow!("the agent token is malformed: {}", e.message))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("stopping; the protection stays in place");
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let server = cli.server.clone().context("no server: give --server URL or PAKKT_SERVER")?;
    let token = read_token(&cli)?;
    let ca_cert_pem = match &cli.ca_cert {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read --ca-cert {}", path.display()))?),
        None => None,
    };
    let control = Arc::new(HttpControlPlane::new(&server, token.expose(), &HttpOptions { ca_cert_pem })?);
    let trusted = control.server_addrs().await;

    match cli.dataplane {
        DataplaneKind::Memory => {
            let dataplane = Arc::new(MemoryDataplane::new());
            dataplane.set_trusted(&trusted).await.context("cannot set the server's addresses")?;
            let iface = cli.iface.clone().unwrap_or_else(|| "memory".to_owned());
            let (stop_tx, stop_rx) = watch::channel(false);
            let simulation = cli.simulate_traffic.map(|pps| {
                tracing::info!(pps, "feeding the memory dataplane synthetic traffic");
                tokio::spawn(pakkt_agent::simulate::run(Arc::clone(&dataplane), pps, stop_rx))
            });
            // On a signal the simulated traffic stops first, so that the
            // agent's last metrics report holds every simulated packet.
            let shutdown = async move {
                shutdown_signal().await;
                let _ = stop_tx.send(true);
                if let Some(task) = simulation {
                    let _ = task.await;
                }
            };
            let config = config(&cli, iface, DataplaneMode::Memory, dataplane.egress_mode());
            tracing::info!(%server, dataplane = "memory", "pakkt-agent starting");
            let agent = Agent::new(control, Arc::clone(&dataplane), config);
            expose_metrics(cli.metrics_listen, &agent, dataplane);
            agent.run(shutdown).await?;
            Ok(())
        }
        DataplaneKind::Xdp => {
            if cli.simulate_traffic.is_some() {
                bail!("--simulate-traffic feeds the memory dataplane only: add --dataplane memory");
            }
            let iface = iface(&cli)?;
            let options = pakkt_engine::AttachOptions {
                mode: match cli.xdp_mode {
                    XdpMode::Auto => pakkt_engine::AttachMode::Auto,
                    XdpMode::Native => pakkt_engine::AttachMode::Native,
                    XdpMode::Generic => pakkt_engine::AttachMode::Generic,
                },
                egress: match cli.egress {
                    Egress::Auto => pakkt_engine::EgressAttach::Auto,
                    Egress::Tcx => pakkt_engine::EgressAttach::Tcx,
                    Egress::Clsact => pakkt_engine::EgressAttach::Clsact,
                },
                bpffs_dir: cli.bpffs_dir.clone(),
                ..pakkt_engine::AttachOptions::default()
            };
            let engine = pakkt_engine::Engine::attach(&iface, &options)
                .with_context(|| format!("cannot attach the PAKKT Engine to {iface}"))?;
            let mode = engine.mode().unwrap_or(DataplaneMode::Generic);
            let egress = engine.egress_mode();
            tracing::info!(%iface, ?mode, ?egress, pins = ?engine.pin_dir(), "PAKKT Engine attached");
            if let Some(why) = engine.egress_error() {
                tracing::warn!(%iface, error = why, "the egress observer is not attached: every rule is enforced, \
                    but protect rules verify no new source until it is");
            }
            let xdp = pakkt_engine::XdpDataplane::new(engine);
            let control_plane = pakkt_nft::ControlPlane { addrs: trusted.clone(), port: control.host().1 };
            let dataplane = match pakkt_nft::NftFirewall::open(pakkt_nft::NftOptions::new(control_plane)) {
                Ok(firewall) => {
                    tracing::info!("nftables table inet pakkt ready");
                    HostPlane::Full(HostDataplane::new(xdp, firewall))
                }
                Err(pakkt_nft::NftError::Missing { .. }) => {
                    tracing::warn!(
                        "nft is not installed (apt-get install nftables): firewall rules will be reported failed; \
                         engine rules and IP lists are enforced"
                    );
                    HostPlane::EngineOnly(xdp)
                }
                Err(e) => return Err(e).context("cannot open the nftables table inet pakkt"),
            };
            let dataplane = Arc::new(dataplane);
            dataplane.set_trusted(&trusted).await.context("cannot set the server's addresses")?;
            let config = config(&cli, iface, mode, dataplane.egress_mode());
            tracing::info!(%server, dataplane = "xdp", "pakkt-agent starting");
            let agent = Agent::new(control, Arc::clone(&dataplane), config);
            expose_metrics(cli.metrics_listen, &agent, dataplane);
            agent.run(shutdown_signal()).await?;
            Ok(())
        }
    }
}

/// Starts the Prometheus endpoint when `--metrics-listen` asks for one.
fn expose_metrics<C, D: Dataplane>(addr: Option<std::net::SocketAddr>, agent: &Agent<C, D>, dataplane: Arc<D>)
where
    C: pakkt_agent::control::ControlPlane,
{
    if let Some(addr) = addr {
        let stats = agent.stats();
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        tokio::spawn(async move {
            if let Err(e) = pakkt_agent::prometheus::serve(addr, stats, dataplane).await {
                tracing::error!(%addr, error = %pakkt_core::Report(&e), "the metrics endpoint stopped");
            }
        });
    }
}

/// `--iface`, or the interface of the default route.
fn iface(cli: &Cli) -> anyhow::Result<String> {
    match &cli.iface {
        Some(iface) => Ok(iface.clone()),
        None => default_route_iface().context("no --iface given and no default route to take it from"),
    }
}

fn detach(cli: &Cli) -> anyhow::Result<()> {
    let iface = cli.iface.clone().context("detach needs --iface IFACE")?;
    let engine = pakkt_engine::detach(&iface, cli.bpffs_dir.as_deref())
        .with_context(|| format!("cannot detach from {iface}"))?;
    println!(
        "{}",
        if engine {
            format!("detached the PAKKT Engine from {iface}")
        } else {
            format!("no PAKKT Engine was pinned for {iface}")
        }
    );
    match pakkt_nft::remove_table(&pakkt_nft::NftCommand::new()) {
        Ok(true) => println!("removed the nftables table inet pakkt"),
        Ok(false) => println!("no nftables table inet pakkt was there"),
        Err(pakkt_nft::NftError::Missing { .. }) => {}
        Err(e) => return Err(e).context("cannot remove the nftables table inet pakkt"),
    }
    Ok(())
}

fn config(cli: &Cli, iface: String, mode: DataplaneMode, egress: Option<EgressMode>) -> AgentConfig {
    AgentConfig {
        host: HostInfo {
            hostname: hostname(),
            iface: Some(iface),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            mode: Some(mode),
            egress,
        },
        report_interval: Duration::from_secs(cli.report_interval),
        ..AgentConfig::default()
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let outcome = match cli.command {
        Some(Command::Detach) => detach(&cli),
        None | Some(Command::Run) => run(cli).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pakkt-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
