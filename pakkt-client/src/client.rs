//! The client, its builder, and one method per API operation.

use std::fmt;
use std::time::Duration;

use pakkt_core::account::ApiKey;
use pakkt_core::id::{AgentId, EngineRuleId, FirewallRuleId, IpEntryId};
use pakkt_core::ip_list::ListType;
use pakkt_core::metrics::{Interval, Window};
use pakkt_core::template::Category;
use pakkt_core::wire::{
    AgentView, CreateAgentRequest, CreateEngineRuleRequest, CreateFirewallRuleRequest, CreateIpEntryRequest,
    CreatedAgent, CreatedEngineRule, CreatedFirewallRule, CreatedIpEntry, EngineRuleView, FirewallRuleView,
    IpEntryView, MetricBucketView, MetricsSummaryView, TemplateView,
};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// How long an idle pooled connection is kept: below the server's idle
/// timeout, so that the server never closes one as it is reused.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What applying a marketplace template created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum AppliedTemplate {
    /// An engine rule (`xdp` templates).
    Engine(EngineRuleView),
    /// A firewall rule (`nftables` templates).
    Firewall(FirewallRuleView),
}

/// A history query (`GET /metrics/:agent_id`); every field is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Start (server default: 24 h before `to`).
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// End (server default: now).
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Bucket size (server default: 1m).
    pub interval: Option<Interval>,
    /// One port only.
    pub port: Option<u16>,
}

/// Builds a [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: String,
    timeout: Duration,
    user_agent: String,
    http: Option<reqwest::Client>,
    rate_limit_retries: u32,
    max_rate_limit_wait: Duration,
    transport_retries: u32,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("rate_limit_retries", &self.rate_limit_retries)
            .field("transport_retries", &self.transport_retries)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Per-request timeout (default 30 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The `User-Agent` header (default `pakkt-client/<version>`).
    #[must_use]
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Use this `reqwest::Client` (proxies, custom TLS roots …). Its own
    /// timeout and user agent then apply.
    #[must_use]
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// How often a request answered 429 is retried after waiting for
    /// `Retry-After` (default 3; 0 turns automatic retries off).
    #[must_use]
    pub fn rate_limit_retries(mut self, retries: u32) -> Self {
        self.rate_limit_retries = retries;
        self
    }

    /// The longest `Retry-After` waited for automatically (default 65 s);
    /// a longer one is returned as [`Error::RateLimited`] at once.
    #[must_use]
    pub fn max_rate_limit_wait(mut self, wait: Duration) -> Self {
        self.max_rate_limit_wait = wait;
        self
    }

    /// How often an idempotent request (GET, DELETE) is retried, with
    /// backoff, when the connection fails (default 2; 0 turns it off).
    /// Creates are never retried blindly: a lost answer could hide a
    /// created item.
    #[must_use]
    pub fn transport_retries(mut self, retries: u32) -> Self {
        self.transport_retries = retries;
        self
    }

    /// The client.
    pub fn build(self) -> Result<Client> {
        let base = api_root(&self.base_url)?;
        let key: ApiKey = self
            .api_key
            .trim()
            .parse()
            .map_err(|e: pakkt_core::validation::Invalid| Error::Config(format!("API key: {}", e.message)))?;
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .timeout(self.timeout)
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .user_agent(self.user_agent)
                .build()
                .map_err(|e| Error::Config(e.to_string()))?,
        };
        Ok(Client {
            http,
            base,
            key,
            rate_limit_retries: self.rate_limit_retries,
            max_rate_limit_wait: self.max_rate_limit_wait,
            transport_retries: self.transport_retries,
        })
    }
}

/// The API root (`…/api/v1/`) from an origin, with or without `/api/v1`.
fn api_root(base: &str) -> Result<Url> {
    let mut url = Url::parse(base.trim().trim_end_matches('/')).map_err(|e| Error::Config(format!("base URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::Config(format!("base URL {base:?} must be http(s)://host[:port]")));
    }
    let path = url.path().trim_end_matches('/').trim_end_matches("/api/v1").to_owned();
    url.set_path(&format!("{path}/api/v1/"));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// An async client for the PAKKT public API. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: ApiKey,
    rate_limit_retries: u32,
    max_rate_limit_wait: Duration,
    transport_retries: u32,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("api_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn retry_after(response: &reqwest::Response) -> Duration {
    let header = |name: &str| {
        response.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
    };
    Duration::from_secs(header("retry-after").or_else(|| header("x-ratelimit-reset")).unwrap_or(1).max(1))
}

impl Client {
    /// A builder for the server at `base_url` (e.g. `https://api.pakkt.io`
    /// or `https://api.pakkt.io/api/v1`) with `api_key` (`pakkt_pub_…`).
    pub fn builder(base_url: impl Into<String>, api_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            api_key: api_key.into(),
            timeout: Duration::from_secs(30),
            user_agent: concat!("pakkt-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            http: None,
            rate_limit_retries: 3,
            max_rate_limit_wait: Duration::from_secs(65),
            transport_retries: 2,
        }
    }

    /// The API root this client calls.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<(StatusCode, String)> {
        let mut url = self.base.join(path).map_err(|e| Error::Config(format!("path {path:?}: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let idempotent = matches!(method, Method::GET | Method::DELETE);
        let (mut limited, mut broken) = (0u32, 0u32);
        loop {
            let mut request = self.http.request(method.clone(), url.clone()).header("X-API-Key", self.key.expose());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                // A kept-alive connection the server closed as the request
                // went out fails as a request error: safe to resend a GET
                // or DELETE.
                Err(e)
                    if idempotent
                        && broken < self.transport_retries
                        && (e.is_connect() || e.is_timeout() || e.is_request()) =>
                {
                    broken += 1;
                    let pause = Duration::from_millis(200 * (1 << broken.min(6)) + rand::random_range(0..100));
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(e) => return Err(Error::Transport(e)),
            };
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS && limited < self.rate_limit_retries {
                let wait = retry_after(&response);
                if wait <= self.max_rate_limit_wait {
                    limited += 1;
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            let wait = retry_after(&response);
            let text = response.text().await.map_err(Error::Transport)?;
            if status.is_success() {
                return Ok((status, text));
            }
            return Err(Error::from_response(status.as_u16(), &text, wait));
        }
    }

    async fn json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T> {
        let (_, text) = self.send(method, path, query, body).await?;
        serde_json::from_str(&text).map_err(Error::Decode)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        self.json::<T, ()>(Method::GET, path, query, None).await
    }

    async fn post<T: DeserializeOwned, B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<T> {
        self.json(Method::POST, path, &[], Some(body)).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.send::<()>(Method::DELETE, path, &[], None).await.map(|_| ())
    }

    // ----- agents ------------------------------------------------------------

    /// `GET /agents`: your agents.
    pub async fn list_agents(&self) -> Result<Vec<AgentView>> {
        self.get("agents", &[]).await
    }

    /// `GET /agents/:id`.
    pub async fn get_agent(&self, agent: AgentId) -> Result<AgentView> {
        self.get(&format!("agents/{agent}"), &[]).await
    }

    /// `POST /agents`: a new agent and its one-time token.
    pub async fn create_agent(&self, name: &str) -> Result<CreatedAgent> {
        self.post("agents", &CreateAgentRequest { name: name.to_owned() }).await
    }

    /// `DELETE /agents/:id`: the agent, its token and everything on it.
    pub async fn delete_agent(&self, agent: AgentId) -> Result<()> {
        self.delete(&format!("agents/{agent}")).await
    }

    // ----- engine rules -------------------------------------------------------

    /// `GET /agents/:id/programs`: the agent's PAKKT Engine rules.
    pub async fn list_engine_rules(&self, agent: AgentId) -> Result<Vec<EngineRuleView>> {
        self.get(&format!("agents/{agent}/programs"), &[]).await
    }

    /// `POST /agents/:id/engine-rules`.
    pub async fn create_engine_rule(
        &self,
        agent: AgentId,
        rule: &CreateEngineRuleRequest,
    ) -> Result<CreatedEngineRule> {
        self.post(&format!("agents/{agent}/engine-rules"), rule).await
    }

    /// `DELETE /agents/:id/programs/:prog_id`.
    pub async fn delete_engine_rule(&self, agent: AgentId, rule: EngineRuleId) -> Result<()> {
        self.delete(&format!("agents/{agent}/programs/{rule}")).await
    }

    // ----- IP lists -------------------------------------------------------------

    /// `GET /agents/:id/ip-list[?type=…]`.
    pub async fn list_ip_entries(&self, agent: AgentId, list: Option<ListType>) -> Result<Vec<IpEntryView>> {
        let query: Vec<(&str, String)> = list.map(|l| ("type", l.as_str().to_owned())).into_iter().collect();
        self.get(&format!("agents/{agent}/ip-list"), &query).await
    }

    /// `POST /agents/:id/ip-list`.
    pub async fn add_ip_entry(&self, agent: AgentId, entry: &CreateIpEntryRequest) -> Result<CreatedIpEntry> {
        self.post(&format!("agents/{agent}/ip-list"), entry).await
    }

    /// `DELETE /agents/:id/ip-list/:entry_id`.
    pub async fn delete_ip_entry(&self, agent: AgentId, entry: IpEntryId) -> Result<()> {
        self.delete(&format!("agents/{agent}/ip-list/{entry}")).await
    }

    // ----- metrics ----------------------------------------------------------------

    /// `GET /metrics/:agent_id/summary?window=…`.
    pub async fn metrics_summary(&self, agent: AgentId, window: Window) -> Result<MetricsSummaryView> {
        let window = match window {
            Window::TenMinutes => "10m",
            Window::Hour => "1h",
            Window::Day => "24h",
        };
        self.get(&format!("metrics/{agent}/summary"), &[("window", window.to_owned())]).await
    }

    /// `GET /metrics/:agent_id?from&to&interval&port`.
    pub async fn metrics_history(&self, agent: AgentId, query: &HistoryQuery) -> Result<Vec<MetricBucketView>> {
        let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(from) = query.from {
            params.push(("from", time(from)));
        }
        if let Some(to) = query.to {
            params.push(("to", time(to)));
        }
        if let Some(interval) = query.interval {
            params.push(("interval", interval.as_str().to_owned()));
        }
        if let Some(port) = query.port {
            params.push(("port", port.to_string()));
        }
        self.get(&format!("metrics/{agent}"), &params).await
    }

    // ----- marketplace --------------------------------------------------------------

    /// `GET /marketplace/templates[?category=…]`.
    pub async fn list_templates(&self, category: Option<Category>) -> Result<Vec<TemplateView>> {
        let query: Vec<(&str, String)> = category.map(|c| ("category", c.as_str().to_owned())).into_iter().collect();
        self.get("marketplace/templates", &query).await
    }

    /// `POST /agents/:id/templates/:template_id`: creates the template's rule.
    pub async fn apply_template(&self, agent: AgentId, template_id: &str) -> Result<AppliedTemplate> {
        if template_id.is_empty() || !template_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(Error::Config(format!("template ID {template_id:?} is not a template slug")));
        }
        self.post(&format!("agents/{agent}/templates/{template_id}"), &serde_json::json!({})).await
    }

    // ----- firewall -------------------------------------------------------------------

    /// `GET /agents/:id/firewall`.
    pub async fn list_firewall_rules(&self, agent: AgentId) -> Result<Vec<FirewallRuleView>> {
        self.get(&format!("agents/{agent}/firewall"), &[]).await
    }

    /// `POST /agents/:id/firewall`.
    pub async fn create_firewall_rule(
        &self,
        agent: AgentId,
        rule: &CreateFirewallRuleRequest,
    ) -> Result<CreatedFirewallRule> {
        self.post(&format!("agents/{agent}/firewall"), rule).await
    }

    /// `DELETE /agents/:id/firewall/:rule_id` (system rules answer 422).
    pub async fn delete_firewall_rule(&self, agent: AgentId, rule: FirewallRuleId) -> Result<()> {
        self.delete(&format!("agents/{agent}/firewall/{rule}")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "pakkt_pub_0123456789abcdefghijABCDEFGHIJ";

    #[test]
    fn base_urls_normalise_to_the_api_root() {
        for base in [
            "https://api.pakkt.io",
            "https://api.pakkt.io/",
            "https://api.pakkt.io/api/v1",
            "https://api.pakkt.io/api/v1/",
        ] {
            let client = Client::builder(base, KEY).build().expect(base);
            assert_eq!(client.base_url().as_str(), "https://api.pakkt.io/api/v1/");
        }
        assert!(matches!(Client::builder("api.pakkt.io", KEY).build(), Err(Error::Config(_))));
        assert!(matches!(Client::builder("ftp://x", KEY).build(), Err(Error::Config(_))));
    }

    #[test]
    fn malformed_keys_are_refused_and_keys_never_show_in_debug() {
        assert!(matches!(Client::builder("http://localhost", "secret").build(), Err(Error::Config(_))));
        let builder = Client::builder("http://localhost", KEY);
        let client = builder.clone().build().expect("client");
        for shown in [format!("{builder:?}"), format!("{client:?}")] {
            assert!(!shown.contains(&KEY[10..]), "{shown}");
            assert!(shown.contains("<redacted>"));
        }
    }

    #[test]
    fn error_bodies_become_typed_errors() {
        let body = r#"{"error":"conflict","message":"an active rule on this port range already exists (01J7)"}"#;
        let e = Error::from_response(409, body, Duration::ZERO);
        assert!(matches!(e, Error::Conflict { ref message } if message.contains("01J7")));
        assert_eq!(e.status(), Some(409));
        for (status, code) in
            [(400, 400), (401, 401), (402, 402), (404, 404), (422, 422), (429, 429), (500, 500), (503, 503)]
        {
            assert_eq!(Error::from_response(status, "{}", Duration::ZERO).status(), Some(code));
        }
        assert!(matches!(
            Error::from_response(502, "<html>", Duration::ZERO),
            Error::UnexpectedStatus { status: 502, .. }
        ));
    }
}
