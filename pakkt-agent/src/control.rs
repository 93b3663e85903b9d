//! The control-plane port: the agent's two calls to its server
//! (`docs/agent-protocol.md`), and their HTTP implementation.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use pakkt_core::metrics::MetricsReport;
use pakkt_core::sync::{DesiredState, SyncReport};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

/// Why a call to the server did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The server refused the token (revoked, or the agent was deleted).
    #[error("the server refused this agent's token (was the agent deleted?)")]
    Unauthorized,
    /// The server limits this agent's requests for now (429).
    #[error("the server limits this agent's requests: {message}")]
    RateLimited {
        /// How long the server asked to wait (`Retry-After`).
        retry_after: Duration,
        /// The error body's message.
        message: String,
    },
    /// The server answered with an error.
    #[error("the server answered {status}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The error body's message, or the raw body.
        message: String,
    },
    /// The server could not be reached, or the answer was cut short.
    #[error("cannot reach the server")]
    Transport(#[source] reqwest::Error),
}

/// What the agent needs from its server.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Reports the applied state and waits up to `wait` for the next
    /// desired state (see the protocol).
    async fn sync(&self, report: &SyncReport, wait: Duration) -> Result<DesiredState, ControlError>;

    /// Stores one metrics report; `false` when it was a retry of one stored.
    async fn report_metrics(&self, report: &MetricsReport) -> Result<bool, ControlError>;
}

/// Options for [`HttpControlPlane`].
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Extra PEM root certificate (a private CA) to trust.
    pub ca_cert_pem: Option<Vec<u8>>,
}

/// The control plane over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpControlPlane {
    api: Url,
    token: String,
    client: reqwest::Client,
}

/// Why a server URL is not usable.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Not a URL.
    #[error("--server {0:?} is not a URL: {1}")]
    Parse(String, String),
    /// Not http or https, or no host.
    #[error("--server {0:?} must be http://host[:port] or https://host[:port]")]
    Scheme(String),
    /// The CA certificate is not PEM.
    #[error("--ca-cert is not a PEM certificate: {0}")]
    CaCert(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The server's API root (`…/api/v1/`) from what the user gave: an origin,
/// with or without a trailing `/api/v1`.
pub fn api_root(server: &str) -> Result<Url, UrlError> {
    let trimmed = server.trim().trim_end_matches('/');
    let mut url = Url::parse(trimmed).map_err(|e| UrlError::Parse(server.to_owned(), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(UrlError::Scheme(server.to_owned()));
    }
    let path = url.path().trim_end_matches('/').trim_end_matches("/api/v1").to_owned();
    url.set_path(&format!("{path}/api/v1/"));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

#[derive(Deserialize)]
struct Stored {
    stored: bool,
}

impl HttpControlPlane {
    /// A client for the server at `server` (an origin) with `token`.
    pub fn new(server: &str, token: &str, options: &HttpOptions) -> Result<Self, UrlError> {
        let api = api_root(server)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Below the server's idle timeout (60 s by default), so that a
            // pooled connection is never reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("pakkt-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &options.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| UrlError::CaCert(e.to_string()))?;
            if certs.is_empty() {
                return Err(UrlError::CaCert("no certificate found in the file".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| UrlError::Client(e.to_string()))?;
        Ok(Self { api, token: token.trim().to_owned(), client })
    }

    /// The server's host, for resolving the addresses that must always pass.
    pub fn host(&self) -> (String, u16) {
        let host = self.api.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        (host, self.api.port_or_known_default().unwrap_or(80))
    }

    /// The server's addresses, resolved now.
    pub async fn server_addrs(&self) -> Vec<IpAddr> {
        let (host, port) = self.host();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![ip];
        }
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => {
                let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                ips.sort();
                ips.dedup();
                ips
            }
            Err(e) => {
                tracing::warn!(%host, error = %pakkt_core::Report(&e), "cannot resolve the server's address");
                Vec::new()
            }
        }
    }

    fn url(&self, path: &str) -> Url {
        self.api.join(path).unwrap_or_else(|_| self.api.clone())
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response, ControlError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(ControlError::Unauthorized);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|seconds| Duration::from_secs(seconds.clamp(1, 300)));
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text).map(|b| b.message).unwrap_or(text);
        let message = message.chars().take(500).collect();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ControlError::RateLimited {
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                message,
            });
        }
        Err(ControlError::Server { status: status.as_u16(), message })
    }
}

#[async_trait]
impl ControlPlane for HttpControlPlane {
    async fn sync(&self, report: &SyncReport, wait: Duration) -> Result<DesiredState, ControlError> {
        let mut url = self.url("agent/sync");
        url.query_pairs_mut().append_pair("wait", &wait.as_secs().min(25).to_string());
        let response = self
            .client
            .post(url)
            .bearer_auth(&self.token)
            .json(report)
            .timeout(wait + Duration::from_secs(15))
            .send()
            .await
            .map_err(ControlError::Transport)?;
        Self::check(response).await?.json().await.map_err(ControlError::Transport)
    }

    async fn report_metrics(&self, report: &MetricsReport) -> Result<bool, ControlError> {
        let response = self
            .client
            .post(self.url("agent/metrics"))
            .bearer_auth(&self.token)
            .json(report)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(ControlError::Transport)?;
        let stored: Stored = Self::check(response).await?.json().await.map_err(ControlError::Transport)?;
        Ok(stored.stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_root_accepts_an_origin_or_the_api_path() {
        for given in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/api/v1",
            "http://127.0.0.1:8080/api/v1/",
        ] {
            assert_eq!(api_root(given).expect(given).as_str(), "http://127.0.0.1:8080/api/v1/", "{given}");
        }
        assert_eq!(
            api_root("https://pakkt.example/base").expect("prefix").as_str(),
            "https://pakkt.example/base/api/v1/"
        );
        assert_eq!(api_root("http://[::1]:9000").expect("v6").as_str(), "http://[::1]:9000/api/v1/");
        for bad in ["", "127.0.0.1:8080", "ftp://x", "http://", "not a url"] {
            assert!(api_root(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_and_port_come_from_the_url() {
        let plane = HttpControlPlane::new("http://[::1]:9000", "t", &HttpOptions::default()).expect("client");
        assert_eq!(plane.host(), ("::1".to_owned(), 9000));
        let plane = HttpControlPlane::new("https://pakkt.example", "t", &HttpOptions::default()).expect("client");
        assert_eq!(plane.host(), ("pakkt.example".to_owned(), 443));
        assert!(HttpControlPlane::new("http://x", "t", &HttpOptions { ca_cert_pem: Some(b"nope".to_vec()) }).is_err());
    }
}
