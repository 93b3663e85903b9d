//! Metrics storage beyond the conformance suite: rollups answer exactly
//! like the minute data they came from, and retention prunes.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use common::{TempDir, postgres, postgres_url, sqlite};
use pakkt_core::account::AgentToken;
use pakkt_core::agent::{Agent, HostInfo};
use pakkt_core::id::AgentId;
use pakkt_core::metrics::{Counters, Interval, MetricsReport, PortSample};
use pakkt_core::store::prelude::*;
use pakkt_core::verdict::DropCounts;
use pakkt_store::{Database, Retention, StoreOptions};

async fn agent_on(db: &Database) -> AgentId {
    let name = "acme".parse().expect("name");
    let account = match db.account_by_name(&name).await.expect("account") {
        Some(account) => account,
        None => db.create_account(&name, Utc::now()).await.expect("account"),
    };
    let agent = Agent {
        id: AgentId::generate(),
        account_id: account.id,
        name: "a".into(),
        host: HostInfo::default(),
        last_seen_at: None,
        created_at: Utc::now(),
        revision: 1,
    };
    db.insert_agent(&agent, &AgentToken::generate().hash(), &[], u32::MAX).await.expect("agent");
    agent.id
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("time")
}

/// Reports every 7 minutes for 5 hours on three ports, then checks that
/// sums over windows that cut hours at odd minutes equal the minute data.
async fn rollups_match_minutes(db: &Database) {
    let agent = agent_on(db).await;
    let start = at("2026-03-16T09:00:00Z");
    let mut expected: BTreeMap<DateTime<Utc>, BTreeMap<u16, u64>> = BTreeMap::new();
    for n in 0..43i64 {
        let when = start + Duration::minutes(n * 7) + Duration::seconds(13);
        let ports: Vec<PortSample> = [22u16, 80, 30120]
            .iter()
            .map(|p| PortSample {
                port: *p,
                counters: Counters {
                    packets_passed: u64::from(*p) + u64::try_from(n).expect("n"),
                    packets_dropped: 1,
                    bytes_passed: 100,
                    bytes_dropped: 60,
                    dropped_by_reason: DropCounts { unverified: 1, ..DropCounts::default() },
                },
            })
            .collect();
        for s in &ports {
            *expected.entry(Interval::Minute.bucket_of(when)).or_default().entry(s.port).or_default() +=
                s.counters.packets_passed;
        }
        db.ingest_metrics(agent, &MetricsReport::new(format!("r{n}"), ports), when).await.expect("ingest");
    }
    for (from, to) in [
        ("2026-03-16T09:00:00Z", "2026-03-16T14:00:00Z"),
        ("2026-03-16T09:17:00Z", "2026-03-16T13:43:00Z"),
        ("2026-03-16T10:59:00Z", "2026-03-16T11:01:00Z"),
        ("2026-03-16T10:00:00Z", "2026-03-16T12:00:00Z"),
        ("2026-03-16T10:30:00Z", "2026-03-16T10:31:00Z"),
    ] {
        let (from, to) = (at(from), at(to));
        let got = db.metrics_by_port(agent, from, to).await.expect("by port");
        let mut want: BTreeMap<u16, u64> = BTreeMap::new();
        for (_, ports) in expected.range(from..to) {
            for (port, packets) in ports {
                *want.entry(*port).or_default() += packets;
            }
        }
        let got: BTreeMap<u16, u64> = got.into_iter().map(|(p, c)| (p, c.packets_passed)).collect();
        assert_eq!(got, want, "window {from}..{to}");
    }
    for interval in [Interval::Minute, Interval::FiveMinutes, Interval::Hour] {
        let rows =
            db.metrics_history(agent, start, start + Duration::hours(6), interval, Some(80)).await.expect("history");
        let total: u64 = rows.iter().map(|r| r.counters.packets_passed).sum();
        let want: u64 = expected.values().filter_map(|p| p.get(&80)).sum();
        assert_eq!(total, want, "{interval:?} sums to the same");
        let unverified: u64 = rows.iter().map(|r| r.counters.dropped_by_reason.unverified).sum();
        assert_eq!(unverified, 43, "{interval:?}: one drop by reason per report");
        assert!(rows.windows(2).all(|w| w[0].bucket < w[1].bucket), "{interval:?} ordered by bucket");
        assert!(rows.iter().all(|r| interval.bucket_of(r.bucket) == r.bucket), "{interval:?} buckets aligned");
    }
}

#[tokio::test]
async fn sqlite_rollups_match_minutes() {
    let dir = TempDir::new();
    rollups_match_minutes(&sqlite(&dir).await).await;
}

#[tokio::test]
async fn postgres_rollups_match_minutes() {
    let Some(base) = postgres_url() else { return };
    rollups_match_minutes(&postgres(&base).await).await;
}

#[tokio::test]
async fn retention_prunes_each_resolution() {
    let dir = TempDir::new();
    let retention = Retention { minute: Duration::hours(2), five_minutes: Duration::hours(6), hour: Duration::days(2) };
    let db = Database::open_with(&dir.db("r.db"), StoreOptions { retention, ..StoreOptions::default() })
        .await
        .expect("open");
    let agent = agent_on(&db).await;
    let start = at("2026-03-16T00:00:00Z");
    let sample = vec![PortSample { port: 53, counters: Counters { packets_passed: 1, ..Counters::default() } }];
    db.ingest_metrics(agent, &MetricsReport::new("old", sample.clone()), start).await.expect("old");
    let later = start + Duration::hours(3);
    db.ingest_metrics(agent, &MetricsReport::new("new", sample.clone()), later).await.expect("new");
    db.prune_metrics(later).await.expect("prune");
    let count = |interval| {
        let db = &db;
        async move {
            db.metrics_history(agent, start - Duration::days(1), later + Duration::days(1), interval, None)
                .await
                .expect("history")
                .len()
        }
    };
    assert_eq!(count(Interval::Minute).await, 1, "the 3-hour-old minute bucket is gone");
    assert_eq!(count(Interval::FiveMinutes).await, 2, "five-minute buckets are kept 6 hours");
    assert_eq!(count(Interval::Hour).await, 2);
    // The old report's ID was pruned with its minute data; the new one still dedups.
    assert!(!db.ingest_metrics(agent, &MetricsReport::new("new", sample), later).await.expect("retry"));
}

/// Many agents reporting at once (their writes committed in groups): every
/// report counts exactly once, retries included, and a report for an agent
/// that does not exist fails alone.
async fn concurrent_reports_count_once(db: Database) {
    let db = std::sync::Arc::new(db);
    let mut agents = Vec::new();
    for _ in 0..10 {
        agents.push(agent_on(&db).await);
    }
    let when = at("2026-03-16T12:00:30Z");
    let mut tasks = Vec::new();
    for (a, agent) in agents.iter().copied().enumerate() {
        for n in 0..20u64 {
            let db = std::sync::Arc::clone(&db);
            tasks.push(tokio::spawn(async move {
                let sample =
                    PortSample { port: 30120, counters: Counters { packets_passed: n + 1, ..Counters::default() } };
                let report = MetricsReport::new(format!("a{a}r{n}"), vec![sample]);
                // Each report is sent twice, as an agent retrying after a timeout would.
                let (first, second) =
                    tokio::join!(db.ingest_metrics(agent, &report, when), db.ingest_metrics(agent, &report, when));
                u8::from(first.expect("stored")) + u8::from(second.expect("stored"))
            }));
        }
    }
    let ghost = db.ingest_metrics(AgentId::generate(), &MetricsReport::new("x", vec![]), when).await;
    assert!(matches!(ghost, Err(pakkt_core::store::StoreError::NotFound)), "{ghost:?}");
    for task in tasks {
        assert_eq!(task.await.expect("task"), 1, "each report ID is stored exactly once");
    }
    for agent in agents {
        let by_port =
            db.metrics_by_port(agent, when - Duration::hours(1), when + Duration::hours(1)).await.expect("sum");
        assert_eq!(by_port.get(&30120).map(|c| c.packets_passed), Some((1..=20).sum()), "agent {agent}");
        let hours = db
            .metrics_history(agent, when - Duration::hours(1), when + Duration::hours(1), Interval::Hour, None)
            .await
            .expect("hours");
        assert_eq!(hours.iter().map(|h| h.counters.packets_passed).sum::<u64>(), (1..=20).sum::<u64>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_reports_count_once() {
    let dir = TempDir::new();
    concurrent_reports_count_once(sqlite(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_reports_count_once() {
    let Some(base) = postgres_url() else { return };
    concurrent_reports_count_once(postgres(&base).await).await;
}

/// Sums saturate instead of failing: a report cannot break ingestion for
/// the reports committed with it.
async fn sums_saturate(db: Database) {
    let agent = agent_on(&db).await;
    let when = at("2026-03-16T12:00:30Z");
    let huge = Counters {
        packets_passed: u64::MAX,
        bytes_passed: u64::MAX - 1,
        dropped_by_reason: DropCounts { reflection: u64::MAX, ..DropCounts::default() },
        ..Counters::default()
    };
    for n in 0..3 {
        let report = MetricsReport::new(format!("big{n}"), vec![PortSample { port: 7, counters: huge }]);
        assert!(db.ingest_metrics(agent, &report, when).await.expect("stored"));
    }
    let by_port = db.metrics_by_port(agent, when - Duration::hours(1), when + Duration::hours(1)).await.expect("sum");
    let max = u64::try_from(i64::MAX).expect("fits");
    assert_eq!(by_port.get(&7).map(|c| (c.packets_passed, c.bytes_passed)), Some((max, max)));
    assert_eq!(by_port.get(&7).map(|c| c.dropped_by_reason.reflection), Some(max), "a reason saturates alike");
    // A second saturated minute: summing the two may not overflow the
    // database's integers (the summary and the panel would answer 500).
    let later = when + Duration::minutes(2);
    let report = MetricsReport::new("big-later", vec![PortSample { port: 7, counters: huge }]);
    assert!(db.ingest_metrics(agent, &report, later).await.expect("stored"));
    let minutes = db.metrics_by_port(agent, when - Duration::minutes(10), later + Duration::minutes(1)).await;
    let minutes = minutes.expect("a sum above the largest BIGINT");
    assert_eq!(minutes.get(&7).map(|c| c.packets_passed), Some(2 * max), "exact in u64");
    assert_eq!(minutes.get(&7).map(|c| c.dropped_by_reason.reflection), Some(2 * max), "reasons too");
    let hours = db.metrics_by_port(agent, at("2026-03-16T12:00:00Z"), at("2026-03-16T13:00:00Z")).await;
    assert_eq!(hours.expect("hour sum").get(&7).map(|c| c.packets_passed), Some(max), "the hour's bucket saturated");
}

#[tokio::test]
async fn sqlite_sums_saturate() {
    let dir = TempDir::new();
    sums_saturate(sqlite(&dir).await).await;
}

#[tokio::test]
async fn postgres_sums_saturate() {
    let Some(base) = postgres_url() else { return };
    sums_saturate(postgres(&base).await).await;
}
