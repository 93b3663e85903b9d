//! Sync capacity: how many agents PAKKT's server holds, on SQLite or on
//! PostgreSQL with several server replicas.
//!
//! N simulated agents (created directly in the database, not through the
//! rate-limited API) run in this one process, each as the real agent does:
//! a long poll (`wait=10`, see [`HOLD_SECS`]) held at all times, and a
//! metrics report every 10 s. Meanwhile changes are made through the API to
//! random agents, ten a second, alternately adding a blacklist entry and
//! deleting one added earlier; both bump the agent's revision. Measured,
//! after a ramp-up: the latency of metrics reports and of immediate syncs
//! (the first sync of each agent, and the re-sync after a change), which
//! excludes the time a poll is held; the wake-up latency from an API change
//! to the held poll's answer; the syncs and reports answered per second; and
//! every failed request, counted by kind (operation and HTTP status or
//! transport failure) with examples of what came back.
//!
//! ## Database and replicas
//! - `PAKKT_BENCH_DATABASE` unset: one server on a fresh SQLite file in a
//!   temporary directory.
//! - `PAKKT_BENCH_DATABASE=postgres://USER@HOST:PORT/DB`: the bench creates
//!   a fresh database `pakkt_bench_<ulid>` on that server (connecting to DB
//!   to do so), creates the agents in it, and drops it at the end with
//!   `WITH (FORCE)`, also after a failure or Ctrl-C. It also samples
//!   `pg_stat_database.xact_commit` and the `agents` table's `n_tup_upd` at
//!   both ends of the measured window and prints commits/s (every
//!   statement outside a transaction counts, reads included), write
//!   transactions/s (transaction IDs handed out, `pg_current_xact_id()`)
//!   and agent-row updates/s: how the servers batch the agents'
//!   `last_seen_at` writes.
//!   These statistics reach PostgreSQL's views about a second late.
//! - `PAKKT_BENCH_REPLICAS=K` (default 1; more than 1 only with PostgreSQL)
//!   starts K servers on free loopback ports, sharing the database. Agent i
//!   syncs and reports through replica i mod K; each change goes through a
//!   random replica, so with K > 1 most changes wake a poll held by another
//!   replica. Wake latency is shown for those cross-replica wakes on their
//!   own as well as overall.
//!
//! Each server opens at most 8 PostgreSQL connections, plus one to listen
//! for other replicas' changes; the bench opens 16 while it creates agents,
//! then one to sample statistics. The servers log warnings to files in a
//! temporary directory; the last lines of each are printed at the end.
//!
//! Other variables: `PAKKT_BENCH_AGENTS` (default 10000) and
//! `PAKKT_BENCH_SECONDS` (the measured window, default 60).
//!
//! File descriptors: each agent holds one connection, on both sides, so the
//! bench raises RLIMIT_NOFILE for itself and the servers it starts (to
//! 4·N + 1024 with CAP_SYS_RESOURCE, else the soft limit to the hard one),
//! as a deployment would in its unit file (`LimitNOFILE=`). Each replica
//! holds N/K of the connections, the bench all N.
//!
//! ```text
//! cargo build --release -p pakkt-server
//! PAKKT_BENCH_AGENTS=10000 cargo bench -p pakkt-agent --bench sync_capacity
//! PAKKT_BENCH_DATABASE=postgres://postgres@127.0.0.1:55432/postgres PAKKT_BENCH_REPLICAS=2 \
//!     PAKKT_BENCH_AGENTS=10000 cargo bench -p pakkt-agent --bench sync_capacity
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pakkt_core::account::{AccountName, AgentToken, ApiKey, ApiKeyRecord};
use pakkt_core::agent::{Agent, HostInfo};
use pakkt_core::firewall::{FirewallRule, SystemRole};
use pakkt_core::id::{AgentId, ApiKeyId, IpEntryId};
use pakkt_core::store::prelude::*;
use pakkt_core::sync::{DesiredState, SyncReport};
use pakkt_core::wire::CreatedIpEntry;
use pakkt_store::StoreOptions;
use rand::Rng;
use serde_json::json;
use sqlx::Connection;
use tokio::sync::Mutex;

/// How long each simulated poll may be held. Real agents ask for 25 s and
/// report metrics on a second connection; here each agent keeps to one
/// connection (metrics go out between polls) and polls every 10 s, so that
/// 10,000 agents fit in 20,000 file descriptors per process while the
/// server answers at least as many syncs and reports as real agents cause.
const HOLD_SECS: u64 = 10;

/// Agents created at once in PostgreSQL (SQLite takes them one by one: it
/// has one writer anyway).
const POSTGRES_CREATORS: usize = 16;

/// Distinct examples kept for each kind of error.
const EXAMPLES_PER_KIND: usize = 3;

/// What the environment asks for.
#[derive(Debug)]
struct Config {
    agents: usize,
    measure: Duration,
    /// The PostgreSQL server to create the bench's database on; `None` for
    /// SQLite.
    postgres: Option<String>,
    replicas: usize,
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let agents = usize::try_from(number("PAKKT_BENCH_AGENTS", 10_000)?).map_err(|e| e.to_string())?;
        let measure = Duration::from_secs(number("PAKKT_BENCH_SECONDS", 60)?);
        let replicas = usize::try_from(number("PAKKT_BENCH_REPLICAS", 1)?).map_err(|e| e.to_string())?;
        let postgres = std::env::var("PAKKT_BENCH_DATABASE").ok().filter(|v| !v.is_empty());
        if agents == 0 || measure.is_zero() || replicas == 0 {
            return Err("PAKKT_BENCH_AGENTS, PAKKT_BENCH_SECONDS and PAKKT_BENCH_REPLICAS must be at least 1".into());
        }
        if let Some(url) = &postgres
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("PAKKT_BENCH_DATABASE must be a postgres:// URL (leave it unset for SQLite)".into());
        }
        if replicas > 1 && postgres.is_none() {
            return Err(format!(
                "PAKKT_BENCH_REPLICAS={replicas} needs a database the replicas share: \
                 set PAKKT_BENCH_DATABASE=postgres://… (SQLite serves one replica)"
            ));
        }
        Ok(Self { agents, measure, postgres, replicas })
    }
}

/// The number in variable `name`, or `default` when it is unset.
fn number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|_| format!("{name}={v:?} is not a whole number")),
        _ => Ok(default),
    }
}

/// A server process, killed on drop.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bench's own PostgreSQL database.
struct ScratchDatabase {
    /// The URL the user gave, to connect to for `CREATE` and `DROP`.
    admin_url: String,
    name: String,
}

impl ScratchDatabase {
    /// Creates a fresh database next to the one `admin_url` names; returns
    /// it and the URL that uses it.
    async fn create(admin_url: &str) -> Result<(Self, String), String> {
        let name = format!("pakkt_bench_{}", ulid::Ulid::new().to_string().to_lowercase());
        let url = with_database(admin_url, &name).ok_or("cannot read PAKKT_BENCH_DATABASE as a URL")?;
        let mut conn = sqlx::PgConnection::connect(admin_url).await.map_err(|e| format!("connect: {e}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        let _ = conn.close().await;
        Ok((Self { admin_url: admin_url.to_owned(), name }, url))
    }

    /// Drops the database, closing whatever is still connected to it. Runs
    /// on a thread of its own, so that it works from `Drop`, inside or
    /// outside the runtime, and while unwinding.
    fn drop_now(&self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.map_err(|e| format!("connect: {e}"))?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok(())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the dropping thread panicked".into()));
        // Not `println!`: this may run while unwinding, with stdout gone.
        let _ = match outcome {
            Ok(()) => writeln!(std::io::stdout(), "dropped database {}", self.name),
            Err(e) => writeln!(std::io::stderr(), "could not drop database {} (drop it by hand): {e}", self.name),
        };
    }
}

/// `url` with its database replaced by `name` (user, host, port and query
/// kept).
fn with_database(url: &str, name: &str) -> Option<String> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let (path, query) = rest.split_once('?').map_or((rest, None), |(p, q)| (p, Some(q)));
    let authority = path.split_once('/').map_or(path, |(a, _)| a);
    if authority.is_empty() {
        return None;
    }
    let mut out = format!("{}{authority}/{name}", &url[..scheme_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// What the bench must undo however it ends: the servers (stopped first),
/// then the PostgreSQL database, then the temporary directory.
#[derive(Default)]
struct Cleanup {
    servers: Vec<Kill>,
    database: Option<ScratchDatabase>,
    dir: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.servers.clear();
        if let Some(database) = self.database.take() {
            database.drop_now();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A failed request: what failed how, and a snippet of what came back.
struct Failure {
    kind: String,
    detail: String,
}

/// Every failure, by kind.
#[derive(Default)]
struct Errors(BTreeMap<String, Tally>);

#[derive(Default)]
struct Tally {
    count: u64,
    examples: Vec<String>,
}

impl Errors {
    fn add(&mut self, failure: Failure) {
        let tally = self.0.entry(failure.kind).or_default();
        tally.count += 1;
        if tally.examples.len() < EXAMPLES_PER_KIND && !tally.examples.contains(&failure.detail) {
            tally.examples.push(failure.detail);
        }
    }

    fn total(&self) -> u64 {
        self.0.values().map(|t| t.count).sum()
    }
}

/// The response if it is a success; else the failure, with the status and
/// the start of the body, or the transport error.
async fn checked(op: &str, result: reqwest::Result<reqwest::Response>) -> Result<reqwest::Response, Failure> {
    match result {
        Ok(response) if response.status().is_success() => Ok(response),
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_else(|e| format!("(body unreadable: {e})"));
            Err(Failure { kind: format!("{op}: HTTP {status}"), detail: snippet(&body) })
        }
        Err(e) => Err(transport(op, &e)),
    }
}

/// A request that got no usable answer, by how it failed.
fn transport(op: &str, e: &reqwest::Error) -> Failure {
    let how = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_decode() {
        "undecodable answer"
    } else if e.is_body() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "transport"
    };
    let mut detail = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        detail.push_str(": ");
        detail.push_str(&c.to_string());
        cause = c.source();
    }
    Failure { kind: format!("{op}: {how}"), detail: snippet(&detail) }
}

/// The first 160 characters of `text`, on one line.
fn snippet(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(160).collect()
}

#[derive(Default)]
struct Samples {
    immediate: Vec<Duration>,
    metrics: Vec<Duration>,
    /// Wakes of polls held by the replica the change went through.
    wake_same: Vec<Duration>,
    /// Wakes of polls held by another replica.
    wake_cross: Vec<Duration>,
    /// Syncs answered (held or not) while measuring.
    syncs: u64,
    errors: Errors,
}

/// A change made through the API, not yet seen by its agent.
#[derive(Clone, Copy)]
struct Change {
    at: Instant,
    replica: usize,
}

/// What the agents and the API client share.
#[derive(Default)]
struct Shared {
    samples: Mutex<Samples>,
    measuring: AtomicBool,
    stop: AtomicBool,
    pending: Mutex<HashMap<AgentId, Change>>,
}

/// Raises RLIMIT_NOFILE to `n` (hard and soft; needs CAP_SYS_RESOURCE), or
/// else the soft limit to the hard one. Returns the soft limit in force.
fn raise_fd_limit(n: u64) -> u64 {
    let wanted = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: getrlimit/setrlimit read or fill the struct we pass; no
    // memory is shared.
    #[allow(unsafe_code)]
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const wanted) != 0 {
            let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut current);
            current.rlim_cur = current.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const current);
        }
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut now);
        now.rlim_cur
    }
}

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("bench binary");
    let path = exe.parent().and_then(Path::parent).expect("target dir").join("pakkt-server");
    assert!(path.exists(), "run `cargo build --release -p pakkt-server` first");
    path
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn per_second(count: u64, window: Duration) -> f64 {
    count as f64 / window.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sync_capacity: {e}");
            std::process::exit(2);
        }
    };
    let mut cleanup = Cleanup::default();
    tokio::select! {
        () = run(&config, &mut cleanup) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted: stopping the servers"),
    }
    drop(cleanup);
}

/// One linear script: setup, load, report.
async fn run(config: &Config, cleanup: &mut Cleanup) {
    let fds = raise_fd_limit(config.agents as u64 * 4 + 1024);
    println!("open-file limit in force: {fds}");

    let dir = std::env::temp_dir().join(format!("pakkt-capacity-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    cleanup.dir = Some(dir.clone());
    let database_url = if let Some(admin_url) = &config.postgres {
        let (database, url) = ScratchDatabase::create(admin_url).await.expect("bench database on PostgreSQL");
        println!("database: PostgreSQL, {} (dropped at the end), {} replica(s)", database.name, config.replicas);
        cleanup.database = Some(database);
        url
    } else {
        println!("database: SQLite, one replica");
        dir.join("bench.db").display().to_string()
    };
    let key = ApiKey::generate();
    let began = Instant::now();
    let tokens = create_agents(&database_url, config, &key).await;
    println!("created {} agents in {:.1?}", tokens.len(), began.elapsed());

    let bases = start_replicas(&database_url, config.replicas, &dir, cleanup).await;
    let client = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(90)).build().expect("client");
    let shared = Arc::new(Shared::default());
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, (id, token)) in tokens.iter().cloned().enumerate() {
        let replica = i % bases.len();
        let base = bases[replica].clone();
        tasks.push(tokio::spawn(agent(i, id, token, replica, base, client.clone(), Arc::clone(&shared))));
    }

    // Ramp-up, then measure while changing random agents through the API.
    let ramp = Duration::from_millis(config.agents as u64 / 5) + Duration::from_secs(15);
    tokio::time::sleep(ramp).await;
    let mut stats = match &config.postgres {
        Some(_) => PgStats::connect(&database_url).await,
        None => None,
    };
    let before = match &mut stats {
        Some(stats) => stats.counters().await,
        None => None,
    };
    shared.measuring.store(true, Ordering::Relaxed);
    let measured_from = Instant::now();
    let changes = make_changes(config.measure, &tokens, &bases, &key, &client, &shared).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let window = measured_from.elapsed();
    let after = match &mut stats {
        Some(stats) => stats.counters().await,
        None => None,
    };
    if let Some(stats) = stats {
        stats.close().await;
    }
    shared.stop.store(true, Ordering::Relaxed);

    println!(
        "agents: {}, replicas: {}, measured for {window:.1?} after a {ramp:?} ramp-up, {} API changes \
         ({} entries added, {} deleted)",
        config.agents,
        bases.len(),
        changes.attempted,
        changes.created,
        changes.deleted
    );
    let mut samples = shared.samples.lock().await;
    report(&mut samples, bases.len(), window);
    if let (Some(before), Some(after)) = (before, after) {
        let commits = after.commits.saturating_sub(before.commits);
        let updates = after.agent_updates.saturating_sub(before.agent_updates);
        let writes = after.write_xids.saturating_sub(before.write_xids);
        println!(
            "postgres: {:.0} commits/s ({commits} in the window, reads included), {:.0} write transactions/s \
             ({writes}), {:.0} agent-row updates/s ({updates})",
            per_second(commits, window),
            per_second(writes, window),
            per_second(updates, window)
        );
    }
    println!("errors: {}", samples.errors.total());
    for (kind, tally) in &samples.errors.0 {
        println!("  {kind}: {}", tally.count);
        for example in &tally.examples {
            println!("    e.g. {example}");
        }
    }
    drop(samples);
    for task in tasks {
        task.abort();
    }
    print_logs(&dir, bases.len());
}

/// Prints the latencies and rates measured over `window` with `replicas`
/// replicas.
fn report(s: &mut Samples, replicas: usize, window: Duration) {
    let mut wake: Vec<Duration> = s.wake_same.iter().chain(&s.wake_cross).copied().collect();
    wake.sort();
    s.immediate.sort();
    s.metrics.sort();
    s.wake_same.sort();
    s.wake_cross.sort();
    let mut figures =
        vec![("immediate syncs", &s.immediate), ("metrics reports", &s.metrics), ("change → held poll answers", &wake)];
    if replicas > 1 {
        figures.push(("  of which the same replica", &s.wake_same));
        figures.push(("  of which across replicas", &s.wake_cross));
    }
    for (name, list) in figures {
        println!(
            "{name}: {} samples, p50 {:.1?}, p99 {:.1?}, max {:.1?}",
            list.len(),
            pct(list, 50),
            pct(list, 99),
            list.last().copied().unwrap_or_default()
        );
    }
    println!(
        "throughput: {:.0} syncs/s, {:.0} metrics reports/s",
        per_second(s.syncs, window),
        per_second(s.metrics.len() as u64, window)
    );
}

/// Creates the account, its API key `key` and the agents directly in the
/// database; returns each agent's ID and token, in order of creation.
async fn create_agents(url: &str, config: &Config, key: &ApiKey) -> Vec<(AgentId, String)> {
    let (options, creators) = match config.postgres {
        Some(_) => {
            (StoreOptions { max_connections: POSTGRES_CREATORS as u32, ..StoreOptions::default() }, POSTGRES_CREATORS)
        }
        None => (StoreOptions::default(), 1),
    };
    let db = Arc::new(pakkt_store::Database::open_with(url, options).await.expect("database"));
    let now = chrono::Utc::now();
    let account = db.create_account(&"default".parse::<AccountName>().expect("name"), now).await.expect("account");
    db.insert_api_key(&ApiKeyRecord {
        id: ApiKeyId::generate(),
        account_id: account.id,
        hash: key.hash(),
        created_at: now,
    })
    .await
    .expect("key");
    let mut creating = tokio::task::JoinSet::new();
    for first in 0..creators {
        let db = Arc::clone(&db);
        let agents = config.agents;
        creating.spawn(async move {
            let mut made = Vec::new();
            for n in (first..agents).step_by(creators) {
                let agent = Agent {
                    id: AgentId::generate(),
                    account_id: account.id,
                    name: format!("sim-{n}"),
                    host: HostInfo::default(),
                    last_seen_at: None,
                    created_at: now,
                    revision: 1,
                };
                let token = AgentToken::generate();
                let system: Vec<_> = SystemRole::ALL.iter().map(|r| FirewallRule::system(agent.id, *r, now)).collect();
                db.insert_agent(&agent, &token.hash(), &system).await.expect("agent");
                made.push((n, agent.id, token.expose().to_owned()));
            }
            made
        });
    }
    let mut made: Vec<_> = creating.join_all().await.into_iter().flatten().collect();
    made.sort_unstable_by_key(|(n, _, _)| *n);
    db.close().await;
    made.into_iter().map(|(_, id, token)| (id, token)).collect()
}

/// Starts `replicas` servers on `database_url`, each on a free loopback
/// port and logging to `dir`; returns each one's API base URL once all
/// listen.
async fn start_replicas(database_url: &str, replicas: usize, dir: &Path, cleanup: &mut Cleanup) -> Vec<String> {
    // Held together, so that no two replicas get the same port.
    let listeners: Vec<TcpListener> =
        (0..replicas).map(|_| TcpListener::bind("127.0.0.1:0").expect("free port")).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("port").port()).collect();
    drop(listeners);
    let binary = server_binary();
    for (r, port) in ports.iter().enumerate() {
        let log = File::create(dir.join(format!("replica-{r}.log"))).expect("log file");
        cleanup.servers.push(Kill(
            Command::new(&binary)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env("PAKKT_DATABASE_URL", database_url)
                .env("PAKKT_RATE_LIMIT", "0")
                .env("PAKKT_LOG", "warn")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("server"),
        ));
    }
    let began = Instant::now();
    for (r, port) in ports.iter().enumerate() {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            if let Ok(Some(status)) = cleanup.servers[r].0.try_wait() {
                panic!("replica {r} exited ({status}) before listening:\n{}", log_tail(dir, r, 20));
            }
            assert!(began.elapsed() < Duration::from_secs(30), "replica {r} did not start:\n{}", log_tail(dir, r, 20));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ports.iter().map(|port| format!("http://127.0.0.1:{port}/api/v1")).collect()
}

/// The last `lines` lines of replica `r`'s log.
fn log_tail(dir: &Path, r: usize, lines: usize) -> String {
    let text = std::fs::read_to_string(dir.join(format!("replica-{r}.log"))).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What each replica logged, if anything (its last lines).
fn print_logs(dir: &Path, replicas: usize) {
    for r in 0..replicas {
        let lines = std::fs::read_to_string(dir.join(format!("replica-{r}.log"))).map_or(0, |t| t.lines().count());
        if lines > 0 {
            println!("replica {r} logged {lines} line(s), the last:\n{}", log_tail(dir, r, 5));
        }
    }
}

/// One simulated agent, syncing and reporting through `base` (replica
/// `replica`) until told to stop.
async fn agent(
    i: usize,
    id: AgentId,
    token: String,
    replica: usize,
    base: String,
    client: reqwest::Client,
    shared: Arc<Shared>,
) {
    // Spread the agents' start over the ramp-up.
    tokio::time::sleep(Duration::from_millis(i as u64 / 5)).await;
    let metrics_offset = Duration::from_millis(rand::rng().random_range(0..10_000));
    let mut next_metrics = Instant::now() + metrics_offset;
    let mut revision = 0u64;
    let mut wait = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let report = SyncReport { revision, ..SyncReport::default() };
        let sent = Instant::now();
        let answer = client
            .post(format!("{base}/agent/sync?wait={wait}"))
            .bearer_auth(&token)
            .json(&report)
            .timeout(Duration::from_mins(1))
            .send()
            .await;
        let took = sent.elapsed();
        match checked("sync", answer).await {
            Ok(response) => match response.json::<DesiredState>().await {
                Ok(desired) => {
                    let changed = desired.revision != revision;
                    if shared.measuring.load(Ordering::Relaxed) {
                        let mut s = shared.samples.lock().await;
                        s.syncs += 1;
                        if wait == 0 {
                            s.immediate.push(took);
                        }
                        if changed && let Some(change) = shared.pending.lock().await.remove(&id) {
                            let woke = change.at.elapsed();
                            if change.replica == replica {
                                s.wake_same.push(woke);
                            } else {
                                s.wake_cross.push(woke);
                            }
                        }
                    }
                    revision = desired.revision;
                    // A change answered: the next sync reports it at once.
                    wait = if changed && wait != 0 { 0 } else { HOLD_SECS };
                }
                Err(e) => shared.samples.lock().await.errors.add(transport("sync", &e)),
            },
            Err(failure) => {
                shared.samples.lock().await.errors.add(failure);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if Instant::now() >= next_metrics {
            next_metrics += Duration::from_secs(10);
            let body = json!({"report_id": ulid::Ulid::new().to_string(),
                              "ports": [{"port": 30120, "packets_passed": 1000, "packets_dropped": 10,
                                         "bytes_passed": 64000, "bytes_dropped": 640}]});
            let sent = Instant::now();
            let result = client.post(format!("{base}/agent/metrics")).bearer_auth(&token).json(&body).send().await;
            let took = sent.elapsed();
            match checked("metrics", result).await {
                Ok(_) => {
                    if shared.measuring.load(Ordering::Relaxed) {
                        shared.samples.lock().await.metrics.push(took);
                    }
                }
                Err(failure) => shared.samples.lock().await.errors.add(failure),
            }
        }
    }
}

/// How many changes the API client made.
#[derive(Default)]
struct Changes {
    attempted: u64,
    created: u64,
    deleted: u64,
}

/// Ten changes a second for `measure`, each through a random replica,
/// alternately adding a blacklist entry to a random agent and deleting an
/// entry added earlier (whichever is possible).
async fn make_changes(
    measure: Duration,
    tokens: &[(AgentId, String)],
    bases: &[String],
    key: &ApiKey,
    client: &reqwest::Client,
    shared: &Shared,
) -> Changes {
    let began = Instant::now();
    let mut changes = Changes::default();
    let mut entries: Vec<(AgentId, IpEntryId)> = Vec::new();
    let mut adds = 0u64;
    while began.elapsed() < measure {
        let replica = rand::rng().random_range(0..bases.len());
        let base = &bases[replica];
        let delete = changes.attempted % 2 == 1 && !entries.is_empty();
        let (id, outcome) = if delete {
            let (id, entry) = entries.swap_remove(rand::rng().random_range(0..entries.len()));
            shared.pending.lock().await.insert(id, Change { at: Instant::now(), replica });
            let result = client
                .delete(format!("{base}/agents/{id}/ip-list/{entry}"))
                .header("X-API-Key", key.expose())
                .send()
                .await;
            let outcome = checked("delete entry", result).await.map(|_| changes.deleted += 1);
            (id, outcome)
        } else {
            let (id, _) = &tokens[rand::rng().random_range(0..tokens.len())];
            let address = format!("198.51.{}.{}", adds / 250 % 250, adds % 250 + 1);
            adds += 1;
            shared.pending.lock().await.insert(*id, Change { at: Instant::now(), replica });
            let result = client
                .post(format!("{base}/agents/{id}/ip-list"))
                .header("X-API-Key", key.expose())
                .json(&json!({"list_type": "blacklist", "ip_address": address}))
                .send()
                .await;
            let outcome = match checked("add entry", result).await {
                Ok(response) => match response.json::<CreatedIpEntry>().await {
                    Ok(created) => {
                        entries.push((*id, created.id));
                        changes.created += 1;
                        Ok(())
                    }
                    // Added, though: the agent's revision moved.
                    Err(e) => Err(transport("add entry", &e)),
                },
                Err(failure) => Err(failure),
            };
            (*id, outcome)
        };
        changes.attempted += 1;
        if let Err(failure) = outcome {
            // A change that failed wakes no one.
            if !failure.kind.ends_with("undecodable answer") {
                shared.pending.lock().await.remove(&id);
            }
            shared.samples.lock().await.errors.add(failure);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    changes
}

/// PostgreSQL's counters for the bench's database.
#[derive(Clone, Copy)]
struct PgCounters {
    /// Transactions committed (`pg_stat_database.xact_commit`).
    commits: u64,
    /// Rows of `agents` updated (`pg_stat_user_tables.n_tup_upd`).
    agent_updates: u64,
    /// Transaction IDs handed out (`pg_current_xact_id()`): only a
    /// transaction that writes takes one, so this counts write
    /// transactions (of the whole server, this bench's own sample included).
    write_xids: u64,
}

/// A connection to the bench's database that reads its statistics.
struct PgStats(sqlx::PgConnection);

impl PgStats {
    /// Connects, or says why not and returns `None`.
    async fn connect(url: &str) -> Option<Self> {
        match sqlx::PgConnection::connect(url).await {
            Ok(conn) => Some(Self(conn)),
            Err(e) => {
                eprintln!("no PostgreSQL statistics: {e}");
                None
            }
        }
    }

    /// The counters so far, or `None` (with a printed reason).
    async fn counters(&mut self) -> Option<PgCounters> {
        let commits =
            sqlx::query_scalar::<_, i64>("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
                .fetch_one(&mut self.0)
                .await;
        let updates = sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(SUM(n_tup_upd), 0)::bigint FROM pg_stat_user_tables WHERE relname = 'agents'",
        )
        .fetch_one(&mut self.0)
        .await;
        let xids =
            sqlx::query_scalar::<_, i64>("SELECT pg_current_xact_id()::text::bigint").fetch_one(&mut self.0).await;
        match (commits, updates, xids) {
            (Ok(commits), Ok(updates), Ok(xids)) => Some(PgCounters {
                commits: u64::try_from(commits).unwrap_or_default(),
                agent_updates: u64::try_from(updates).unwrap_or_default(),
                write_xids: u64::try_from(xids).unwrap_or_default(),
            }),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                eprintln!("no PostgreSQL statistics: {e}");
                None
            }
        }
    }

    async fn close(self) {
        let _ = self.0.close().await;
    }
}
