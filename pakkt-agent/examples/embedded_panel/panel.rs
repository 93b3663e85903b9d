//! The panel's PAKKT side: the agent protocol served by the panel's own
//! HTTP stack over [`Pakkt`]'s use cases, and the flow behind its "protect
//! this server" button.

use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use pakkt_core::agent::AgentStatus;
use pakkt_core::metrics::MetricsReport;
use pakkt_core::rule::{EngineRuleStatus, Protocol, RuleType};
use pakkt_core::service::{MAX_POLL, Pakkt};
use pakkt_core::sync::SyncReport;
use pakkt_core::wire::{AgentView, CreateAgentRequest, CreateEngineRuleRequest, EngineRuleView, ErrorBody};
use pakkt_core::{Error, ErrorKind};
use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::web::{Data, Json};
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route, handler, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::PanelStore;

/// PAKKT's use cases on the panel's store.
pub type Core = Pakkt<PanelStore>;

/// Largest body an agent may send (as `pakkt-server` allows).
const BODY_LIMIT: usize = 16 << 20;

/// The agent protocol (`docs/agent-protocol.md`): the two calls an
/// unmodified `pakkt-agent` makes, each one use case.
pub fn agent_endpoints(core: Arc<Core>) -> impl Endpoint {
    Route::new().at("/api/v1/agent/sync", post(sync)).at("/api/v1/agent/metrics", post(metrics)).data(core)
}

#[derive(Deserialize)]
struct SyncParams {
    wait: Option<u8>,
}

/// `POST /api/v1/agent/sync?wait=SECONDS` → [`Pakkt::agent_sync`].
#[handler]
async fn sync(Data(core): Data<&Arc<Core>>, req: &Request, body: Body) -> Response {
    let token = bearer(req);
    // The token is checked before the request's shape, as the protocol says.
    if let Err(e) = core.authenticate_agent(token).await {
        return error(&e);
    }
    let wait = match req.params::<SyncParams>() {
        Ok(SyncParams { wait: None }) => MAX_POLL,
        Ok(SyncParams { wait: Some(seconds) }) if seconds <= 25 => Duration::from_secs(seconds.into()),
        _ => return error(&Error::BadRequest("wait must be 0 to 25 seconds".into())),
    };
    let report: SyncReport = match read_json(body).await {
        Ok(report) => report,
        Err(e) => return error(&e),
    };
    match core.agent_sync(token, report, wait).await {
        Ok(desired) => Json(desired).into_response(),
        Err(e) => error(&e),
    }
}

/// `POST /api/v1/agent/metrics` → [`Pakkt::agent_report_metrics`].
#[handler]
async fn metrics(Data(core): Data<&Arc<Core>>, req: &Request, body: Body) -> Response {
    let token = bearer(req);
    if let Err(e) = core.authenticate_agent(token).await {
        return error(&e);
    }
    let report: MetricsReport = match read_json(body).await {
        Ok(report) => report,
        Err(e) => return error(&e),
    };
    match core.agent_report_metrics(token, &report).await {
        Ok(stored) => Json(serde_json::json!({ "stored": stored })).into_response(),
        Err(e) => error(&e),
    }
}

fn bearer(req: &Request) -> Option<&str> {
    req.header("authorization").and_then(|h| h.strip_prefix("Bearer "))
}

async fn read_json<T: DeserializeOwned>(body: Body) -> Result<T, Error> {
    let bytes = body.into_bytes_limit(BODY_LIMIT).await.map_err(|e| Error::BadRequest(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadRequest(format!("the body does not fit the schema: {e}")))
}

/// A use case's error as the API answers it: the status of its kind and
/// `{"error", "message"}`.
fn error(e: &Error) -> Response {
    let status = match e.kind() {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::AccountSuspended => StatusCode::PAYMENT_REQUIRED,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Internal => {
            eprintln!("agent endpoint failed: {e:?}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    Json(ErrorBody::from(e)).with_status(status).into_response()
}

/// What the flow ended with.
#[derive(Debug)]
pub struct Outcome {
    /// The agent, connected.
    pub agent: AgentView,
    /// The rule, loaded by the agent.
    pub rule: EngineRuleView,
}

/// The panel's flow. Serves the agent endpoints on `listener`; adds a
/// server (a PAKKT agent) for one of the panel's customers and hands its
/// origin and one-time token to `launch`, which starts the agent (or asks
/// someone to); once the agent has connected, protects FiveM's port on it
/// and waits until the agent reports the rule loaded. Each wait gives up
/// after `patience`. What `launch` returns is dropped when the flow ends.
pub async fn run<G>(
    listener: tokio::net::TcpListener,
    launch: impl FnOnce(&str, &str) -> anyhow::Result<G>,
    patience: Duration,
) -> anyhow::Result<Outcome> {
    let core = Arc::new(Pakkt::new(PanelStore::default()));
    let origin = format!("http://{}", listener.local_addr()?);
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    let _server =
        AbortOnDrop(tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(agent_endpoints(Arc::clone(&core)))));

    // The use cases act for a session of an account. A panel that signs its
    // users in itself makes one account per customer, and authenticates once
    // with a key it keeps: the session then serves every call.
    let (_, key) = core.create_api_key(&"customer-42".parse()?).await?;
    let session = core.authenticate(Some(key.expose())).await?;
    let (core, session) = (&core, &session);

    let created = core.create_agent(session, &CreateAgentRequest { name: "game-01".into() }).await?;
    let id = created.agent.id;
    let _agent = launch(&origin, &created.token)?;
    let agent = wait_for(patience, "the agent's first sync", move || async move {
        let agent = core.get_agent(session, id).await?;
        Ok::<_, anyhow::Error>((agent.status == AgentStatus::Online).then_some(agent))
    })
    .await?;
    println!(
        "agent {} connected from {} ({})",
        agent.id,
        agent.hostname.as_deref().unwrap_or("?"),
        agent.iface.as_deref().unwrap_or("?")
    );

    let request = CreateEngineRuleRequest {
        name: "FiveM".into(),
        port_range_start: 30120,
        port_range_end: 30120,
        protocol: Protocol::Udp,
        rule_type: RuleType::RateLimit,
        max_pps: 5000,
        max_port_pps: 0,
        min_pkt_size: 0,
        max_pkt_size: 0,
    };
    let added = core.create_engine_rule(session, id, &request).await?;
    println!("rule {} created, {}", added.id, added.status.as_str());
    let rule = wait_for(patience, "the agent to load the rule", move || async move {
        let rules = core.list_engine_rules(session, id).await?;
        Ok::<_, anyhow::Error>(rules.into_iter().find(|r| r.id == added.id && r.status == EngineRuleStatus::Loaded))
    })
    .await?;
    Ok(Outcome { agent, rule })
}

/// Polls `probe` every 50 ms until it yields, for at most `patience`.
async fn wait_for<T, F, Fut>(patience: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "gave up after {patience:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A task that ends with its owner.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A `pakkt-agent` process on the memory dataplane, killed when dropped.
#[derive(Debug)]
pub struct AgentProcess(Child);

/// Starts `binary` as the agent of `origin` with `token` (passed in the
/// environment, not on the command line), its log going to `log`.
pub fn spawn_agent(binary: &Path, origin: &str, token: &str, log: Stdio) -> std::io::Result<AgentProcess> {
    Command::new(binary)
        .args(["--server", origin, "--dataplane", "memory", "--iface", "eth0", "--report-interval", "1"])
        .env("PAKKT_AGENT_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(AgentProcess)
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
