//! The operations: one thin handler per endpoint, each a call to one
//! use case of [`Pakkt`] and a typed answer.
//!
//! Credentials are checked by the [gate](crate::gate) before anything is
//! parsed; the handlers' security extractors ([`ApiKeyAuth`],
//! [`AgentAuth`]) document the schemes in the spec and hand over what the
//! gate established.

mod agent;
mod agents;
mod engine_rules;
mod firewall;
mod ip_list;
mod marketplace;
mod metrics;
pub mod page;
pub mod spec;

use std::sync::Arc;

use pakkt_core::service::{Pakkt, Session};
use pakkt_core::store::Store;
use poem::Request;
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, OpenApiService, SecurityScheme, Tags};
use serde::Serialize;

pub use agent::{AgentApi, MetricsStored};
pub use agents::AgentsApi;
pub use engine_rules::EngineRulesApi;
pub use firewall::FirewallApi;
pub use ip_list::IpListApi;
pub use marketplace::{AppliedRule, MarketplaceApi};
pub use metrics::MetricsApi;

use crate::payload::Json;

/// The spec's tags: one per section of the API reference, and `agent` for
/// the agent protocol.
#[derive(Tags, Debug, Clone, Copy)]
pub enum ApiTag {
    /// Agents: the protected hosts of the account.
    #[oai(rename = "agents")]
    Agents,
    /// PAKKT Engine (XDP) rules: one slot each in the engine of an agent's
    /// interface.
    #[oai(rename = "engine-rules")]
    EngineRules,
    /// IP whitelist and blacklist entries, enforced in the kernel.
    #[oai(rename = "ip-list")]
    IpList,
    /// Traffic metrics: summaries and history.
    #[oai(rename = "metrics")]
    Metrics,
    /// PAKKT-validated protection templates.
    #[oai(rename = "marketplace")]
    Marketplace,
    /// nftables firewall rules (the stateful layer).
    #[oai(rename = "firewall")]
    Firewall,
    /// The agent protocol: what `pakkt-agent` calls with its bearer token.
    /// Not for panels or scripts.
    #[oai(rename = "agent")]
    Agent,
}

/// The public API's credential: `X-API-Key: pakkt_pub_...`.
#[derive(SecurityScheme, Debug)]
#[oai(rename = "ApiKey", ty = "api_key", key_name = "X-API-Key", key_in = "header", checker = "session_from_gate")]
pub struct ApiKeyAuth(pub Session);

/// The session the gate established for this request.
#[allow(clippy::unused_async)] // poem-openapi awaits its checkers
async fn session_from_gate(req: &Request, _key: ApiKey) -> Option<Session> {
    req.extensions().get::<Session>().cloned()
}

/// An agent's credential: `Authorization: Bearer pakkt_agent_...`, given
/// once by `POST /agents`.
#[derive(SecurityScheme, Debug)]
#[oai(rename = "AgentToken", ty = "bearer")]
pub struct AgentAuth(pub Bearer);

/// `200 OK` with a JSON body.
#[derive(ApiResponse, Debug)]
pub enum Ok200<T: Type + Serialize + Send + Sync> {
    /// Success.
    #[oai(status = 200)]
    Ok(Json<T>),
}

/// `201 Created` with the created item.
#[derive(ApiResponse, Debug)]
pub enum Created<T: Type + Serialize + Send + Sync> {
    /// Created.
    #[oai(status = 201)]
    Created(Json<T>),
}

/// `204 No Content`.
#[derive(ApiResponse, Debug)]
pub enum Deleted {
    /// Deleted, or marked for removal until the agent confirms it.
    #[oai(status = 204)]
    NoContent,
}

/// Every API of the server, as poem-openapi sees them.
pub type Apis<S> =
    (AgentsApi<S>, EngineRulesApi<S>, IpListApi<S>, MetricsApi<S>, MarketplaceApi<S>, FirewallApi<S>, AgentApi<S>);

/// The OpenAPI service over `core`, for the base path `/api/v1`.
pub fn service<S: Store>(core: &Arc<Pakkt<S>>) -> OpenApiService<Apis<S>, ()> {
    let apis = (
        AgentsApi::new(core),
        EngineRulesApi::new(core),
        IpListApi::new(core),
        MetricsApi::new(core),
        MarketplaceApi::new(core),
        FirewallApi::new(core),
        AgentApi::new(core),
    );
    OpenApiService::new(apis, "PAKKT API", env!("CARGO_PKG_VERSION"))
        .summary("DDoS protection for Linux hosts: XDP engine rules, IP lists and nftables, per agent.")
        .description(DESCRIPTION)
        .license(poem_openapi::LicenseObject::new("Apache-2.0"))
        .server(poem_openapi::ServerObject::new("/api/v1"))
}

const DESCRIPTION: &str = "\
The public API of a PAKKT control-plane server. Every request carries an API key in the \
`X-API-Key` header (`pakkt-server keys create --account NAME` makes one). Each key may make \
60 requests per rolling minute by default; every authenticated answer carries \
`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until a request \
is allowed again), and a refused one `Retry-After`.

Errors answer `{\"error\": \"<code>\", \"message\": \"...\"}` and are checked in this order: \
401 `unauthorized`, 402 `account_suspended`, 429 `rate_limited`, 400 `bad_request`, \
404 `not_found` (also for another account's items), 422 `validation_failed`, 409 `conflict`; \
500 `internal`. A path called with a method it does not have answers 405 `method_not_allowed`.

Operations tagged `agent` are the agent protocol (bearer token of one agent), not for panels.";

/// The generated spec as pretty JSON, as served at `/api/v1/openapi.json`
/// and committed as `docs/openapi.json`: poem-openapi's, [tidied](spec::tidy)
/// for code generators.
pub fn spec_json() -> String {
    let core = Arc::new(Pakkt::new(pakkt_core::memory::MemoryStore::new()));
    spec::tidy(&service(&core).spec())
}
