//! Store benchmark: metrics ingestion rate and 24 h summary latency.
//!
//! One agent with 256 active ports reports every minute for 48 hours
//! (737,280 per-port bucket rows, each added to the 1m, 5m and 1h tables),
//! then the 24 h summary is queried repeatedly.
//!
//! ```text
//! cargo bench -p pakkt-store --bench store                      # SQLite
//! PAKKT_BENCH_POSTGRES_URL=postgres://… cargo bench -p pakkt-store --bench store   # and PostgreSQL
//! ```

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use pakkt_core::account::AgentToken;
use pakkt_core::agent::{Agent, HostInfo};
use pakkt_core::id::AgentId;
use pakkt_core::metrics::{Counters, Interval, MetricsReport, PortSample};
use pakkt_core::store::prelude::*;
use pakkt_core::verdict::DropCounts;
use pakkt_store::Database;

const PORTS: u16 = 256;
const MINUTES: i64 = 48 * 60;
const SUMMARY_RUNS: usize = 50;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("pakkt-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sqlite = Database::open(&dir.join("bench.db").display().to_string()).await.expect("sqlite");
    run("SQLite", &sqlite).await;
    sqlite.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    match std::env::var("PAKKT_BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let pg = Database::open(&url).await.expect("postgres");
            run("PostgreSQL", &pg).await;
        }
        _ => println!("PostgreSQL: skipped (set PAKKT_BENCH_POSTGRES_URL to an empty database)"),
    }
}

async fn run(name: &str, db: &Database) {
    let account = db
        .create_account(
            &format!("bench-{}", ulid::Ulid::new().to_string().to_lowercase()).parse().expect("name"),
            Utc::now(),
        )
        .await
        .expect("account");
    let agent = Agent {
        id: AgentId::generate(),
        account_id: account.id,
        name: "bench".into(),
        host: HostInfo::default(),
        last_seen_at: None,
        created_at: Utc::now(),
        revision: 1,
    };
    db.insert_agent(&agent, &AgentToken::generate().hash(), &[], u32::MAX).await.expect("agent");

    let now = Interval::Minute.bucket_of(Utc::now());
    let start: DateTime<Utc> = now - Duration::minutes(MINUTES);
    let began = Instant::now();
    for minute in 0..MINUTES {
        let ports = (1..=PORTS)
            .map(|port| PortSample {
                port,
                counters: Counters {
                    packets_passed: 1000 + u64::from(port),
                    packets_dropped: u64::from(port % 7),
                    bytes_passed: 640_000,
                    bytes_dropped: 4_480,
                    dropped_by_reason: DropCounts { rate: u64::from(port % 7), ..DropCounts::default() },
                },
            })
            .collect();
        let report = MetricsReport::new(format!("m{minute}"), ports);
        db.ingest_metrics(agent.id, &report, start + Duration::minutes(minute)).await.expect("ingest");
    }
    let took = began.elapsed();
    let rows = u64::try_from(MINUTES).expect("minutes") * u64::from(PORTS);
    #[allow(clippy::cast_precision_loss)]
    let rate = rows as f64 / took.as_secs_f64();
    println!(
        "{name}: ingested {rows} bucket rows ({MINUTES} reports of {PORTS} ports) in {took:.2?}: {rate:.0} rows/s"
    );

    let mut times: Vec<StdDuration> = Vec::with_capacity(SUMMARY_RUNS);
    let to = now + Duration::minutes(1);
    let from = to - Duration::hours(24);
    let mut ports_seen = 0;
    for _ in 0..SUMMARY_RUNS {
        let t = Instant::now();
        let per_port = db.metrics_by_port(agent.id, from, to).await.expect("summary");
        let summary = pakkt_core::metrics::MetricsSummary::from_ports(&per_port);
        times.push(t.elapsed());
        ports_seen = per_port.len();
        assert_eq!(summary.top_ports.len(), 10);
    }
    times.sort();
    let median = times[times.len() / 2];
    let p95 = times[times.len() * 95 / 100];
    println!("{name}: 24 h summary over {ports_seen} ports: median {median:.2?}, p95 {p95:.2?} ({SUMMARY_RUNS} runs)");
}
