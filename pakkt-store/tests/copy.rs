//! `copy_database` (what `pakkt-server migrate-to` runs) between real
//! databases: a database filled through the `Store` trait reads the same
//! after a copy to PostgreSQL, back to SQLite, or to another SQLite file;
//! a target with data is refused and left as it was; a copy that fails
//! half-way leaves the target empty.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use common::{TempDir, postgres_schema, postgres_url, sqlite};
use pakkt_core::account::{AccountName, AgentToken, ApiKey, ApiKeyRecord, SecretHash};
use pakkt_core::agent::{Agent, DataplaneMode, EgressMode, HostInfo};
use pakkt_core::firewall::{Action, FirewallFields, FirewallRule, FirewallSpec, FwProtocol, LimitUnit, SystemRole};
use pakkt_core::id::{AccountId, AgentId, ApiKeyId};
use pakkt_core::ip_list::{EntrySpec, ListType};
use pakkt_core::metrics::{Counters, Interval, MetricsReport, PortSample};
use pakkt_core::panel::{PanelSession, SessionToken};
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::store::StoreError;
use pakkt_core::store::prelude::*;
use pakkt_core::sync::{AppliedIds, FirewallCounter, ItemFailure, ItemRef, SyncReport};
use pakkt_core::testing::t0;
use pakkt_core::verdict::DropCounts;
use pakkt_store::{CopyError, Database, copied_tables, copy_database};
use sqlx::Connection;

/// What a filled database holds that only its secrets can find again.
struct Filled {
    accounts: Vec<AccountName>,
    keys: Vec<ApiKey>,
    agents: Vec<(AccountId, AgentId, AgentToken)>,
    /// Reports already stored (a retry must count once on the copy too).
    report: (AgentId, MetricsReport),
    /// A web panel session: left behind by the copy.
    session: SecretHash,
}

/// More rows than one page of the copy (1000) in the metrics tables and in
/// `metric_reports` (a two-column key), so that paging is exercised.
const PORTS: u16 = 1200;
const REPORTS: usize = 1010;

fn name(text: &str) -> AccountName {
    text.parse().expect("account name")
}

fn spec(protocol: Protocol, start: u16, end: u16, rule_type: RuleType) -> RuleSpec {
    let limits = match rule_type {
        RuleType::RateLimit => RateLimits { max_pps: 500, max_port_pps: 9000, min_pkt_size: 28, max_pkt_size: 1400 },
        _ => RateLimits::default(),
    };
    RuleSpec::new(protocol, start, end, rule_type, limits).expect("rule spec")
}

fn sample(port: u16, n: u64) -> PortSample {
    PortSample {
        port,
        counters: Counters {
            packets_passed: n,
            packets_dropped: n / 2,
            bytes_passed: n * 90,
            bytes_dropped: n * 40,
            dropped_by_reason: DropCounts { rate: n / 4, reflection: n / 2 - n / 4, ..DropCounts::default() },
        },
    }
}

async fn new_agent(db: &Database, account: AccountId, name: &str, at: DateTime<Utc>) -> (Agent, AgentToken) {
    let agent = Agent {
        id: AgentId::generate(),
        account_id: account,
        name: name.into(),
        host: HostInfo::default(),
        last_seen_at: None,
        created_at: at,
        revision: 1,
    };
    let token = AgentToken::generate();
    let system: Vec<FirewallRule> = SystemRole::ALL.iter().map(|r| FirewallRule::system(agent.id, *r, at)).collect();
    db.insert_agent(&agent, &token.hash(), &system, u32::MAX).await.expect("insert agent");
    (agent, token)
}

/// Fills `db` with one of everything, through the `Store` trait.
async fn fill(db: &Database) -> Filled {
    let now = t0();
    let acme = db.create_account(&name("acme"), now).await.expect("acme");
    let other = db.create_account(&name("other"), now + Duration::seconds(1)).await.expect("other");
    db.set_suspended(&name("other"), true).await.expect("suspend");

    let mut keys = Vec::new();
    for (account, offset) in [(acme.id, 2), (acme.id, 3), (other.id, 4)] {
        let key = ApiKey::generate();
        let record = ApiKeyRecord {
            id: ApiKeyId::generate(),
            account_id: account,
            hash: key.hash(),
            created_at: now + Duration::seconds(offset),
        };
        db.insert_api_key(&record, u32::MAX).await.expect("key");
        keys.push(key);
    }

    let (paris, paris_token) = new_agent(db, acme.id, "VPS Paris", now + Duration::seconds(5)).await;
    let (idle, idle_token) = new_agent(db, acme.id, "never connected", now + Duration::seconds(6)).await;
    let (berlin, berlin_token) = new_agent(db, other.id, "VPS Berlin", now + Duration::seconds(7)).await;
    let host = HostInfo {
        hostname: Some("debian".into()),
        iface: Some("ens3".into()),
        version: Some("0.1.0".into()),
        mode: Some(DataplaneMode::Native),
        egress: Some(EgressMode::Tcx),
    };
    db.record_sync(paris.id, &host, now + Duration::seconds(8)).await.expect("sync");

    fill_items(db, paris.id, berlin.id, &host).await;
    let wide = fill_metrics(db, paris.id, berlin.id).await;
    let session = PanelSession::new(&SessionToken::generate(), keys[0].hash(), acme.id, now);
    db.start_session(&session, 32).await.expect("panel session");
    Filled {
        accounts: vec![name("acme"), name("other")],
        keys,
        agents: vec![
            (acme.id, paris.id, paris_token),
            (acme.id, idle.id, idle_token),
            (other.id, berlin.id, berlin_token),
        ],
        report: (paris.id, wide),
        session: session.token_hash,
    }
}

/// Engine rules (loaded, failed, pending, pending unload), IP entries
/// (active, pending, with and without expiry) and firewall rules with
/// counters, moved along by one agent report.
async fn fill_items(db: &Database, paris: AgentId, berlin: AgentId, host: &HostInfo) {
    let now = t0();
    let fivem_udp = db
        .create_engine_rule(paris, "FiveM UDP", &spec(Protocol::Udp, 30120, 30120, RuleType::RateLimit), now)
        .await
        .expect("rule");
    let fivem_tcp = db
        .create_engine_rule(paris, "FiveM TCP", &spec(Protocol::Tcp, 30120, 30120, RuleType::AllowOnly), now)
        .await
        .expect("rule");
    let broken = db
        .create_engine_rule(paris, "broken", &spec(Protocol::Any, 1000, 2000, RuleType::Block), now)
        .await
        .expect("rule");
    let ssh = db
        .create_engine_rule(paris, "ssh", &spec(Protocol::Tcp, 22, 22, RuleType::AllowOnly), now)
        .await
        .expect("rule");
    db.create_engine_rule(paris, "new", &spec(Protocol::Icmp, 0, 0, RuleType::Block), now).await.expect("rule");
    db.create_engine_rule(berlin, "dns", &spec(Protocol::Udp, 53, 53, RuleType::RateLimit), now).await.expect("rule");

    // IP entries: active, pending, with and without expiry.
    let whitelisted = db
        .create_ip_entry(
            paris,
            &EntrySpec::new(ListType::Whitelist, "192.0.2.0/24", Some("office"), None, now).expect("entry"),
            now,
            u32::MAX,
        )
        .await
        .expect("entry");
    for (ip, expires) in [("198.51.100.7", Some(now + Duration::days(1))), ("2001:db8::/48", None)] {
        let entry = EntrySpec::new(ListType::Blacklist, ip, Some("flood"), expires, now).expect("entry");
        db.create_ip_entry(paris, &entry, now, u32::MAX).await.expect("entry");
    }

    // Firewall: a user rule with a limit and conntrack, beside the system rules.
    let limited = FirewallSpec::new(&FirewallFields {
        protocol: Some(FwProtocol::Udp),
        port_start: Some(27015),
        port_end: Some(27030),
        action: Some(Action::Limit),
        limit_rate: Some(50),
        limit_unit: Some(LimitUnit::Second),
        conntrack: Some("new"),
        ..FirewallFields::default()
    })
    .expect("firewall spec");
    let user = FirewallRule::user(paris, "Source engine", limited, now + Duration::seconds(9)).expect("rule");
    db.create_firewall_rule(&user, u32::MAX).await.expect("firewall rule");
    let firewall: Vec<_> = db.list_firewall_rules(paris).await.expect("firewall").iter().map(|f| f.id).collect();

    // The agent applies most of it, fails one rule, and counts traffic.
    let report = SyncReport {
        host: host.clone(),
        revision: db.desired_state(paris, now).await.expect("desired").revision,
        applied: AppliedIds {
            engine_rules: vec![fivem_udp.id, fivem_tcp.id, ssh.id],
            ip_entries: vec![whitelisted.id],
            firewall_rules: firewall.clone(),
        },
        failures: vec![ItemFailure { item: ItemRef::EngineRule(broken.id), message: "verifier said no".into() }],
        firewall_counters: vec![FirewallCounter { id: firewall[0], packets: 4821, bytes: 289_260 }],
    };
    db.apply_report(paris, &report, now + Duration::seconds(10)).await.expect("report");
    db.delete_engine_rule(paris, ssh.id).await.expect("delete: pending unload");
}

/// One wide report per agent, then many small ones a minute apart over the
/// following hours; returns the wide report.
async fn fill_metrics(db: &Database, paris: AgentId, berlin: AgentId) -> MetricsReport {
    let now = t0();
    let firewall: Vec<_> = db.list_firewall_rules(paris).await.expect("firewall").iter().map(|f| f.id).collect();
    let wide = MetricsReport::new("wide", (1..=PORTS).map(|p| sample(p, u64::from(p))).collect());
    assert!(db.ingest_metrics(paris, &wide, now + Duration::seconds(30)).await.expect("ingest"));
    for i in 0..REPORTS {
        let minutes = i64::try_from(i).expect("small");
        let mut small = MetricsReport::new(format!("r{i:05}"), vec![sample(30120, 7 + u64::from(i as u32 % 5))]);
        if i == REPORTS - 1 {
            small.firewall_counters = vec![FirewallCounter { id: firewall[3], packets: 12, bytes: 840 }];
        }
        assert!(db.ingest_metrics(paris, &small, now + Duration::minutes(minutes)).await.expect("ingest"));
    }
    assert!(db.ingest_metrics(berlin, &wide, now).await.expect("ingest"));
    wide
}

/// Everything the `Store` answers about a filled database, as text.
async fn reads(db: &Database, filled: &Filled) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |what: String, value: String| {
        assert!(out.insert(what, value).is_none());
    };
    let (from, to) = (t0() - Duration::days(1), t0() + Duration::days(30));
    for account in &filled.accounts {
        let found = db.account_by_name(account).await.expect("account").expect("present");
        put(format!("account {account}"), format!("{found:?}"));
        put(format!("keys of {account}"), format!("{:?}", db.list_api_keys(found.id).await.expect("keys")));
        put(format!("agents of {account}"), format!("{:?}", db.list_agents(found.id).await.expect("agents")));
    }
    for (i, key) in filled.keys.iter().enumerate() {
        put(format!("key {i}"), format!("{:?}", db.key_by_hash(&key.hash()).await.expect("key by hash")));
    }
    for (account, agent, token) in &filled.agents {
        put(format!("{agent} get"), format!("{:?}", db.get_agent(*account, *agent).await.expect("get")));
        put(format!("{agent} by token"), format!("{:?}", db.agent_by_token(&token.hash()).await.expect("token")));
        put(format!("{agent} rules"), format!("{:?}", db.list_engine_rules(*agent).await.expect("rules")));
        put(format!("{agent} entries"), format!("{:?}", db.list_ip_entries(*agent, None, t0()).await.expect("ip")));
        put(format!("{agent} firewall"), format!("{:?}", db.list_firewall_rules(*agent).await.expect("fw")));
        put(format!("{agent} desired"), format!("{:?}", db.desired_state(*agent, t0()).await.expect("desired")));
        put(format!("{agent} expiry"), format!("{:?}", db.next_expiry(*agent, t0()).await.expect("expiry")));
        put(format!("{agent} by port"), format!("{:?}", db.metrics_by_port(*agent, from, to).await.expect("by port")));
        for interval in [Interval::Minute, Interval::FiveMinutes, Interval::Hour] {
            for port in [None, Some(30120)] {
                let history = db.metrics_history(*agent, from, to, interval, port).await.expect("history");
                put(format!("{agent} history {interval:?} {port:?}"), format!("{history:?}"));
            }
        }
    }
    out
}

/// `to` answers every read as `from` does, and still knows which reports
/// it has counted and which slots are held.
async fn assert_same(from: &Database, to: &Database, filled: &Filled) {
    let (want, got) = (reads(from, filled).await, reads(to, filled).await);
    assert_eq!(want.len(), got.len());
    for (what, value) in &want {
        assert_eq!(got.get(what), Some(value), "{what}");
    }
    // Spot checks that the comparison above compared something.
    let (_, paris, _) = &filled.agents[0];
    let rules = to.list_engine_rules(*paris).await.expect("rules");
    assert_eq!(rules.len(), 5);
    let history = to.metrics_history(*paris, t0(), t0() + Duration::days(1), Interval::Minute, None).await.expect("h");
    assert!(history.len() > 2000, "{}", history.len());

    let (agent, report) = &filled.report;
    assert!(!to.ingest_metrics(*agent, report, t0() + Duration::days(2)).await.expect("retry"), "counted once");
    let taken = to.create_engine_rule(*paris, "again", &spec(Protocol::Udp, 30120, 30120, RuleType::Block), t0()).await;
    assert!(matches!(taken, Err(StoreError::Duplicate { .. })), "{taken:?}");
    assert!(to.session(&filled.session).await.expect("session").is_none(), "panel sessions are left behind");
}

/// Copies `from` (filled by [`fill`]) into `to` and checks the report's counts.
async fn copy_and_count(from: &Database, to: &Database) {
    let report = copy_database(from, to).await.expect("copy");
    assert_eq!(report.tables.iter().map(|t| t.table).collect::<Vec<_>>(), copied_tables().collect::<Vec<_>>());
    let counts: Vec<(&str, u64)> = report.tables.iter().map(|t| (t.table, t.rows)).collect();
    assert_eq!(
        counts,
        vec![
            ("accounts", 2),
            ("api_keys", 3),
            ("agents", 3),
            ("engine_rules", 6),
            ("ip_entries", 3),
            ("firewall_rules", 10),
            ("metric_reports", 2 + REPORTS as u64),
            // Two wide reports, and one small report a minute from t0 on.
            ("metrics_1m", 2 * u64::from(PORTS) + REPORTS as u64),
            ("metrics_5m", 2 * u64::from(PORTS) + REPORTS.div_ceil(5) as u64),
            ("metrics_1h", 2 * u64::from(PORTS) + ((REPORTS - 1) / 60 + 1) as u64),
        ]
    );
    assert_eq!(report.rows("_sqlx_migrations"), None);
}

async fn open_postgres(base: &str) -> Database {
    Database::open(&postgres_schema(base).await).await.expect("open postgres")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_sqlite_keeps_everything() {
    let dir = TempDir::new();
    let (from, to) = (sqlite(&dir).await, sqlite(&dir).await);
    let filled = fill(&from).await;
    copy_and_count(&from, &to).await;
    assert_same(&from, &to, &filled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_keeps_everything() {
    let Some(base) = postgres_url() else { return };
    let dir = TempDir::new();
    let from = sqlite(&dir).await;
    let to = open_postgres(&base).await;
    let filled = fill(&from).await;
    copy_and_count(&from, &to).await;
    assert_same(&from, &to, &filled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_back_to_sqlite_keeps_everything() {
    let Some(base) = postgres_url() else { return };
    let dir = TempDir::new();
    let first = sqlite(&dir).await;
    let filled = fill(&first).await;
    let middle = open_postgres(&base).await;
    copy_database(&first, &middle).await.expect("to postgres");
    let last = sqlite(&dir).await;
    copy_and_count(&middle, &last).await;
    assert_same(&first, &last, &filled).await;
}

/// A target with any row is refused before anything is written.
async fn refuses_a_target_with_data(to: &Database) {
    let dir = TempDir::new();
    let from = sqlite(&dir).await;
    let filled = fill(&from).await;
    let there = to.create_account(&name("acme"), t0()).await.expect("account on the target");
    let before = reads_of_account(to, there.id).await;
    let err = copy_database(&from, to).await.expect_err("refused");
    assert!(matches!(err, CopyError::TargetNotEmpty { table: "accounts" }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("not empty") && message.contains("accounts"), "{message}");
    assert_eq!(reads_of_account(to, there.id).await, before, "the target is unchanged");
    for account in &filled.accounts[1..] {
        assert_eq!(to.account_by_name(account).await.expect("account"), None, "nothing copied");
    }
}

async fn reads_of_account(db: &Database, account: AccountId) -> String {
    let agents = db.list_agents(account).await.expect("agents");
    let keys = db.list_api_keys(account).await.expect("keys");
    format!("{:?} {agents:?} {keys:?}", db.account_by_name(&name("acme")).await.expect("account"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_target_with_data_is_refused() {
    let dir = TempDir::new();
    refuses_a_target_with_data(&sqlite(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_target_with_data_is_refused() {
    let Some(base) = postgres_url() else { return };
    refuses_a_target_with_data(&open_postgres(&base).await).await;
}

/// A write that fails in the last table rolls back every table before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_half_way_writes_nothing() {
    let dir = TempDir::new();
    let from = sqlite(&dir).await;
    let filled = fill(&from).await;
    let path = dir.db("target.db");
    let to = Database::open(&path).await.expect("target");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}")).await.expect("connect");
    sqlx::query("CREATE TRIGGER fail_late BEFORE INSERT ON metrics_1h BEGIN SELECT RAISE(ABORT, 'injected'); END")
        .execute(&mut conn)
        .await
        .expect("trigger");
    conn.close().await.expect("close");

    let err = copy_database(&from, &to).await.expect_err("fails");
    assert!(matches!(err, CopyError::Write { table: "metrics_1h", .. }), "{err:?}");
    for account in &filled.accounts {
        assert_eq!(to.account_by_name(account).await.expect("account"), None, "rolled back");
    }
    for (_, agent, token) in &filled.agents {
        assert_eq!(to.agent_by_token(&token.hash()).await.expect("agent"), None);
        assert!(to.list_engine_rules(*agent).await.expect("rules").is_empty());
    }
}

/// The copy moves columns by name and kind: both backends' migrated
/// schemas must agree on them for every copied table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_schemas_agree_on_the_copied_tables() {
    let Some(base) = postgres_url() else { return };
    let dir = TempDir::new();
    let path = dir.db("schema.db");
    Database::open(&path).await.expect("sqlite").close().await;
    let url = postgres_schema(&base).await;
    Database::open(&url).await.expect("postgres").close().await;
    let mut lite = sqlx::SqliteConnection::connect(&format!("sqlite://{path}")).await.expect("sqlite");
    let mut pg = sqlx::PgConnection::connect(&url).await.expect("postgres");
    for table in copied_tables() {
        let lite_columns: Vec<(String, String)> =
            sqlx::query_as("SELECT name, lower(type) FROM pragma_table_info($1) ORDER BY cid")
                .bind(table)
                .fetch_all(&mut lite)
                .await
                .expect("sqlite columns");
        let pg_columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, CASE data_type WHEN 'bigint' THEN 'integer' WHEN 'bytea' THEN 'blob' \
             ELSE data_type::text END FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut pg)
        .await
        .expect("postgres columns");
        assert!(!lite_columns.is_empty(), "{table}");
        assert_eq!(lite_columns, pg_columns, "{table}");
    }
}
