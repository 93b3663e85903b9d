//! What the agent's end-to-end tests share: the real `pakkt-server` and
//! `pakkt-agent` binaries as child processes that die with the test, and a
//! blocking API client. Both can be placed in a network namespace
//! (`pakkt_engine::testing::Netns`): processes started and connections
//! made there live in it.
#![allow(dead_code)] // Each test binary uses part of this module.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pakkt_engine::testing::Netns;
use serde_json::{Value, json};

pub mod host;

/// The API key every test server starts with.
pub const KEY: &str = "pakkt_pub_e2eTestKey0123456789abcdefghij";

/// A free TCP port on this process's loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The server binary: built next to this test's binary.
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("pakkt-server");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status =
            Command::new(cargo).args(["build", "-p", "pakkt-server", "--bin", "pakkt-server"]).status().expect("cargo");
        assert!(status.success(), "building pakkt-server failed");
    }
    path
}

/// Runs `f` in `ns` (on a thread that entered it), or here.
pub fn within<T: Send + 'static>(ns: Option<&Netns>, f: impl FnOnce() -> T + Send + 'static) -> T {
    match ns {
        Some(ns) => ns.run(f),
        None => f(),
    }
}

/// A child process killed when dropped, its stderr collected.
pub struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `cmd` in `ns` (or here), stdout discarded, stderr kept.
    pub fn spawn_in(ns: Option<&Netns>, mut cmd: Command) -> Self {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = within(ns, move || cmd.spawn()).expect("spawn");
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().expect("log").push(line);
                }
            });
        }
        Self { child, log }
    }

    /// Starts `cmd` here.
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_in(None, cmd)
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `pakkt-server` binary, listening on loopback.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
    /// `--database`: an SQLite file or a PostgreSQL URL.
    pub database: String,
    /// `PAKKT_RATE_LIMIT` (0: none).
    pub rate_limit: u32,
}

impl Server {
    /// Starts a server on an SQLite file here and waits until it listens.
    pub fn start(db: &Path, port: u16) -> Self {
        Self::start_on(&db.display().to_string(), port, 0)
    }

    /// Starts a server on `database` (a file or a URL) with `rate_limit`
    /// requests per minute per key, and waits until it listens.
    pub fn start_on(database: &str, port: u16, rate_limit: u32) -> Self {
        let server = Self::spawn_on(None, database, port, rate_limit);
        server.wait_ready();
        server
    }

    /// Starts a server on an SQLite file in `ns` (or here) without
    /// waiting; see [`Api::wait_ready`].
    pub fn spawn_in(ns: Option<&Netns>, db: &Path, port: u16) -> Self {
        Self::spawn_on(ns, &db.display().to_string(), port, 0)
    }

    /// Starts a server on `database` in `ns` (or here) without waiting.
    pub fn spawn_on(ns: Option<&Netns>, database: &str, port: u16, rate_limit: u32) -> Self {
        let mut cmd = Command::new(server_binary());
        cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--database", database])
            .env("PAKKT_BOOTSTRAP_API_KEY", KEY)
            .env("PAKKT_RATE_LIMIT", rate_limit.to_string());
        Self { proc: Proc::spawn_in(ns, cmd), port, database: database.to_owned(), rate_limit }
    }

    /// Waits until the server listens.
    pub fn wait_ready(&self) {
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(20) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the server did not listen within 20 s: {:?}", self.proc.log());
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server and starts it again on the same database and port.
    pub fn restart(&mut self) {
        self.proc.kill();
        *self = Self::start_on(&self.database.clone(), self.port, self.rate_limit);
    }
}

/// The public API with [`KEY`], over blocking HTTP.
pub struct Api {
    http: reqwest::blocking::Client,
    base: String,
}

impl Api {
    /// A client of `server` from here.
    pub fn new(server: &Server) -> Self {
        Self::new_in(None, server)
    }

    /// A client of `server` whose connections are made in `ns`: the
    /// blocking client's I/O thread starts, and stays, in the namespace of
    /// the thread that builds it.
    pub fn new_in(ns: Option<&Netns>, server: &Server) -> Self {
        let http = within(ns, || reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build())
            .expect("HTTP client");
        Self { http, base: format!("{}/api/v1", server.origin()) }
    }

    /// Waits until the server answers.
    pub fn wait_ready(&self) {
        until("the server answers", Duration::from_secs(20), || {
            self.http.get(format!("{}/openapi.json", self.base)).send().is_ok_and(|r| r.status().is_success())
        });
    }

    /// Any request; the status and the JSON body (null if none).
    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).header("X-API-Key", KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("request");
        let status = response.status().as_u16();
        let text = response.text().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET that must answer 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// POST with a JSON body.
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    /// POST that must answer 201; the created object.
    pub fn create(&self, path: &str, body: Value) -> Value {
        let (status, created) = self.post(path, body);
        assert_eq!(status, 201, "POST {path}: {created}");
        created
    }

    /// DELETE; the status.
    pub fn delete(&self, path: &str) -> u16 {
        self.call(reqwest::Method::DELETE, path, None).0
    }

    /// Creates an agent; its ID and token.
    pub fn create_agent(&self, name: &str) -> (String, String) {
        let agent = self.create("/agents", json!({ "name": name }));
        let id = agent["id"].as_str().expect("id").to_owned();
        let token = agent["token"].as_str().expect("token").to_owned();
        (id, token)
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system's temporary directory.
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` every 20 ms until it holds; how long that took. Panics
/// after `limit`.
pub fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while began.elapsed() < limit {
        if check() {
            return began.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within {limit:?}");
}

/// A counter of the API's JSON (decimal strings).
pub fn decimal(value: &Value) -> u64 {
    value.as_str().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("not a decimal string: {value}"))
}
