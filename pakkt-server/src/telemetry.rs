//! The server's Prometheus endpoint: what it answered, how fast, and how
//! many agents are holding a sync open, in the OpenMetrics text format.
//!
//! [`Telemetry`] works as a middleware around every route ([`TelemetryLayer`]). It counts each answer
//! by method, route and status and times it; it serves `GET /metrics`
//! itself when the metrics share the API's listener (the default), or
//! [`Telemetry::endpoint`] serves them on an address of their own
//! (`--metrics-listen`), which keeps them off a public listener.
//!
//! Every label comes from a fixed set: routes are labelled by their shape
//! (an API route with its parameters as `:id`, else `/api/v1/other`,
//! `/docs` or `/panel`), methods by name (else `other`), so that IDs, and
//! scanners probing for 404s, cannot grow the number of series.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use poem::http::{Method, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Where `GET /metrics` is answered on the main listener.
pub const METRICS_PATH: &str = "/metrics";

/// The OpenMetrics content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the request-duration buckets: from half a
/// millisecond to the 25 s an agent's long poll may be held.
const DURATION_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The API's routes, by shape (every parameter is `:id`). Any other path
/// under `/api/v1` is labelled `/api/v1/other`; the interactive docs are
/// `/docs` and everything else (the web panel) `/panel`, so that no
/// request can add a series of its own.
const API_ROUTES: &[&str] = &[
    "/api/v1/agents",
    "/api/v1/agents/:id",
    "/api/v1/agents/:id/programs",
    "/api/v1/agents/:id/programs/:id",
    "/api/v1/agents/:id/engine-rules",
    "/api/v1/agents/:id/ip-list",
    "/api/v1/agents/:id/ip-list/:id",
    "/api/v1/agents/:id/firewall",
    "/api/v1/agents/:id/firewall/:id",
    "/api/v1/agents/:id/templates/:id",
    "/api/v1/metrics/:id",
    "/api/v1/metrics/:id/summary",
    "/api/v1/marketplace/templates",
    "/api/v1/agent/sync",
    "/api/v1/agent/metrics",
    "/api/v1/openapi.json",
];

/// The words of the API's paths; any other segment is a parameter.
const ROUTE_WORDS: &[&str] = &[
    "agents",
    "agent",
    "sync",
    "metrics",
    "summary",
    "engine-rules",
    "programs",
    "ip-list",
    "firewall",
    "marketplace",
    "templates",
    "openapi.json",
];

/// Methods labelled as themselves; any other is `other`.
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

/// The server's metrics, shared by the middleware and the endpoint.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    polls: Gauge<i64, AtomicI64>,
    /// Whether the middleware answers `GET /metrics` itself.
    expose: bool,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Telemetry {
    /// Fresh metrics; `expose` serves them at [`METRICS_PATH`] on the
    /// listener the middleware wraps.
    pub fn new(expose: bool) -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "pakkt_http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let durations = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        registry.register(
            "pakkt_http_request_duration_seconds",
            "Time to answer, by method and route (agent syncs include the time a poll is held)",
            durations.clone(),
        );
        let polls = Gauge::<i64, AtomicI64>::default();
        registry.register("pakkt_agent_syncs_in_flight", "Agent syncs being answered or held open", polls.clone());
        registry.register(
            "pakkt_server_build",
            "The server's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Arc::new(Self { registry, requests, durations, polls, expose })
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn answer(&self) -> Response {
        Response::builder().content_type(CONTENT_TYPE).body(self.render())
    }

    /// An endpoint serving only `GET /metrics`, for `--metrics-listen`.
    pub fn endpoint(self: &Arc<Self>) -> impl Endpoint + 'static {
        let telemetry = Arc::clone(self);
        poem::endpoint::make_sync(move |req| {
            if req.uri().path() == METRICS_PATH && req.method() == Method::GET {
                telemetry.answer()
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        })
    }

    fn record(&self, method: &Method, route: &'static str, status: StatusCode, seconds: f64) {
        let method = method_label(method);
        self.durations.get_or_create(&RouteLabels { method, route }).observe(seconds);
        self.requests.get_or_create(&RequestLabels { method, route, status: status.as_u16() }).inc();
    }
}

/// The route a path belongs to: one of the known API routes, `/api/v1/other`,
/// `/docs`, or `/panel`.
pub fn route_label(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/api/v1") else {
        return if path == "/docs" || path.starts_with("/docs/") { "/docs" } else { "/panel" };
    };
    let mut shape = String::from("/api/v1");
    for segment in rest.split('/').filter(|s| !s.is_empty()) {
        shape.push('/');
        shape.push_str(if ROUTE_WORDS.contains(&segment) { segment } else { ":id" });
    }
    API_ROUTES.iter().find(|r| **r == shape).copied().unwrap_or("/api/v1/other")
}

fn method_label(method: &Method) -> &'static str {
    METHODS.iter().find(|m| **m == method.as_str()).copied().unwrap_or("other")
}

/// The middleware: `app.with(TelemetryLayer(telemetry))`.
#[derive(Debug)]
pub struct TelemetryLayer(pub Arc<Telemetry>);

impl<E: Endpoint> Middleware<E> for TelemetryLayer {
    type Output = Measured<E>;

    fn transform(&self, inner: E) -> Self::Output {
        Measured { inner, telemetry: Arc::clone(&self.0) }
    }
}

/// An endpoint whose answers are counted and timed.
#[derive(Debug)]
pub struct Measured<E> {
    inner: E,
    telemetry: Arc<Telemetry>,
}

/// Holds the in-flight gauge up for as long as a sync is being answered,
/// also when the client goes away mid-poll.
struct InFlight<'a>(&'a Gauge<i64, AtomicI64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<E: Endpoint> Endpoint for Measured<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let path = req.uri().path();
        if self.telemetry.expose && path == METRICS_PATH && req.method() == Method::GET {
            return Ok(self.telemetry.answer());
        }
        let started = Instant::now();
        let method = req.method().clone();
        let route = route_label(path);
        let _in_flight = (route == "/api/v1/agent/sync").then(|| {
            self.telemetry.polls.inc();
            InFlight(&self.telemetry.polls)
        });
        let outcome = self.inner.call(req).await.map(IntoResponse::into_response);
        let status = match &outcome {
            Ok(resp) => resp.status(),
            Err(err) => err.status(),
        };
        self.telemetry.record(&method, route, status, started.elapsed().as_secs_f64());
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_by_shape_from_a_fixed_set() {
        assert_eq!(route_label("/api/v1/agents"), "/api/v1/agents");
        assert_eq!(
            route_label("/api/v1/agents/01J5ZZZZZZZZZZZZZZZZZZZZZZ/programs/01J6AAAAAAAAAAAAAAAAAAAAAA"),
            "/api/v1/agents/:id/programs/:id"
        );
        assert_eq!(route_label("/api/v1/metrics/01J5ZZZZZZZZZZZZZZZZZZZZZZ/summary"), "/api/v1/metrics/:id/summary");
        assert_eq!(route_label("/api/v1/agent/sync"), "/api/v1/agent/sync");
        assert_eq!(route_label("/api/v1/agents/sync/docs/v1"), "/api/v1/other", "no shape of its own");
        assert_eq!(route_label("/api/v1/wp-login.php"), "/api/v1/other");
        assert_eq!(route_label("/docs/index.css"), "/docs");
        assert_eq!(route_label("/agents/01J5ZZZZZZZZZZZZZZZZZZZZZZ/traffic"), "/panel");
        assert_eq!(route_label("/"), "/panel");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").expect("method")), "other");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
    }

    #[test]
    fn answers_are_counted_and_rendered() {
        let telemetry = Telemetry::new(true);
        telemetry.record(&Method::GET, route_label("/api/v1/agents"), StatusCode::OK, 0.002);
        telemetry.record(&Method::GET, route_label("/api/v1/agents"), StatusCode::OK, 0.003);
        let text = telemetry.render();
        assert!(
            text.contains(r#"pakkt_http_requests_total{method="GET",route="/api/v1/agents",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"pakkt_http_request_duration_seconds_count{method="GET",route="/api/v1/agents"} 2"#));
        assert!(text.contains("pakkt_agent_syncs_in_flight 0"));
        assert!(text.ends_with("# EOF\n"));
    }
}
