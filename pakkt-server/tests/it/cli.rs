//! The built `pakkt-server` binary: DESIGN §3's command line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub(super) const BIN: &str = env!("CARGO_BIN_EXE_pakkt-server");

/// The binary with a clean environment (no PAKKT_* from the caller).
pub(super) fn cmd(dir: &Path) -> Command {
    clean(Command::new(BIN), dir)
}

/// `c` run in `dir` without the caller's PAKKT_* variables.
pub(super) fn clean(mut c: Command, dir: &Path) -> Command {
    c.current_dir(dir).env("RUST_LOG", "info");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PAKKT_") {
            c.env_remove(name);
        }
    }
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run pakkt-server")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `keys create`: the key (last line of stdout) and the key ID.
pub(super) fn create_key(dir: &Path, db: &str, account: &str) -> (String, String) {
    let out = run(cmd(dir).args(["keys", "create", "--account", account, "--database", db]));
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let key = text.lines().last().expect("a line").trim().to_owned();
    assert!(key.starts_with("pakkt_pub_"), "{text}");
    let id =
        text.split_whitespace().find(|w| w.len() == 26 && w.chars().all(|c| c.is_ascii_alphanumeric())).expect("id");
    (key, id.to_owned())
}

/// A server process, stopped with SIGTERM when dropped.
pub(super) struct Served {
    child: Child,
    pub(super) origin: String,
    pub(super) log: Arc<Mutex<String>>,
}

impl Served {
    pub(super) fn start(c: &mut Command) -> Result<Self, String> {
        let mut child =
            c.arg("--listen").arg("127.0.0.1:0").stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).map(str::to_owned);
                    let scheme = if line.contains("https") { "https" } else { "http" };
                    let _ = tx.send(addr.map(|a| format!("{scheme}://{a}")));
                }
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        if let Ok(Some(origin)) = rx.recv_timeout(Duration::from_secs(30)) {
            return Ok(Self { child, origin, log });
        }
        let status = child.wait().ok();
        std::thread::sleep(Duration::from_millis(100));
        Err(format!("did not start ({status:?}): {}", log.lock().map(|l| l.clone()).unwrap_or_default()))
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.origin.replace("127.0.0.1", "localhost"))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub(super) fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(super) async fn status(url: &str, key: &str) -> u16 {
    reqwest::Client::new().get(url).header("X-API-Key", key).send().await.expect("request").status().as_u16()
}

#[tokio::test]
async fn keys_and_accounts_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("cli.db").display().to_string();
    let (key, key_id) = create_key(dir.path(), &db, "acme");
    let (other, _) = create_key(dir.path(), &db, "acme");
    let mut server = Served::start(cmd(dir.path()).args(["--database", &db])).expect("start");
    assert_eq!(status(&server.url("/agents"), &key).await, 200);

    // Suspend → 402; resume → 200.
    let out = run(cmd(dir.path()).args(["accounts", "suspend", "acme", "--database", &db]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status(&server.url("/agents"), &key).await, 402);
    assert!(run(cmd(dir.path()).args(["--database", &db, "accounts", "resume", "acme"])).status.success());
    assert_eq!(status(&server.url("/agents"), &key).await, 200);

    // Revoke → 401 for that key only.
    let out = run(cmd(dir.path()).args(["keys", "revoke", &key_id, "--database", &db]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status(&server.url("/agents"), &key).await, 401);
    assert_eq!(status(&server.url("/agents"), &other).await, 200);

    // Unknown names and IDs: exit 1. Usage errors: exit 2.
    for args in [
        vec!["accounts", "suspend", "nobody"],
        vec!["accounts", "resume", "nobody"],
        vec!["keys", "revoke", "01J5ZZZZZZZZZZZZZZZZZZZZZZ"],
    ] {
        let out = run(cmd(dir.path()).args(&args).args(["--database", &db]));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    }
    for args in [
        vec!["accounts"],
        vec!["accounts", "suspend"],
        vec!["keys", "create"],
        vec!["keys", "revoke", "not-an-id"],
        vec!["keys", "create", "--account", "Not Valid"],
        vec!["--rate-limit", "many"],
        vec!["--db-connections", "0"],
        vec!["--db-connections", "1001"],
        vec!["frobnicate"],
    ] {
        let out = run(cmd(dir.path()).args(&args).args(["--database", &db]));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }

    // An agent holding a sync when SIGTERM comes gets its answer (the
    // current state), not a dropped connection at the end of the grace.
    let http = reqwest::Client::new();
    let agent: serde_json::Value = http
        .post(server.url("/agents"))
        .header("X-API-Key", &other)
        .json(&serde_json::json!({"name": "held"}))
        .send()
        .await
        .expect("create agent")
        .json()
        .await
        .expect("agent");
    let token = agent["token"].as_str().expect("token").to_owned();
    let sync_url = server.url("/agent/sync");
    let sync = |wait: u8| {
        http.post(format!("{sync_url}?wait={wait}"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"iface": "eth0"}))
            .send()
    };
    let first: serde_json::Value = sync(0).await.expect("first sync").json().await.expect("state");
    let revision = first["revision"].as_u64().expect("revision");
    let held = tokio::spawn(
        http.post(format!("{sync_url}?wait=25"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"iface": "eth0", "revision": revision}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "the sync is held");

    // SIGTERM: a graceful stop with status 0.
    let exit = server.terminate();
    let answer = held.await.expect("task").expect("the held sync is answered, not dropped");
    assert_eq!(answer.status().as_u16(), 200);
    let state: serde_json::Value = answer.json().await.expect("the current state");
    assert_eq!(state["revision"].as_u64(), Some(revision));
    assert!(exit.success(), "{exit:?}");
    let log = server.log.lock().expect("log").clone();
    assert!(log.contains("SIGTERM") && log.contains("stopped"), "{log}");
    assert!(
        log.lines().any(|l| l.contains("request") && l.contains("/api/v1/agents") && l.contains("status=200")),
        "{log}"
    );
}

#[tokio::test]
async fn the_bootstrap_key_and_the_defaults() {
    let dir = tempfile::tempdir().expect("dir");
    let key = format!("pakkt_pub_{}", "b".repeat(32));
    // No --database: pakkt.db in the working directory, created on first start.
    let server = Served::start(cmd(dir.path()).env("PAKKT_BOOTSTRAP_API_KEY", &key)).expect("start");
    assert!(dir.path().join("pakkt.db").exists());
    assert_eq!(status(&server.url("/agents"), &key).await, 200);
    drop(server);
    // account default holds exactly that key: a key made since is dropped.
    let (made, _) = create_key(dir.path(), "pakkt.db", "default");
    let server = Served::start(cmd(dir.path()).env("PAKKT_BOOTSTRAP_API_KEY", &key)).expect("restart");
    assert_eq!(status(&server.url("/agents"), &key).await, 200);
    assert_eq!(status(&server.url("/agents"), &made).await, 401);
    drop(server);

    // A malformed bootstrap key stops the start with an error.
    let out = run(cmd(dir.path()).env("PAKKT_BOOTSTRAP_API_KEY", "not-a-key").args(["--listen", "127.0.0.1:0"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("PAKKT_BOOTSTRAP_API_KEY"), "{out:?}");

    // A flag beats its environment variable; flags go after the subcommand too.
    let out = run(cmd(dir.path()).env("PAKKT_DATABASE_URL", "from-env.db").args([
        "keys",
        "create",
        "--account",
        "acme",
        "--database",
        "from-flag.db",
    ]));
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("from-flag.db").exists() && !dir.path().join("from-env.db").exists());
    let out =
        run(cmd(dir.path()).env("PAKKT_DATABASE_URL", "from-env.db").args(["keys", "create", "--account", "acme"]));
    assert!(out.status.success() && dir.path().join("from-env.db").exists(), "{out:?}");
    // The rate limit from the environment.
    let (key, _) = create_key(dir.path(), "from-env.db", "acme");
    let server =
        Served::start(cmd(dir.path()).env("PAKKT_RATE_LIMIT", "2").args(["--database", "from-env.db"])).expect("start");
    assert_eq!(status(&server.url("/agents"), &key).await, 200);
    assert_eq!(status(&server.url("/agents"), &key).await, 200);
    assert_eq!(status(&server.url("/agents"), &key).await, 429);
}

#[tokio::test]
async fn quotas_come_from_flags_and_the_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("quotas.db").display().to_string();
    let (key, _) = create_key(dir.path(), &db, "acme");

    // `keys create` applies PAKKT_MAX_KEYS (exit 1, naming the quota); the
    // flag beats the variable.
    let create = ["keys", "create", "--account", "acme", "--database", &db];
    let out = run(cmd(dir.path()).env("PAKKT_MAX_KEYS", "1").args(create));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("quota exceeded: at most 1 API key per account (--max-keys)"), "{stderr}");
    let out = run(cmd(dir.path()).env("PAKKT_MAX_KEYS", "1").args(create).args(["--max-keys", "2"]));
    assert!(out.status.success(), "{out:?}");
    for args in [["--max-agents", "-1"], ["--max-keys", "many"], ["--max-ip-entries", "4294967296"]] {
        let out = run(cmd(dir.path()).args(args).args(["keys", "revoke", "01J5ZZZZZZZZZZZZZZZZZZZZZZ"]));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }

    // --max-agents 2 (beating PAKKT_MAX_AGENTS=1): the third agent gets 422.
    let server =
        Served::start(cmd(dir.path()).env("PAKKT_MAX_AGENTS", "1").args(["--database", &db, "--max-agents", "2"]))
            .expect("start");
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for name in ["one", "two", "three"] {
        let resp = http
            .post(server.url("/agents"))
            .header("X-API-Key", &key)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("POST /agents");
        let status = resp.status().as_u16();
        answers.push((status, resp.json::<serde_json::Value>().await.expect("a JSON body")));
    }
    assert_eq!(answers.iter().map(|(status, _)| *status).collect::<Vec<_>>(), [201, 201, 422], "{answers:?}");
    let refused = &answers[2].1;
    assert_eq!(refused["error"], "validation_failed", "{refused}");
    assert_eq!(refused["message"], "quota exceeded: at most 2 agents per account (--max-agents)", "{refused}");
    let listed: serde_json::Value = http
        .get(server.url("/agents"))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("GET /agents")
        .json()
        .await
        .expect("list");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "no third agent");
}

#[tokio::test]
async fn the_spec_command_prints_the_served_spec() {
    let dir = tempfile::tempdir().expect("dir");
    let out = run(cmd(dir.path()).arg("openapi"));
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim_end(), pakkt_server::api::spec_json().trim_end());
}

#[tokio::test]
async fn tls_is_served_with_the_given_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed");
    assert!(made.status.success(), "{made:?}");
    let (api_key, _) = create_key(dir.path(), "tls.db", "acme");
    let server = Served::start(
        cmd(dir.path()).args(["--database", "tls.db", "--tls-cert"]).arg(&cert).arg("--tls-key").arg(&key),
    )
    .expect("start");
    assert!(server.origin.starts_with("https://"), "{}", server.origin);
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&cert)
        .args(["-H", &format!("X-API-Key: {api_key}"), &server.url("/agents")])
        .output()
        .expect("curl");
    assert_eq!(stdout(&out), "200", "{out:?}");
    drop(server);
    // A key that is no key stops the start.
    std::fs::write(&key, "not a key").expect("write");
    let err = Served::start(
        cmd(dir.path()).args(["--database", "tls.db", "--tls-cert"]).arg(&cert).arg("--tls-key").arg(&key),
    )
    .err()
    .expect("refused");
    assert!(err.contains("key"), "{err}");
    // One of the pair alone is a usage error.
    let out = run(cmd(dir.path()).arg("--tls-cert").arg(&cert));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Where `migrate-to` copies to in these tests: a fresh PostgreSQL schema
/// when `PAKKT_TEST_POSTGRES_URL` names a server, else an SQLite file (and
/// under `PAKKT_REQUIRE_ALL=1`, a missing server fails the test).
async fn migration_target(dir: &Path) -> String {
    use sqlx::Connection as _;
    let base = match std::env::var("PAKKT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let reason = "PAKKT_TEST_POSTGRES_URL is not set: migrating to an SQLite file instead";
            assert!(std::env::var("PAKKT_REQUIRE_ALL").as_deref() != Ok("1"), "PostgreSQL required: {reason}");
            eprintln!("{reason}");
            return dir.join("target.db").display().to_string();
        }
    };
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect to test postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&mut conn).await.expect("schema");
    conn.close().await.expect("close");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// The files in `dir` (but SQLite's -wal and -shm, which come and go).
fn files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn migrate_to_moves_everything_and_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().expect("dir");
    let source = "source.db";
    let (key, _) = create_key(dir.path(), source, "acme");
    let mut server = Served::start(cmd(dir.path()).args(["--database", source])).expect("start");
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(server.url("/agents"))
        .header("X-API-Key", &key)
        .json(&serde_json::json!({"name": "VPS Paris"}))
        .send()
        .await
        .expect("create agent")
        .json()
        .await
        .expect("json");
    let (agent, token) = (created["id"].as_str().expect("id"), created["token"].as_str().expect("token"));
    let entry = http
        .post(server.url(&format!("/agents/{agent}/ip-list")))
        .header("X-API-Key", &key)
        .json(&serde_json::json!({"list_type": "blacklist", "ip_address": "203.0.113.42", "reason": "flood"}))
        .send()
        .await
        .expect("ip entry");
    assert_eq!(entry.status().as_u16(), 201);
    let before = http.get(server.url(&format!("/agents/{agent}"))).header("X-API-Key", &key).send().await;
    let before: serde_json::Value = before.expect("get").json().await.expect("json");
    assert!(server.terminate().success());

    // The copy: one line per table, then a summary.
    let target = migration_target(dir.path()).await;
    let out = run(cmd(dir.path()).args(["migrate-to", &target, "--database", source]));
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let rows = |table: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(table))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    assert_eq!((rows("accounts"), rows("api_keys"), rows("agents")), (Some(1), Some(1), Some(1)), "{text}");
    assert_eq!(rows("ip_entries"), Some(1), "{text}");
    assert_eq!(rows("firewall_rules"), Some(3), "the agent's system rules: {text}");
    assert!(text.lines().last().is_some_and(|l| l.starts_with("Copied ") && l.contains("--database")), "{text}");

    // A server on the target knows the key, the agent and its token.
    let server = Served::start(cmd(dir.path()).args(["--database", &target])).expect("start on the target");
    let after = http.get(server.url(&format!("/agents/{agent}"))).header("X-API-Key", &key).send().await;
    let after: serde_json::Value = after.expect("get").json().await.expect("json");
    assert_eq!(after, before);
    let listed = http.get(server.url(&format!("/agents/{agent}/ip-list"))).header("X-API-Key", &key).send().await;
    let listed: serde_json::Value = listed.expect("list").json().await.expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let synced = http.post(server.url("/agent/sync?wait=0")).bearer_auth(token).json(&serde_json::json!({})).send();
    let synced: serde_json::Value = synced.await.expect("sync").json().await.expect("json");
    assert_eq!(synced["ip_entries"].as_array().map(Vec::len), Some(1), "{synced}");
    drop(server);

    // Refusals: a clear message, exit 1, nothing changed.
    let unchanged = files(dir.path());
    for (args, says) in [
        (vec!["migrate-to", target.as_str(), "--database", source], "migrate-to only fills an empty database"),
        (vec!["migrate-to", "mysql://localhost/pakkt", "--database", source], "unsupported database URL"),
        (vec!["migrate-to", "sqlite://source.db", "--database", source], "another, empty database"),
        (vec!["migrate-to", "other.db", "--database", "missing.db"], "does not exist"),
    ] {
        let out = run(cmd(dir.path()).args(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stdout(&out).is_empty(), "{args:?}: {out:?}");
    }
    let out = run(cmd(dir.path()).args(["migrate-to", target.as_str(), "--database", source]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("table accounts has rows"), "{out:?}");
    assert_eq!(files(dir.path()), unchanged, "no file created");
    let out = run(cmd(dir.path()).arg("migrate-to"));
    assert_eq!(out.status.code(), Some(2), "a missing URL is a usage error: {out:?}");

    // The target still holds exactly what was copied.
    let server = Served::start(cmd(dir.path()).args(["--database", &target])).expect("restart on the target");
    let agents = http.get(server.url("/agents")).header("X-API-Key", &key).send().await;
    let agents: serde_json::Value = agents.expect("list").json().await.expect("json");
    assert_eq!(agents.as_array().map(Vec::len), Some(1), "{agents}");
}
