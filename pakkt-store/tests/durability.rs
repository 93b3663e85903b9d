//! What is written stays written: across a reopen, across a crash in the
//! middle of an operation, and against a database from a newer PAKKT.

mod common;

use chrono::{Duration, Utc};
use common::{TempDir, postgres_schema, postgres_url};
use pakkt_core::account::{AccountName, AgentToken, ApiKey, ApiKeyRecord};
use pakkt_core::agent::{Agent, HostInfo};
use pakkt_core::firewall::{FirewallRule, SystemRole};
use pakkt_core::id::{AgentId, ApiKeyId};
use pakkt_core::ip_list::{EntrySpec, ListType};
use pakkt_core::metrics::{Counters, MetricsReport, PortSample};
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::store::prelude::*;
use pakkt_core::verdict::DropCounts;
use pakkt_store::{Database, OpenError};

struct Written {
    agent: Agent,
    account: AccountName,
    key: ApiKey,
    token: AgentToken,
}

async fn write_everything(db: &Database) -> Written {
    let now = Utc::now();
    let name: AccountName = "acme".parse().expect("name");
    let account = db.create_account(&name, now).await.expect("account");
    let key = ApiKey::generate();
    db.insert_api_key(
        &ApiKeyRecord { id: ApiKeyId::generate(), account_id: account.id, hash: key.hash(), created_at: now },
        u32::MAX,
    )
    .await
    .expect("key");
    let agent = Agent {
        id: AgentId::generate(),
        account_id: account.id,
        name: "VPS Paris".into(),
        host: HostInfo::default(),
        last_seen_at: None,
        created_at: now,
        revision: 1,
    };
    let token = AgentToken::generate();
    let system: Vec<_> = SystemRole::ALL.iter().map(|r| FirewallRule::system(agent.id, *r, now)).collect();
    db.insert_agent(&agent, &token.hash(), &system, u32::MAX).await.expect("agent");
    db.record_sync(agent.id, &HostInfo { iface: Some("ens3".into()), ..HostInfo::default() }, now).await.expect("sync");
    let spec = RuleSpec::new(
        Protocol::Udp,
        30120,
        30130,
        RuleType::RateLimit,
        RateLimits { max_pps: 5000, ..RateLimits::default() },
    )
    .expect("spec");
    db.create_engine_rule(agent.id, "FiveM Shield", &spec, now).await.expect("rule");
    let entry = EntrySpec::new(ListType::Blacklist, "203.0.113.42", Some("flood"), Some(now + Duration::hours(1)), now)
        .expect("entry");
    db.create_ip_entry(agent.id, &entry, now, u32::MAX).await.expect("entry");
    let sample = PortSample {
        port: 30120,
        counters: Counters {
            packets_passed: 10,
            packets_dropped: 2,
            bytes_passed: 640,
            bytes_dropped: 128,
            dropped_by_reason: DropCounts { rate: 1, out_of_state: 1, ..DropCounts::default() },
        },
    };
    db.ingest_metrics(agent.id, &MetricsReport::new("r1", vec![sample]), now).await.expect("metrics");
    Written { agent, account: name, key, token }
}

async fn everything_is_there(db: &Database, w: &Written) {
    let now = Utc::now();
    let (_, account) = db.key_by_hash(&w.key.hash()).await.expect("key lookup").expect("key survived");
    assert_eq!(account.name, w.account);
    let agent = db.agent_by_token(&w.token.hash()).await.expect("token lookup").expect("agent survived");
    assert_eq!(agent.host.iface.as_deref(), Some("ens3"));
    assert_eq!(agent.revision, 3, "two changes after creation");
    assert_eq!(db.list_engine_rules(w.agent.id).await.expect("rules").len(), 1);
    assert_eq!(db.list_ip_entries(w.agent.id, None, now).await.expect("entries").len(), 1);
    assert_eq!(db.list_firewall_rules(w.agent.id).await.expect("fw").len(), 3);
    let by_port =
        db.metrics_by_port(w.agent.id, now - Duration::hours(1), now + Duration::hours(1)).await.expect("metrics");
    assert_eq!(by_port.get(&30120).map(|c| c.packets_passed), Some(10));
    let reasons = by_port.get(&30120).map(|c| c.dropped_by_reason).unwrap_or_default();
    assert_eq!((reasons.rate, reasons.out_of_state, reasons.total()), (1, 1, 2));
}

#[tokio::test]
async fn sqlite_keeps_everything_across_a_reopen() {
    let dir = TempDir::new();
    let path = dir.db("pakkt.db");
    let db = Database::open(&path).await.expect("create");
    let written = write_everything(&db).await;
    db.close().await;
    drop(db);
    assert!(std::path::Path::new(&path).exists(), "the file is created on first start");
    let reopened = Database::open(&path).await.expect("reopen");
    everything_is_there(&reopened, &written).await;
}

#[tokio::test]
async fn postgres_keeps_everything_across_a_reopen() {
    let Some(base) = postgres_url() else { return };
    let url = postgres_schema(&base).await;
    let db = Database::open(&url).await.expect("create");
    let written = write_everything(&db).await;
    db.close().await;
    drop(db);
    let reopened = Database::open(&url).await.expect("reopen");
    everything_is_there(&reopened, &written).await;
}

/// A failure between the writes of one operation (here the agent row is
/// written, then its system rules) leaves none of them.
#[tokio::test]
async fn a_failure_between_two_writes_leaves_no_half_state() {
    let dir = TempDir::new();
    let path = dir.db("pakkt.db");
    let db = Database::open(&path).await.expect("create");
    let now = Utc::now();
    let account = db.create_account(&"acme".parse().expect("name"), now).await.expect("account");
    // Make the last system rule's insert fail, as a crash there would.
    let mut conn =
        <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{path}")).await.expect("raw");
    sqlx::query(
        "CREATE TRIGGER fail_control_plane BEFORE INSERT ON firewall_rules \
         WHEN NEW.system_role = 'control_plane' BEGIN SELECT RAISE(ABORT, 'simulated crash'); END",
    )
    .execute(&mut conn)
    .await
    .expect("trigger");
    let agent = Agent {
        id: AgentId::generate(),
        account_id: account.id,
        name: "a".into(),
        host: HostInfo::default(),
        last_seen_at: None,
        created_at: now,
        revision: 1,
    };
    let system: Vec<_> = SystemRole::ALL.iter().map(|r| FirewallRule::system(agent.id, *r, now)).collect();
    let token = AgentToken::generate();
    assert!(db.insert_agent(&agent, &token.hash(), &system, u32::MAX).await.is_err());
    assert!(db.get_agent(account.id, agent.id).await.expect("get").is_none(), "no agent row");
    assert!(db.list_firewall_rules(agent.id).await.expect("fw").is_empty(), "no system rule either");
    assert!(db.agent_by_token(&token.hash()).await.expect("token").is_none());
}

/// A process killed at a random moment while ingesting metrics leaves
/// every report either wholly stored (in all three resolutions) or not at
/// all.
#[tokio::test]
async fn a_killed_writer_leaves_consistent_metrics() {
    let dir = TempDir::new();
    let path = dir.db("pakkt.db");
    let db = Database::open(&path).await.expect("create");
    let account = db.create_account(&"acme".parse().expect("name"), Utc::now()).await.expect("account");
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
    db.close().await;

    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child_ingests_until_killed", "--nocapture", "--test-threads=1"])
        .env("PAKKT_CRASH_DB", &path)
        .env("PAKKT_CRASH_AGENT", agent.id.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the writer");
    // Let it write for a while, then kill it without warning.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let db = Database::open(&path).await.expect("reopen after the crash");
    let (reports,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM metric_reports").fetch_one(&raw_pool(&path).await).await.expect("count");
    assert!(reports > 0, "the writer got some reports in before it was killed");
    let from = Utc::now() - Duration::days(2);
    let to = Utc::now() + Duration::days(1);
    for interval in [
        pakkt_core::metrics::Interval::Minute,
        pakkt_core::metrics::Interval::FiveMinutes,
        pakkt_core::metrics::Interval::Hour,
    ] {
        let rows = db.metrics_history(agent.id, from, to, interval, None).await.expect("history");
        for port in 1..=16u16 {
            let packets: u64 = rows.iter().filter(|r| r.port == port).map(|r| r.counters.packets_passed).sum();
            assert_eq!(
                packets,
                u64::try_from(reports).expect("count"),
                "{interval:?} port {port}: one packet per stored report"
            );
        }
    }
}

async fn raw_pool(path: &str) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{path}")).await.expect("raw pool")
}

/// The writer half of `a_killed_writer_leaves_consistent_metrics`: runs only
/// when that test starts it (with `PAKKT_CRASH_DB` set), ingesting reports
/// until it is killed.
#[tokio::test]
async fn crash_child_ingests_until_killed() {
    let (Ok(path), Ok(agent)) = (std::env::var("PAKKT_CRASH_DB"), std::env::var("PAKKT_CRASH_AGENT")) else {
        return;
    };
    let db = Database::open(&path).await.expect("open");
    let agent: AgentId = agent.parse().expect("agent id");
    let ports: Vec<PortSample> = (1..=16u16)
        .map(|port| PortSample {
            port,
            counters: Counters { packets_passed: 1, bytes_passed: 64, ..Counters::default() },
        })
        .collect();
    for n in 0.. {
        let report = MetricsReport::new(format!("r{n}"), ports.clone());
        db.ingest_metrics(agent, &report, Utc::now()).await.expect("ingest");
    }
}

#[tokio::test]
async fn a_database_from_a_newer_pakkt_is_refused() {
    let dir = TempDir::new();
    let path = dir.db("pakkt.db");
    Database::open(&path).await.expect("create").close().await;
    let pool = raw_pool(&path).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (99999, 'from the future', CURRENT_TIMESTAMP, 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .expect("fake a newer migration");
    pool.close().await;
    match Database::open(&path).await {
        Err(OpenError::SchemaTooNew { found: 99999, supported }) => assert!(supported >= 1),
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
    let message = Database::open(&path).await.expect_err("refused").to_string();
    assert!(message.contains("newer than this PAKKT supports"), "{message}");
}

#[tokio::test]
async fn unsupported_urls_are_refused_clearly() {
    let err = Database::open("mysql://localhost/pakkt").await.expect_err("mysql");
    assert!(matches!(err, OpenError::UnsupportedUrl(_)));
    assert!(err.to_string().contains("postgres://"), "{err}");
}
