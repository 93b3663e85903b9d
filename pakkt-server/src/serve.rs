//! Running the server: opening the database, binding (plain or TLS),
//! serving until a shutdown signal, and closing cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pakkt_core::quota::Quotas;
use pakkt_core::ratelimit::{AgentLimits, RateLimiter, SlidingWindowLimiter};
use pakkt_core::service::Pakkt;
use pakkt_store::{Change, ChangeListener, Database, StoreOptions};
use poem::EndpointExt;
use poem::http::uri::Scheme;
use poem::listener::{Acceptor, AcceptorExt, BoxAcceptor, Listener, RustlsCertificate, RustlsConfig, TcpListener};
use poem::web::{LocalAddr, RemoteAddr};

use crate::Core;
use crate::app::routes;
use crate::cache::CachedStore;
use crate::connections::{self, ConnectionLimits};
use crate::limits::Patient;
use crate::telemetry::Telemetry;

/// How long in-flight requests (held syncs included) may take to finish
/// after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A certificate chain and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// Database connections per process unless `--db-connections` says
/// otherwise.
pub const DEFAULT_CONNECTIONS: u32 = 8;

/// What `serve` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// A file path, `sqlite://…` or `postgres://…`.
    pub database: String,
    /// Serve HTTPS with these.
    pub tls: Option<TlsFiles>,
    /// Requests per rolling minute per key (0 = no limit).
    pub rate_limit: u32,
    /// Database connections this process may hold at once.
    pub db_connections: u32,
    /// `PAKKT_BOOTSTRAP_API_KEY`: the only key of account `default`.
    pub bootstrap_api_key: Option<String>,
    /// Serve Prometheus metrics on this `host:port` (plain HTTP) instead
    /// of at `/metrics` on the API's listener.
    pub metrics_listen: Option<String>,
    /// Header and idle timeouts, and the cap on open connections.
    pub connections: ConnectionLimits,
    /// Sync calls per second per agent (0 = no limit).
    pub agent_syncs_per_second: u32,
    /// Metrics reports per second per agent (0 = no limit).
    pub agent_reports_per_second: u32,
    /// What one account may hold.
    pub quotas: Quotas,
}

/// Opens the database and the use cases over it, with `quotas` and the
/// per-agent limits. On PostgreSQL the per-key limit is kept in the
/// database, shared by every replica; on SQLite, in this process.
pub async fn open_core(
    database: &str,
    rate_limit: u32,
    connections: u32,
    quotas: Quotas,
    agent_limits: AgentLimits,
) -> Result<Arc<Core>> {
    let options = StoreOptions { max_connections: connections, ..StoreOptions::default() };
    let db = Database::open_with(database, options)
        .await
        .with_context(|| format!("cannot open the database {database:?}"))?;
    let limiter: Arc<dyn RateLimiter> = match db.shared_rate_limiter(rate_limit) {
        Some(shared) => Arc::new(shared),
        None => Arc::new(SlidingWindowLimiter::per_minute(rate_limit)),
    };
    Ok(Arc::new(
        Pakkt::new(CachedStore::new(db)).with_limiter(limiter).with_quotas(quotas).with_agent_limits(agent_limits),
    ))
}

/// Feeds the changes other replicas announce into this one: an agent's
/// change wakes its held poll here, a key change drops cached lookups, and
/// a (re)connected listener wakes every held poll (each reads its state
/// again) since announcements may have been missed meanwhile.
///
/// While the listener cannot connect, held polls wait for their deadline
/// (at most 25 s), as they would on one server without notifications; it
/// retries after 1 s, doubling up to 30 s, and wakes everything again once
/// it listens.
async fn follow_changes(core: Arc<Core>, mut listener: ChangeListener) {
    let mut retry = Duration::from_secs(1);
    loop {
        match listener.next().await {
            Ok(Change::Agent(agent)) => {
                core.store().forget_agent(agent);
                core.feed().publish(agent);
            }
            Ok(Change::Keys) => core.store().forget_all(),
            Ok(Change::Missed) => {
                tracing::warn!("listening for other replicas' changes again; every held poll re-reads its state");
                retry = Duration::from_secs(1);
                core.store().forget_all();
                core.feed().publish_all();
            }
            Err(e) => {
                tracing::warn!(error = %pakkt_core::Report(&e), retry_in = ?retry, "cannot listen for other replicas' changes");
                core.store().forget_all();
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// A server bound to its address, ready to run.
pub struct Bound {
    acceptor: BoxAcceptor,
    core: Arc<Core>,
    addr: SocketAddr,
    scheme: &'static str,
    telemetry: Arc<Telemetry>,
    /// The metrics' own listener, with `--metrics-listen`.
    metrics: Option<(BoxAcceptor, SocketAddr)>,
    /// Other replicas' changes (PostgreSQL).
    changes: Option<ChangeListener>,
    /// See [`ServeConfig::connections`].
    connections: ConnectionLimits,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound").field("addr", &self.addr).field("scheme", &self.scheme).finish_non_exhaustive()
    }
}

/// Opens the database, applies the bootstrap key, and binds the listener.
pub async fn bind(config: &ServeConfig) -> Result<Bound> {
    crate::limits::raise_open_files(config.connections.max_connections);
    let tls = config.tls.as_ref().map(load_tls).transpose()?;
    let agent_limits = AgentLimits::new(config.agent_syncs_per_second, config.agent_reports_per_second);
    let core =
        open_core(&config.database, config.rate_limit, config.db_connections, config.quotas, agent_limits).await?;
    let changes = core
        .store()
        .inner()
        .listen_for_changes()
        .await
        .context("cannot listen for other replicas' changes on the database")?;
    if let Some(raw) = &config.bootstrap_api_key {
        core.bootstrap_api_key(raw).await.context("PAKKT_BOOTSTRAP_API_KEY")?;
        tracing::info!("account default holds the bootstrap key");
    }
    let tcp = TcpListener::bind(config.listen.clone());
    let (acceptor, scheme) = match tls {
        Some(tls) => (ConfigFirst(tcp).rustls(tls).into_acceptor().await.map(AcceptorExt::boxed), "https"),
        None => (tcp.into_acceptor().await.map(AcceptorExt::boxed), "http"),
    };
    let acceptor = acceptor.with_context(|| format!("cannot listen on {}", config.listen))?;
    let acceptor = Patient::new(acceptor).boxed();
    let addr = socket_addr(&acceptor)?;
    let metrics = match &config.metrics_listen {
        Some(listen) => {
            let acceptor = TcpListener::bind(listen.clone())
                .into_acceptor()
                .await
                .map(|acceptor| Patient::new(acceptor).boxed())
                .with_context(|| format!("cannot listen on {listen} for metrics"))?;
            let addr = socket_addr(&acceptor)?;
            Some((acceptor, addr))
        }
        None => None,
    };
    let telemetry = Telemetry::new(metrics.is_none());
    Ok(Bound { acceptor, core, addr, scheme, telemetry, metrics, changes, connections: config.connections })
}

fn socket_addr(acceptor: &BoxAcceptor) -> Result<SocketAddr> {
    acceptor
        .local_addr()
        .iter()
        .find_map(|a| a.0.as_socket_addr().copied())
        .context("the listener has no socket address")
}

impl Bound {
    /// The address it listens on (the real port when `:0` was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The use cases it serves.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Where Prometheus metrics are served when they have a listener of
    /// their own (`--metrics-listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until `shutdown` completes, lets in-flight requests finish
    /// for up to [`SHUTDOWN_GRACE`], then closes the database.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        tracing::info!(addr = %self.addr, scheme = self.scheme, "listening");
        let app = routes(Arc::clone(&self.core), &self.telemetry);
        let follower = self.changes.map(|listener| {
            tracing::info!("following other replicas' changes (PostgreSQL LISTEN)");
            tokio::spawn(follow_changes(Arc::clone(&self.core), listener))
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics = self.metrics.map(|(acceptor, addr)| {
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
            let mut stop = stop_rx.clone();
            let endpoint = self.telemetry.endpoint();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                connections::serve(
                    acceptor,
                    endpoint.map_to_response().boxed(),
                    ConnectionLimits::default(),
                    stopped,
                    SHUTDOWN_GRACE,
                )
                .await;
            })
        });
        let core = Arc::clone(&self.core);
        let shutdown = async move {
            shutdown.await;
            // Held syncs answer now, with the current state, instead of at
            // their deadline: the server exits well within its grace.
            core.release_held_polls();
            let _ = stop_tx.send(true);
        };
        connections::serve(self.acceptor, app.map_to_response().boxed(), self.connections, shutdown, SHUTDOWN_GRACE)
            .await;
        if let Some(task) = metrics {
            let _ = task.await;
        }
        if let Some(task) = follower {
            task.abort();
        }
        self.core.store().inner().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Reads and checks the certificate and key, so that a bad pair stops the
/// start instead of failing every handshake.
fn load_tls(files: &TlsFiles) -> Result<RustlsConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let cert = std::fs::read(&files.cert).with_context(|| format!("cannot read {}", files.cert.display()))?;
    let key = std::fs::read(&files.key).with_context(|| format!("cannot read {}", files.key.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", files.cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", files.cert.display());
    }
    let private = PrivateKeyDer::from_pem_slice(&key)
        .with_context(|| format!("{} is not a PEM private key", files.key.display()))?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .context("the TLS certificate and key do not form a usable pair")?;
    Ok(RustlsConfig::new().fallback(RustlsCertificate::new().cert(cert).key(key)))
}

/// A listener whose first accept waits one poll.
///
/// poem's TLS acceptor loads its certificate in the same `select!` that
/// accepts connections, so a connection already waiting at the first poll
/// may be taken before the certificate and be dropped ("no valid tls
/// config"). Holding the first accept back one poll lets the certificate,
/// which is ready at once, win that race.
struct ConfigFirst<L>(L);

impl<L: Listener> Listener for ConfigFirst<L> {
    type Acceptor = ConfigFirstAcceptor<L::Acceptor>;

    async fn into_acceptor(self) -> std::io::Result<Self::Acceptor> {
        Ok(ConfigFirstAcceptor { inner: self.0.into_acceptor().await?, held_back: false })
    }
}

/// The acceptor of [`ConfigFirst`].
struct ConfigFirstAcceptor<A> {
    inner: A,
    held_back: bool,
}

impl<A: Acceptor> Acceptor for ConfigFirstAcceptor<A> {
    type Io = A::Io;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        if !self.held_back {
            self.held_back = true;
            tokio::task::yield_now().await;
        }
        self.inner.accept().await
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
