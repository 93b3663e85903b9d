//! The gate every request passes first.
//!
//! DESIGN §2 orders errors 401 → 402 → 429 → 400 → 404 → 422 → 409: the
//! caller is checked before anything it sent is parsed. poem-openapi parses
//! paths, queries and bodies before a handler runs, so the check cannot live
//! in the handlers; it lives here, around the whole service:
//!
//! - public routes (`/api/v1/...`) need an `X-API-Key`; the gate calls
//!   [`Pakkt::authenticate`](pakkt_core::service::Pakkt::authenticate)
//!   (401, 402, 429) and hands the [`Session`] to the handler through the
//!   request's extensions ([`crate::api::ApiKeyAuth`] reads it back);
//! - agent routes (`/api/v1/agent/...`) need `Authorization: Bearer` with an
//!   agent token (401), and API keys are worthless there; each call counts
//!   against the agent's per-agent limit before its body is read, and one
//!   over it is answered 429 once the agent may call again (at most 5 s
//!   later), so that refusing a flood costs little;
//! - the spec (`/api/v1/openapi.json`) and the UI (`/docs`) are open.
//!
//! On the way out the gate puts the `X-RateLimit-*` headers on every
//! authenticated answer (errors included), folds any error raised by poem
//! or poem-openapi (parse errors, unknown paths) into the API's error body,
//! and logs one line per request.

use std::sync::Arc;
use std::time::Instant;

use pakkt_core::Error;
use pakkt_core::ratelimit::RateDecision;
use pakkt_core::service::{AgentCall, Pakkt, Session};
use pakkt_core::store::Store;
use poem::http::{HeaderMap, HeaderValue};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use crate::error::{core_error_response, foreign_error_response, whole_seconds};
use crate::payload::AGENT_BODY_LIMIT;

/// Wraps an endpoint in the [`Gate`].
#[derive(Debug)]
pub struct GateLayer<S> {
    core: Arc<Pakkt<S>>,
}

impl<S> GateLayer<S> {
    /// A gate checking credentials with `core`.
    pub fn new(core: Arc<Pakkt<S>>) -> Self {
        Self { core }
    }
}

impl<S: Store, E: Endpoint> Middleware<E> for GateLayer<S> {
    type Output = Gate<E, S>;

    fn transform(&self, inner: E) -> Self::Output {
        Gate { inner, core: Arc::clone(&self.core) }
    }
}

/// The gate around the service (see the module docs).
#[derive(Debug)]
pub struct Gate<E, S> {
    inner: E,
    core: Arc<Pakkt<S>>,
}

/// Which credentials a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    /// `X-API-Key`.
    Public,
    /// `Authorization: Bearer pakkt_agent_…`.
    Agent,
    /// None: the spec, the UI.
    Open,
}

fn zone(path: &str) -> Zone {
    match path.strip_prefix("/api/v1") {
        Some("/openapi.json") => Zone::Open,
        Some(rest) if rest == "/agent" || rest.starts_with("/agent/") => Zone::Agent,
        Some(rest) if rest.is_empty() || rest.starts_with('/') => Zone::Public,
        _ => Zone::Open,
    }
}

/// Which of the agent's limits a request on an agent route counts against.
fn agent_call(path: &str) -> AgentCall {
    match path.strip_prefix("/api/v1/agent") {
        Some("/sync") => AgentCall::Sync,
        Some("/metrics") => AgentCall::Report,
        _ => AgentCall::Other,
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(poem::http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

impl<S: Store, E: Endpoint> Endpoint for Gate<E, S> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut rate = None;
        let outcome = match zone(&path) {
            Zone::Public => {
                let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
                match self.core.authenticate(key).await {
                    Ok(session) => {
                        rate = Some(session.rate);
                        req.extensions_mut().insert::<Session>(session);
                        self.inner.call(req).await.map(IntoResponse::into_response)
                    }
                    Err(e) => {
                        if let Error::RateLimited { limit, retry_after } = &e {
                            rate = Some(RateDecision {
                                allowed: false,
                                limit: *limit,
                                remaining: 0,
                                reset_after: *retry_after,
                            });
                        }
                        Ok(core_error_response(&e))
                    }
                }
            }
            Zone::Agent => match self.core.authenticate_agent_call(bearer(req.headers()), agent_call(&path)).await {
                Ok(agent) => {
                    req.extensions_mut().insert(agent);
                    self.inner.call(req).await.map(IntoResponse::into_response)
                }
                Err(e) => {
                    if let Error::AgentRateLimited { retry_after, .. } = &e {
                        // Held until the agent may call again: an agent
                        // sending faster than its limit on N connections
                        // gets about N answers a second, each cheap.
                        tokio::time::sleep((*retry_after).min(MAX_HOLD)).await;
                        discard_body(&mut req).await;
                    }
                    Ok(core_error_response(&e))
                }
            },
            Zone::Open => self.inner.call(req).await.map(IntoResponse::into_response),
        };
        let mut resp = match outcome {
            Ok(resp) => normalise(resp),
            Err(err) if !err.has_source() || err.is::<crate::error::BadRequest>() => normalise(err.into_response()),
            Err(err) => foreign_error_response(err.status(), &err.to_string()),
        };
        if let Some(rate) = rate {
            set_rate_headers(resp.headers_mut(), rate);
        }
        tracing::info!(
            method = %method,
            path = %path,
            status = resp.status().as_u16(),
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request"
        );
        Ok(resp)
    }
}

/// The longest a refused agent call is held before its 429.
const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops what is left of a refused agent call's body (at most
/// [`AGENT_BODY_LIMIT`] bytes, never held whole), so that the agent reads
/// the answer instead of a connection closed while it was still sending.
async fn discard_body(req: &mut Request) {
    let limit = u64::try_from(AGENT_BODY_LIMIT).unwrap_or(u64::MAX);
    let mut body = tokio::io::AsyncReadExt::take(req.take_body().into_async_read(), limit);
    let _ = tokio::io::copy(&mut body, &mut tokio::io::sink()).await;
}

/// Gives an error answer without the API's JSON body one.
fn normalise(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp.content_type().is_some_and(|c| c.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        foreign_error_response(status, "")
    } else {
        resp
    }
}

fn set_rate_headers(headers: &mut HeaderMap, rate: RateDecision) {
    if rate.limit == 0 {
        return; // limiting is off
    }
    let reset = whole_seconds(rate.reset_after);
    headers.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    if !rate.allowed {
        headers.insert(poem::http::header::RETRY_AFTER, HeaderValue::from(reset.max(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_follow_the_path() {
        assert_eq!(zone("/api/v1/agents"), Zone::Public);
        assert_eq!(zone("/api/v1/agents/01J5/programs"), Zone::Public);
        assert_eq!(zone("/api/v1/nope"), Zone::Public);
        assert_eq!(zone("/api/v1"), Zone::Public);
        assert_eq!(zone("/api/v1/agent/sync"), Zone::Agent);
        assert_eq!(zone("/api/v1/agent"), Zone::Agent);
        assert_eq!(zone("/api/v1/openapi.json"), Zone::Open);
        assert_eq!(zone("/docs"), Zone::Open);
        assert_eq!(zone("/api/v10/agents"), Zone::Open);
        assert_eq!(agent_call("/api/v1/agent/sync"), AgentCall::Sync);
        assert_eq!(agent_call("/api/v1/agent/metrics"), AgentCall::Report);
        assert_eq!(agent_call("/api/v1/agent/metricsx"), AgentCall::Other);
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("bearer  pakkt_agent_x "));
        assert_eq!(bearer(&headers), Some("pakkt_agent_x"));
        headers.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }
}
