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
//! This file is the script (setup, load, report); the simulated agents,
//! the API changes, the replicas, the samples and the PostgreSQL database
//! each have a module.
//!
//! ```text
//! cargo build --release -p pakkt-server
//! PAKKT_BENCH_AGENTS=10000 cargo bench -p pakkt-benches --bench sync_capacity
//! PAKKT_BENCH_DATABASE=postgres://postgres@127.0.0.1:55432/postgres PAKKT_BENCH_REPLICAS=2 \
//!     PAKKT_BENCH_AGENTS=10000 cargo bench -p pakkt-benches --bench sync_capacity
//! ```

mod agents;
mod changes;
mod config;
mod failures;
mod postgres;
mod replicas;
mod samples;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pakkt_benches::process::Kill;
use pakkt_core::account::ApiKey;

use crate::agents::{agent, create_agents};
use crate::changes::make_changes;
use crate::config::Config;
use crate::postgres::{PgStats, ScratchDatabase};
use crate::replicas::{print_logs, start_replicas};
use crate::samples::{Shared, per_second, report};

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
