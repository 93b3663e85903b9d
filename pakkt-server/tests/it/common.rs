//! A server on a real socket over SQLite in a temporary directory, and a
//! small client for it.

use std::sync::Arc;
use std::time::Duration;

use pakkt_core::quota::Quotas;
use pakkt_server::Core;
use pakkt_server::serve::{ServeConfig, bind};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    /// `http://127.0.0.1:PORT/api/v1`.
    pub base: String,
    /// Its use cases (for operator actions: keys, suspension).
    pub core: Arc<Core>,
    /// A client.
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// An answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// Asserts an error answer with the API's body.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"], code, "{self:?}");
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{self:?}");
        self
    }

    /// Asserts the status.
    #[track_caller]
    pub fn status(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{self:?}");
        &self.body
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestServer {
    /// A server with the default limit of 60 requests a minute.
    pub async fn start() -> Self {
        Self::with_limit(60).await
    }

    /// A server with `rate_limit` requests a minute per key (0: none).
    pub async fn with_limit(rate_limit: u32) -> Self {
        Self::with_limits(rate_limit, Quotas::default()).await
    }

    /// A server with `rate_limit` requests a minute per key (0: none) and
    /// `quotas`.
    pub async fn with_limits(rate_limit: u32, quotas: Quotas) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = ServeConfig {
            listen: "127.0.0.1:0".into(),
            database: dir.path().join("pakkt.db").display().to_string(),
            tls: None,
            rate_limit,
            db_connections: 8,
            bootstrap_api_key: None,
            metrics_listen: None,
            connections: pakkt_server::connections::ConnectionLimits::default(),
            agent_syncs_per_second: pakkt_core::ratelimit::DEFAULT_AGENT_SYNCS_PER_SECOND,
            agent_reports_per_second: pakkt_core::ratelimit::DEFAULT_AGENT_REPORTS_PER_SECOND,
            quotas,
        };
        let bound = bind(&config).await.expect("bind");
        let addr = bound.local_addr();
        let core = Arc::clone(bound.core());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            bound
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        let origin = format!("http://{addr}");
        Self {
            base: format!("{origin}/api/v1"),
            origin,
            core,
            http: reqwest::Client::builder().timeout(Duration::from_mins(1)).build().expect("client"),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }

    /// A new API key on `account` (created if needed).
    pub async fn key(&self, account: &str) -> String {
        let (_, key) = self.core.create_api_key(&account.parse().expect("account name")).await.expect("key");
        key.expose().to_owned()
    }

    /// Any request.
    pub async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Option<&Value>) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.header("X-API-Key", key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        into_resp(req.send().await.expect("request")).await
    }

    /// A request with a raw body.
    pub async fn raw(&self, method: Method, path: &str, key: &str, body: impl Into<reqwest::Body>) -> Resp {
        let req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-API-Key", key)
            .header("Content-Type", "application/json")
            .body(body);
        into_resp(req.send().await.expect("request")).await
    }

    pub async fn get(&self, key: &str, path: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, key: &str, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    pub async fn delete(&self, key: &str, path: &str) -> Resp {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Creates an agent: its ID and token.
    pub async fn agent(&self, key: &str, name: &str) -> (String, String) {
        let body = self.post(key, "/agents", &json!({ "name": name })).await;
        let created = body.status(201);
        (created["id"].as_str().expect("id").to_owned(), created["token"].as_str().expect("token").to_owned())
    }

    /// One agent sync.
    pub async fn sync(&self, token: &str, report: &Value, wait: u8) -> Resp {
        let req = self.http.post(format!("{}/agent/sync?wait={wait}", self.base)).bearer_auth(token).json(report);
        into_resp(req.send().await.expect("sync")).await
    }

    /// An agent that has connected once (so engine rules are accepted):
    /// its ID and token.
    pub async fn connected_agent(&self, key: &str, name: &str) -> (String, String) {
        let (id, token) = self.agent(key, name).await;
        self.sync(&token, &json!({"hostname": "debian", "iface": "ens3", "version": "0.1.0", "mode": "memory"}), 0)
            .await
            .status(200);
        (id, token)
    }

    /// Syncs as an agent that applied everything of the desired state (and
    /// nothing else): the desired state after it.
    pub async fn apply_all(&self, token: &str) -> Value {
        let desired = self.sync(token, &json!({}), 0).await.status(200).clone();
        let ids = |k: &str| -> Vec<Value> { desired[k].as_array().expect(k).iter().map(|i| i["id"].clone()).collect() };
        let report = json!({
            "iface": "ens3",
            "revision": desired["revision"],
            "applied": {
                "engine_rules": ids("engine_rules"),
                "ip_entries": ids("ip_entries"),
                "firewall_rules": ids("firewall_rules"),
            }
        });
        self.sync(token, &report, 0).await.status(200).clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn into_resp(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Resp { status, headers, body }
}

/// The fields of a JSON object, sorted.
pub fn fields(v: &Value) -> Vec<String> {
    let mut f: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    f.sort();
    f
}

/// Asserts `v` has every one of `names`.
#[track_caller]
pub fn has_fields(v: &Value, names: &[&str]) {
    for name in names {
        assert!(v.get(*name).is_some(), "missing {name:?} in {v}");
    }
}
