//! The web panel in a real browser: headless Chromium driven over
//! WebDriver (chromedriver), against the real `pakkt-server` binary and a
//! real `pakkt-agent --dataplane memory --simulate-traffic`, all on
//! loopback. It signs in, adds an agent, starts the agent with the token the
//! panel showed, adds an engine rule and waits for it to be `loaded`, sees
//! traffic on the chart, creates and revokes a key, and signs out. Each page
//! is saved as a PNG under `target/panel-screenshots/`; with
//! `PAKKT_PANEL_DOCS_SCREENSHOT=1` the traffic page is also written to
//! `docs/panel-traffic.png`.
//!
//! Without `chromium` and `chromedriver` the test skips with a reason,
//! unless `PAKKT_REQUIRE_ALL=1`, where it fails. Every process it starts
//! (server, agent, chromedriver and the browser, in one process group) is
//! killed when the test ends, whether it passed or not.
#![allow(clippy::missing_panics_doc, clippy::too_many_lines)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

const KEY: &str = "pakkt_pub_panelTestKey0123456789abcdefghij";
const CHROMIUM: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];
const CHROMEDRIVER: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn first_existing(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

/// A child process (and its process group) killed when dropped.
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, name, log }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The whole group: chromedriver's browser dies with it.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log (last lines) ---\n{}", self.name, self.tail());
        }
    }
}

fn wait_listening(port: u16, what: &str) {
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(30) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port} within 30 s");
}

/// The server binary on SQLite in `dir`, with [`KEY`]; its origin.
fn start_server(dir: &Path) -> (Proc, String) {
    start_server_with(dir, &[])
}

fn start_server_with(dir: &Path, args: &[&str]) -> (Proc, String) {
    start_server_on(dir, &dir.join("pakkt.db").display().to_string(), "pakkt-server", args)
}

/// The server binary on `database` (its log in `dir`, named `name`); its origin.
fn start_server_on(dir: &Path, database: &str, name: &'static str, args: &[&str]) -> (Proc, String) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pakkt-server"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--database", database])
        .args(args)
        .env("PAKKT_BOOTSTRAP_API_KEY", KEY)
        .env_remove("PAKKT_RATE_LIMIT");
    let server = Proc::spawn(name, cmd, dir);
    wait_listening(port, name);
    (server, format!("http://127.0.0.1:{port}"))
}

/// The agent binary: built next to the server binary by a workspace build;
/// built here when missing.
fn agent_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_pakkt-server")).with_file_name("pakkt-agent");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status =
            Command::new(cargo).args(["build", "-p", "pakkt-agent", "--bin", "pakkt-agent"]).status().expect("cargo");
        assert!(status.success(), "building pakkt-agent failed");
    }
    path
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
    let dir = target.join("panel-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

struct Browser {
    client: Client,
    origin: String,
    shots: PathBuf,
}

impl Browser {
    async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.origin)).await.expect("goto");
    }

    async fn find(&self, css: &str) -> Element {
        self.until(&format!("element {css}"), || async { self.client.find(Locator::Css(css)).await.ok() }).await
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }

    async fn choose(&self, css: &str, value: &str) {
        self.find(css).await.select_by_value(value).await.expect("select");
    }

    async fn submit(&self, form: &str) {
        self.find(&format!("{form} button[type=submit]")).await.click().await.expect("submit");
    }

    async fn path(&self) -> String {
        self.client.current_url().await.expect("url").path().to_owned()
    }

    /// Polls `probe` until it gives a value (30 s at most).
    async fn until<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let began = Instant::now();
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            if began.elapsed() > Duration::from_secs(30) {
                let source = self.client.source().await.unwrap_or_default();
                panic!("waited 30 s for {what}; the page:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn shot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (first_existing(CHROMIUM), first_existing(CHROMEDRIVER)) else {
        let reason = "chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)";
        assert!(std::env::var("PAKKT_REQUIRE_ALL").as_deref() != Ok("1"), "PAKKT_REQUIRE_ALL=1 but {reason}");
        println!("skipped: {reason}");
        return;
    };
    let agent_bin = agent_binary();
    let dir = tempfile::tempdir().expect("temp dir");

    let (_server, origin) = start_server(dir.path());

    let driver_port = free_port();
    let mut driver_cmd = Command::new(&chromedriver);
    driver_cmd.arg(format!("--port={driver_port}"));
    let _driver = Proc::spawn("chromedriver", driver_cmd, dir.path());
    wait_listening(driver_port, "chromedriver");

    let profile = dir.path().join("chromium-profile");
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-breakpad",
        "--disable-crash-reporter",
        "--window-size=1280,1000",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"binary": chromium.display().to_string(), "args": args}),
    );
    let client = ClientBuilder::rustls()
        .expect("WebDriver client")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a browser session");
    let b = Browser { client, origin: origin.clone(), shots: screenshots_dir() };

    // Signed out, every page leads to the sign-in form.
    b.goto("/").await;
    b.find("#signin-form").await;
    assert_eq!(b.path().await, "/signin");
    b.fill("#signin-api_key", "pakkt_pub_notAKeyOfAnyAccount0123456789").await;
    b.submit("#signin-form").await;
    let error = b.find("#signin-api_key-error").await.text().await.expect("text");
    assert!(error.contains("invalid credentials"), "{error}");
    b.shot("01-sign-in-refused").await;
    // The keyboard alone signs in: type the key, press Enter.
    b.fill("#signin-api_key", &format!("{KEY}\u{e007}")).await;
    b.find("#agent-form").await;
    assert_eq!(b.path().await, "/");
    b.shot("02-agents-empty").await;

    // A blank name is refused next to the field, and nothing is created.
    b.fill("#agent-name", "   ").await;
    b.submit("#agent-form").await;
    let error = b.find("#agent-name-error").await.text().await.expect("text");
    assert!(error.contains("must not be empty"), "{error}");
    assert!(b.client.find(Locator::Css("#agents")).await.is_err(), "no agent was created");

    b.fill("#agent-name", "VPS Paris").await;
    b.submit("#agent-form").await;
    let token = b.find("#secret").await.text().await.expect("token");
    assert!(token.starts_with("pakkt_agent_"), "{token}");
    let agent_path = b.path().await;
    assert!(agent_path.starts_with("/agents/"), "{agent_path}");
    b.shot("03-agent-added").await;

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).expect("token file");
    let mut agent_cmd = Command::new(&agent_bin);
    agent_cmd
        .args(["--server", &origin, "--token-file", &token_file.display().to_string()])
        .args(["--dataplane", "memory", "--iface", "eth0", "--report-interval", "1", "--simulate-traffic", "2000"])
        .env_remove("PAKKT_AGENT_TOKEN");
    let _agent = Proc::spawn("pakkt-agent", agent_cmd, dir.path());

    // The page refreshes itself: the status turns online without a reload.
    b.until("the agent online", || async { b.text("#agent-status").await.contains("online").then_some(()) }).await;

    // A port out of range is named next to its field; a domain refusal
    // (ICMP with ports) carries the API's message.
    b.find("#engine-form").await;
    b.client.execute("document.querySelectorAll('details').forEach(d => d.open = true)", vec![]).await.expect("open");
    b.fill("#engine-name", "FiveM UDP").await;
    b.choose("#engine-protocol", "17").await;
    b.fill("#engine-port_range_start", "70000").await;
    b.fill("#engine-port_range_end", "30120").await;
    b.submit("#engine-form").await;
    let error = b.find("#engine-port_range_start-error").await.text().await.expect("text");
    assert!(error.contains("0 to 65535"), "{error}");
    assert_eq!(b.text("#engine-live").await.trim(), "No engine rule.");
    b.shot("04-validation").await;

    b.fill("#engine-port_range_start", "30120").await;
    b.choose("#engine-rule_type", "1").await;
    b.fill("#engine-max_pps", "500").await;
    b.submit("#engine-form").await;
    b.find("#engine-rules").await;
    b.until("the rule loaded", || async { b.text("#engine-rules td.status").await.contains("loaded").then_some(()) })
        .await;
    b.shot("05-agent-rule-loaded").await;
    // The same page on a phone-sized screen.
    b.client.set_window_size(390, 844).await.expect("phone size");
    b.shot("05-agent-on-a-phone").await;
    b.client.set_window_size(1280, 1000).await.expect("laptop size");

    // Traffic: the simulated packets show on the chart within seconds.
    b.goto(&format!("{agent_path}/traffic")).await;
    b.find("#chart-all").await;
    b.until("traffic on the chart", || async {
        let chart = b.client.find(Locator::Css("#chart-all")).await.ok()?;
        let passed: f64 = chart.attr("data-passed").await.ok()??.parse().ok()?;
        (passed > 0.0).then_some(())
    })
    .await;
    b.find("#chart-port-30120").await;
    // Let the charts gather a few more reports before the picture.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let traffic = b.shot("06-traffic").await;
    if std::env::var("PAKKT_PANEL_DOCS_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/panel-traffic.png");
        std::fs::copy(&traffic, &docs).expect("copy to docs");
        println!("screenshot copied to {}", docs.display());
    }
    b.goto(&format!("{agent_path}/traffic?window=24h")).await;
    b.find("#chart-all").await;
    assert_eq!(b.text("nav.windows a[aria-current=page]").await, "24 h");

    // Keys: a new key is shown once, then revoked.
    b.find("a[href='/keys']").await.click().await.expect("keys");
    b.find("#key-form").await;
    b.submit("#key-form").await;
    let new_key = b.find("#secret").await.text().await.expect("key");
    assert!(new_key.starts_with("pakkt_pub_"), "{new_key}");
    b.shot("07-keys").await;
    let rows = b.client.find_all(Locator::Css("#keys tbody tr")).await.expect("rows");
    assert_eq!(rows.len(), 2);
    b.goto("/keys").await;
    assert!(b.client.find(Locator::Css("#secret")).await.is_err(), "a key is shown once");
    b.find("#keys tbody tr:last-child button.danger").await.click().await.expect("revoke");
    b.until("the key revoked", || async {
        let rows = b.client.find_all(Locator::Css("#keys tbody tr")).await.ok()?;
        (rows.len() == 1).then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    let status = http.get(format!("{origin}/api/v1/agents")).header("X-API-Key", &new_key).send().await.expect("api");
    assert_eq!(status.status().as_u16(), 401, "the revoked key is refused by the API");

    // Sign out: the session is gone.
    b.find("#signout").await.click().await.expect("sign out");
    b.find("#signin-form").await;
    b.shot("08-signed-out").await;
    b.goto(&agent_path).await;
    b.find("#signin-form").await;
    assert_eq!(b.path().await, "/signin");

    b.client.close().await.expect("close the browser");
}

/// A plain HTTP client of the panel (no browser): the cookie and CSRF
/// token handled by hand, redirects not followed.
struct Plain {
    http: reqwest::Client,
    origin: String,
    cookie: String,
}

impl Plain {
    async fn post(&self, path: &str, body: &str, origin: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.origin))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &self.cookie)
            .body(body.to_owned());
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().await.expect("POST")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.origin)).header("cookie", &self.cookie).send().await.expect("GET")
    }

    async fn api(&self, path: &str) -> serde_json::Value {
        let response =
            self.http.get(format!("{}/api/v1{path}", self.origin)).header("X-API-Key", KEY).send().await.expect("API");
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.expect("JSON")
    }

    async fn agent_count(&self) -> usize {
        self.api("/agents").await.as_array().map_or(0, Vec::len)
    }
}

fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    html[start..].split('"').next().expect("token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_session_token_or_from_another_site_change_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, origin) = start_server(dir.path());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

    // The API is as it was: its gate, its JSON errors.
    let response = http.get(format!("{origin}/api/v1/agents")).send().await.expect("API");
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.text().await.expect("body").contains(r#""error":"unauthorized""#));

    let signed_out = http.get(format!("{origin}/keys")).send().await.expect("GET");
    assert_eq!(signed_out.status().as_u16(), 303);
    assert_eq!(signed_out.headers()["location"], "/signin");

    let response = http
        .post(format!("{origin}/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("api_key={KEY}"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status().as_u16(), 303);
    let set_cookie = response.headers()["set-cookie"].to_str().expect("cookie").to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = set_cookie.split(';').next().expect("pair").to_owned();
    let panel = Plain { http, origin: origin.clone(), cookie };

    let home = panel.get("/").await;
    assert_eq!(home.status().as_u16(), 200);
    assert!(home.headers()["content-security-policy"].to_str().expect("csp").contains("frame-ancestors 'none'"));
    let csrf = csrf_of(&home.text().await.expect("body"));

    let no_token = panel.post("/agents", "name=Sneaky", None).await;
    assert_eq!(no_token.status().as_u16(), 403);
    let wrong_token = panel.post("/agents", "name=Sneaky&csrf=0000", None).await;
    assert_eq!(wrong_token.status().as_u16(), 403);
    let cross_site = panel.post("/agents", &format!("name=Sneaky&csrf={csrf}"), Some("http://evil.example")).await;
    assert_eq!(cross_site.status().as_u16(), 403);
    assert_eq!(panel.agent_count().await, 0, "nothing was created");

    let created = panel.post("/agents", &format!("name=VPS+Paris&csrf={csrf}"), Some(&origin)).await;
    assert_eq!(created.status().as_u16(), 303);
    // The new agent's token is a one-time notice: a HEAD request leaves it
    // for the page that shows it, and that page renews the session cookie.
    let shown_at = created.headers()["location"].to_str().expect("location").to_owned();
    let head =
        panel.http.head(format!("{origin}{shown_at}")).header("cookie", &panel.cookie).send().await.expect("HEAD");
    assert_eq!(head.status().as_u16(), 200);
    let page = panel.get(&shown_at).await;
    let renewed = page.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(renewed.starts_with(&panel.cookie) && renewed.contains("Max-Age=43200"), "renewed: {renewed:?}");
    assert!(page.text().await.expect("body").contains("pakkt_agent_"), "the token is shown once");
    assert!(!panel.get(&shown_at).await.text().await.expect("body").contains("pakkt_agent_"), "and only once");
    let agents = panel.api("/agents").await;
    assert_eq!(panel.agent_count().await, 1, "the panel's agent is the API's");
    let id = agents[0]["id"].as_str().expect("id").to_owned();

    // Bad input: a page with the message, never a panic, nothing created.
    let not_text = panel
        .post(&format!("/agents/{id}/engine-rules"), &format!("csrf={csrf}&protocol=%FF%FE&port_range_start=1"), None)
        .await;
    assert_eq!(not_text.status().as_u16(), 400, "invalid UTF-8 is refused, as the API refuses it");
    assert!(not_text.text().await.expect("body").contains("not UTF-8"));
    let garbage = panel
        .post(&format!("/agents/{id}/engine-rules"), &format!("csrf={csrf}&protocol=x&port_range_start=-1"), None)
        .await;
    assert_eq!(garbage.status().as_u16(), 422);
    let text = garbage.text().await.expect("body");
    assert!(text.contains("must be a whole number from 0 to 65535"), "{text}");
    let not_connected = panel
        .post(
            &format!("/agents/{id}/engine-rules"),
            &format!("csrf={csrf}&name=r&protocol=17&port_range_start=1&port_range_end=1&rule_type=0"),
            None,
        )
        .await;
    assert_eq!(not_connected.status().as_u16(), 422, "the API's status for the same refusal");
    assert!(not_connected.text().await.expect("body").contains("Agent not yet connected"));
    assert_eq!(panel.api(&format!("/agents/{id}/programs")).await, serde_json::json!([]));
    assert_eq!(panel.post("/agents/not-an-id/delete", &format!("csrf={csrf}"), None).await.status().as_u16(), 404);

    // IP lists: the core's message by the field; a good entry is the API's.
    let host_bits = panel
        .post(
            &format!("/agents/{id}/ip-list"),
            &format!("csrf={csrf}&list_type=whitelist&ip_address=10.0.0.1%2F8"),
            None,
        )
        .await;
    assert_eq!(host_bits.status().as_u16(), 422);
    let text = host_bits.text().await.expect("body");
    assert!(text.contains(r#"id="ip-ip_address-error""#) && text.contains("host bits set"), "{text}");
    let added = panel
        .post(
            &format!("/agents/{id}/ip-list"),
            &format!("csrf={csrf}&list_type=blacklist&ip_address=203.0.113.42&reason=flood"),
            None,
        )
        .await;
    assert_eq!(added.status().as_u16(), 303);
    let entries = panel.api(&format!("/agents/{id}/ip-list")).await;
    assert_eq!(entries[0]["ip_address"], "203.0.113.42");
    assert_eq!(entries[0]["status"], "pending_add");
    let again = panel
        .post(
            &format!("/agents/{id}/ip-list"),
            &format!("csrf={csrf}&list_type=blacklist&ip_address=203.0.113.42"),
            None,
        )
        .await;
    assert_eq!(again.status().as_u16(), 409, "the API's conflict");

    // Firewall: limit needs a rate; system rules cannot be deleted.
    let no_rate = panel
        .post(
            &format!("/agents/{id}/firewall"),
            &format!("csrf={csrf}&name=ssh&protocol=tcp&port_start=22&action=limit&limit_unit=minute"),
            None,
        )
        .await;
    assert_eq!(no_rate.status().as_u16(), 422);
    let text = no_rate.text().await.expect("body");
    assert!(text.contains(r#"id="fw-limit_rate-error""#) && text.contains("is required for action limit"), "{text}");
    let before = panel.api(&format!("/agents/{id}/firewall")).await;
    let system = before.as_array().and_then(|r| r.iter().find(|r| r["is_system"] == true)).expect("a system rule");
    let refused = panel
        .post(
            &format!("/agents/{id}/firewall/{}/delete", system["id"].as_str().expect("id")),
            &format!("csrf={csrf}"),
            None,
        )
        .await;
    assert_eq!(refused.status().as_u16(), 422);
    assert!(refused.text().await.expect("body").contains("System rules cannot be deleted"));

    // An nftables template needs no connected agent.
    let applied = panel
        .post(&format!("/agents/{id}/templates"), &format!("csrf={csrf}&template_id=tpl_nft_ssh_bruteforce"), None)
        .await;
    assert_eq!(applied.status().as_u16(), 303);
    let after = panel.api(&format!("/agents/{id}/firewall")).await;
    assert_eq!(after.as_array().map(Vec::len), before.as_array().map(|r| r.len() + 1));
    let unknown =
        panel.post(&format!("/agents/{id}/templates"), &format!("csrf={csrf}&template_id=tpl_nope"), None).await;
    assert_eq!(unknown.status().as_u16(), 404);
    assert!(unknown.text().await.expect("body").contains("Template not found"));
    let huge = format!("csrf={csrf}&name={}", "x".repeat(20_000));
    assert_eq!(panel.post("/agents", &huge, None).await.status().as_u16(), 413);
    assert_eq!(panel.agent_count().await, 1);

    let out = panel.post("/signout", &format!("csrf={csrf}"), None).await;
    assert_eq!(out.status().as_u16(), 303);
    assert!(out.headers()["set-cookie"].to_str().expect("cookie").contains("Max-Age=0"));
    assert_eq!(panel.get("/").await.status().as_u16(), 303, "the session is gone");
}

#[test]
fn over_tls_the_session_cookie_is_secure() {
    let dir = tempfile::tempdir().expect("temp dir");
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
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pakkt-server"));
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--database",
        &dir.path().join("pakkt.db").display().to_string(),
    ])
    .arg("--tls-cert")
    .arg(&cert)
    .arg("--tls-key")
    .arg(&key)
    .env("PAKKT_BOOTSTRAP_API_KEY", KEY);
    let _server = Proc::spawn("pakkt-server", cmd, dir.path());
    wait_listening(port, "pakkt-server");
    // As a browser signs in over TLS: HTTP/2 (the host is in the request's
    // authority, there is no Host header) with an Origin header.
    let origin = format!("https://127.0.0.1:{port}");
    let out = Command::new("curl")
        .args(["-sS", "--http2", "-o", "/dev/null", "-D", "-", "--cacert"])
        .arg(&cert)
        .args(["-H", &format!("Origin: {origin}")])
        .args(["-d", &format!("api_key={KEY}"), &format!("{origin}/signin")])
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(headers.starts_with("http/2 303"), "signed in over HTTP/2: {headers}");
    let cookie = headers.lines().find(|l| l.starts_with("set-cookie:")).unwrap_or_else(|| panic!("{headers}"));
    assert!(
        cookie.contains("httponly") && cookie.contains("samesite=strict") && cookie.contains("; secure"),
        "{cookie}"
    );
}

/// A signed-in browser can change no more than its key may: forms count
/// against the key's limit (page loads do not), and the one over it gets
/// 429 with Retry-After and changes nothing.
#[tokio::test]
async fn panel_forms_count_against_the_key_s_rate_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, origin) = start_server_with(dir.path(), &["--rate-limit", "3"]);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let signed_in = http
        .post(format!("{origin}/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("api_key={KEY}"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status().as_u16(), 303, "the sign-in is the key's first request");
    let cookie =
        signed_in.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
    let home = || http.get(format!("{origin}/")).header("cookie", &cookie).send();
    let page = home().await.expect("home").text().await.expect("html");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("csrf").to_owned();
    let add = |name: &str| {
        http.post(format!("{origin}/agents"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &cookie)
            .body(format!("csrf={csrf}&name={name}"))
            .send()
    };
    assert_eq!(add("a").await.expect("POST").status().as_u16(), 303);
    for _ in 0..5 {
        assert_eq!(home().await.expect("home").status().as_u16(), 200, "page loads are not counted");
    }
    assert_eq!(add("b").await.expect("POST").status().as_u16(), 303, "the key's third request");
    let refused = add("c").await.expect("POST");
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let agents: serde_json::Value = http
        .get(format!("{origin}/api/v1/agents"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .expect("API")
        .json()
        .await
        .expect("json");
    assert_eq!(agents["error"], "rate_limited", "the API shares the limit");
}

/// Signs in on the panel at `origin` with `key`; the cookie's `name=value`.
async fn sign_in(http: &reqwest::Client, origin: &str, key: &str) -> String {
    let response = http
        .post(format!("{origin}/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("api_key={key}"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status().as_u16(), 303, "signed in");
    response.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned()
}

/// A fresh PostgreSQL schema on the test server, as a database URL; `None`
/// (with the reason printed) without a server, unless `PAKKT_REQUIRE_ALL=1`.
async fn postgres_database() -> Option<String> {
    use sqlx::Connection as _;
    let base = match std::env::var("PAKKT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let reason = "PAKKT_TEST_POSTGRES_URL is not set (./scripts/test-all starts a server and sets it)";
            assert!(std::env::var("PAKKT_REQUIRE_ALL").as_deref() != Ok("1"), "PostgreSQL required: {reason}");
            eprintln!("skipped: {reason}");
            return None;
        }
    };
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect to test postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&mut conn).await.expect("schema");
    conn.close().await.expect("close");
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// Two server processes on one database, as replicas behind a load
/// balancer without sticky routing: a session started on one is served by
/// the other, a one-time notice left by one is shown once by the other,
/// revoking a key on one ends its sessions on both, and signing out on one
/// signs out on both. The database holds neither the token nor the notice's
/// secret in the clear.
async fn replicas_share_panel_sessions(dir: &Path, database: &str) {
    let (_a, origin_a) = start_server_on(dir, database, "pakkt-server-a", &[]);
    let (_b, origin_b) = start_server_on(dir, database, "pakkt-server-b", &[]);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let cookie = sign_in(&http, &origin_a, KEY).await;
    let on_a = Plain { http: http.clone(), origin: origin_a.clone(), cookie: cookie.clone() };
    let on_b = Plain { http: http.clone(), origin: origin_b.clone(), cookie: cookie.clone() };

    let home = on_b.get("/").await;
    assert_eq!(home.status().as_u16(), 200, "the other replica serves the session");
    let csrf = csrf_of(&home.text().await.expect("body"));
    let created = on_b.post("/agents", &format!("name=Shared&csrf={csrf}"), None).await;
    assert_eq!(created.status().as_u16(), 303);
    let shown_at = created.headers()["location"].to_str().expect("location").to_owned();
    let page = on_a.get(&shown_at).await.text().await.expect("body");
    let secret = page
        .split(r#"id="secret">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the token made on B is shown on A")
        .to_owned();
    assert!(secret.starts_with("pakkt_agent_"), "{secret}");
    assert!(!on_b.get(&shown_at).await.text().await.expect("body").contains("pakkt_agent_"), "and only once");

    // What the database holds: the token's digest, never the token; the
    // notice sealed, never the secret.
    let token = cookie.split_once('=').map(|(_, v)| v.to_owned()).expect("token");
    let csrf_page = on_a.get("/keys").await.text().await.expect("body");
    let second = on_a.post("/keys", &format!("csrf={}", csrf_of(&csrf_page)), None).await;
    assert_eq!(second.status().as_u16(), 303);
    let rows = panel_rows(database).await;
    assert!(!rows.is_empty());
    let hash = pakkt_core::account::SecretHash::of(&token);
    assert!(rows.iter().any(|(token_hash, _)| token_hash == hash.as_bytes()), "found by the token's SHA-256");
    for (token_hash, notice) in &rows {
        assert!(!contains(token_hash, token.as_bytes()));
        let notice = notice.as_deref().unwrap_or_default();
        assert!(!contains(notice, b"pakkt_pub_") && !contains(notice, b"Key "), "the notice is sealed");
    }
    let keys_page = on_b.get("/keys").await.text().await.expect("body");
    let new_key = keys_page
        .split(r#"id="secret">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the key made on A is shown on B")
        .to_owned();

    // Revoking a key on B ends its sessions on A too.
    let with_new =
        Plain { http: http.clone(), origin: origin_a.clone(), cookie: sign_in(&http, &origin_a, &new_key).await };
    assert_eq!(with_new.get("/").await.status().as_u16(), 200);
    let listing = on_b.get("/keys").await.text().await.expect("body");
    let new_id = listing
        .split("data-key=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|id| !listing.contains(&format!("{id}</code> <span class=\"tag\">this session")))
        .expect("the new key's ID")
        .to_owned();
    let revoked = on_b.post(&format!("/keys/{new_id}/revoke"), &format!("csrf={}", csrf_of(&listing)), None).await;
    assert_eq!(revoked.status().as_u16(), 303);
    assert_eq!(with_new.get("/").await.status().as_u16(), 303, "its session ended on the other replica");
    assert_eq!(on_a.get("/").await.status().as_u16(), 200, "another key's session stays");

    // Signing out on A signs out on B.
    let out = on_a.post("/signout", &format!("csrf={csrf}"), None).await;
    assert_eq!(out.status().as_u16(), 303);
    assert_eq!(on_b.get("/").await.status().as_u16(), 303, "signed out on both");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every row of the panel's sessions table: token hash and notice.
async fn panel_rows(database: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    use sqlx::Connection as _;
    let sql = "SELECT token_hash, notice FROM panel_sessions";
    if database.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(database).await.expect("postgres");
        sqlx::query_as(sql).fetch_all(&mut conn).await.expect("rows")
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{database}")).await.expect("sqlite");
        sqlx::query_as(sql).fetch_all(&mut conn).await.expect("rows")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_sqlite_file_share_panel_sessions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("shared.db").display().to_string();
    replicas_share_panel_sessions(dir.path(), &database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_database_share_panel_sessions() {
    let Some(database) = postgres_database().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    replicas_share_panel_sessions(dir.path(), &database).await;
}

/// Rows of a table in a page's HTML: the count of `marker`.
fn rows(html: &str, marker: &str) -> usize {
    html.matches(marker).count()
}

/// The `href` of the link with this ID in a page (written before its
/// `id`), unescaped.
fn link(html: &str, id: &str) -> Option<String> {
    let (before, _) = html.split_once(&format!(r#"id="{id}""#))?;
    let href = before.rsplit("href=\"").next()?.split('"').next()?;
    Some(href.replace("&amp;", "&"))
}

/// Long lists come in pages of 100 with links to the next and the first
/// page, and the live refresh of a page renders that page only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lists_show_one_page_with_a_next_link_that_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, origin) = start_server_with(dir.path(), &["--rate-limit", "100000"]);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let api = |path: &str| http.post(format!("{origin}/api/v1{path}")).header("X-API-Key", KEY);
    let mut agent = String::new();
    for n in 0..101 {
        let created: serde_json::Value = api("/agents")
            .json(&serde_json::json!({"name": format!("agent {n:03}")}))
            .send()
            .await
            .expect("agent")
            .json()
            .await
            .expect("json");
        if n == 0 {
            agent = created["id"].as_str().expect("id").to_owned();
        }
    }
    for n in 0..250u32 {
        let entry =
            serde_json::json!({"list_type": "blacklist", "ip_address": format!("198.51.{}.{}", n / 200, n % 200)});
        let response = api(&format!("/agents/{agent}/ip-list")).json(&entry).send().await.expect("entry");
        assert_eq!(response.status().as_u16(), 201);
    }
    let panel = Plain { http: http.clone(), origin: origin.clone(), cookie: sign_in(&http, &origin, KEY).await };

    let home = panel.get("/").await.text().await.expect("body");
    assert_eq!(rows(&home, "data-agent="), 100, "one page of agents");
    assert!(link(&home, "agents-pages-first").is_none(), "on the first page");
    let next = link(&home, "agents-pages-next").expect("a next link");
    let second = panel.get(&next).await.text().await.expect("body");
    assert_eq!(rows(&second, "data-agent="), 1, "the 101st agent");
    assert!(second.contains("agent 100") && !second.contains("agent 099"));
    assert_eq!(link(&second, "agents-pages-first").as_deref(), Some("/"));
    assert!(link(&second, "agents-pages-next").is_none());

    let page = panel.get(&format!("/agents/{agent}")).await.text().await.expect("body");
    assert_eq!(rows(&page, "data-entry="), 100, "one page of the IP list");
    assert!(page.contains("198.51.0.0") && !page.contains("198.51.0.100<"));
    let mut at = link(&page, "ip-pages-next").expect("a next link");
    assert!(at.starts_with(&format!("/agents/{agent}?ip_after=")), "{at}");
    let mut seen = 100;
    loop {
        let page = panel.get(&at).await.text().await.expect("body");
        let refreshed = panel
            .http
            .get(format!("{origin}{at}"))
            .header("cookie", &panel.cookie)
            .header("x-pakkt-refresh", "1")
            .send()
            .await
            .expect("refresh")
            .text()
            .await
            .expect("body");
        assert_eq!(rows(&refreshed, "data-entry="), rows(&page, "data-entry="), "the refresh renders the page shown");
        assert_eq!(link(&page, "ip-pages-first").as_deref(), Some(format!("/agents/{agent}").as_str()));
        seen += rows(&page, "data-entry=");
        match link(&page, "ip-pages-next") {
            Some(next) => at = next,
            None => break,
        }
    }
    assert_eq!(seen, 250, "every entry once, over three pages");
    assert_eq!(rows(&page, "data-firewall="), 3, "short lists have no pages");
    assert!(link(&page, "fw-pages-next").is_none() && link(&page, "fw-pages-first").is_none());
}

/// Creates an agent through the API: its ID and token.
async fn create_agent(http: &reqwest::Client, origin: &str) -> (String, String) {
    let created: serde_json::Value = http
        .post(format!("{origin}/api/v1/agents"))
        .header("X-API-Key", KEY)
        .json(&serde_json::json!({"name": "game-1"}))
        .send()
        .await
        .expect("agent")
        .json()
        .await
        .expect("json");
    let field = |name: &str| created[name].as_str().expect(name).to_owned();
    (field("id"), field("token"))
}

/// The agent page lists the last hour's drops by reason, in words: only
/// the reasons with drops, and the drops an agent reported without a
/// reason on a line of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_page_lists_drops_by_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, origin) = start_server(dir.path());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let (agent, token) = create_agent(&http, &origin).await;
    let panel = Plain { http: http.clone(), origin: origin.clone(), cookie: sign_in(&http, &origin, KEY).await };

    let page = panel.get(&format!("/agents/{agent}")).await.text().await.expect("body");
    assert!(page.contains("No packet dropped over the last 1 h."), "nothing reported yet");
    assert!(!page.contains(r#"id="drops-by-reason""#));

    // Port 0's drops come without reasons, as an older agent sends them.
    let report = serde_json::json!({"report_id": "r1", "ports": [
        {"port": 30120, "packets_passed": 10, "packets_dropped": 12, "bytes_passed": 640, "bytes_dropped": 768,
         "dropped_by_reason": {"rate": 9, "out_of_state": 3}},
        {"port": 0, "packets_passed": 0, "packets_dropped": 2, "bytes_passed": 0, "bytes_dropped": 128}
    ]});
    let stored = http
        .post(format!("{origin}/api/v1/agent/metrics"))
        .bearer_auth(&token)
        .json(&report)
        .send()
        .await
        .expect("report");
    assert_eq!(stored.status().as_u16(), 200);

    let page = panel.get(&format!("/agents/{agent}")).await.text().await.expect("body");
    let table = page
        .split_once(r#"id="drops-by-reason""#)
        .and_then(|(_, rest)| rest.split_once("</table>"))
        .map(|(table, _)| table.to_owned())
        .expect("the table of drops by reason");
    assert!(table.contains(r#"<tr data-reason="rate"><td>Rate limit</td><td>9</td></tr>"#), "{table}");
    assert!(table.contains(r#"<tr data-reason="out_of_state"><td>Out-of-state TCP</td><td>3</td></tr>"#), "{table}");
    assert!(table.contains(r#"<tr data-reason="none"><td>No reason reported</td><td>2</td></tr>"#), "{table}");
    assert_eq!(rows(&table, "data-reason="), 3, "only the reasons with drops: {table}");
}

/// The agent page says how the engine is attached, XDP mode and egress,
/// once the agent has told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_page_shows_how_the_engine_is_attached() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, origin) = start_server(dir.path());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let (agent, token) = create_agent(&http, &origin).await;
    let panel = Plain { http: http.clone(), origin: origin.clone(), cookie: sign_in(&http, &origin, KEY).await };
    let dataplane = |page: &str| {
        page.split_once(r#"id="agent-dataplane">"#)
            .and_then(|(_, rest)| rest.split_once("</dd>"))
            .map(|(label, _)| label.to_owned())
    };

    let page = panel.get(&format!("/agents/{agent}")).await.text().await.expect("body");
    assert_eq!(dataplane(&page).as_deref(), Some("—"), "nothing reported before the first sync");

    let host = serde_json::json!({"hostname": "debian", "iface": "ens3", "mode": "native", "egress": "tcx"});
    let sync = format!("{origin}/api/v1/agent/sync?wait=0");
    let synced = http.post(sync).bearer_auth(&token).json(&host).send().await.expect("sync");
    assert_eq!(synced.status().as_u16(), 200);
    let page = panel.get(&format!("/agents/{agent}")).await.text().await.expect("body");
    assert_eq!(dataplane(&page).as_deref(), Some("XDP native · egress tcx"));
}
