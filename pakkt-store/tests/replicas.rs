//! Two server processes on one database: admission stays atomic across
//! them. (Each `Database` is its own pool, as a second process would be.)

mod common;

use chrono::Utc;
use common::{TempDir, postgres_schema, postgres_url};
use pakkt_core::account::AgentToken;
use pakkt_core::agent::{Agent, HostInfo};
use pakkt_core::id::AgentId;
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::store::StoreError;
use pakkt_core::store::prelude::*;
use pakkt_store::Database;
use sqlx::Connection;

async fn agent_on(db: &Database) -> AgentId {
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
    agent.id
}

type Admission<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<pakkt_core::rule::EngineRule, StoreError>> + Send + 'a>>;

fn spec(protocol: Protocol, port: u16) -> RuleSpec {
    RuleSpec::new(protocol, port, port, RuleType::RateLimit, RateLimits { max_pps: 10, ..RateLimits::default() })
        .expect("spec")
}

async fn two_replicas_admit_atomically(a: &Database, b: &Database, agent: AgentId) {
    // The same range from both replicas at once: one wins, one conflicts.
    for port in 1000..1010u16 {
        let (udp, any) = (spec(Protocol::Udp, port), spec(Protocol::Any, port));
        let (x, y) = tokio::join!(
            a.create_engine_rule(agent, "from a", &udp, Utc::now()),
            b.create_engine_rule(agent, "from b", &any, Utc::now()),
        );
        let ok = [x.is_ok(), y.is_ok()].iter().filter(|v| **v).count();
        let dup = [&x, &y].iter().filter(|r| matches!(r, Err(StoreError::Duplicate { .. }))).count();
        assert_eq!((ok, dup), (1, 1), "port {port}: {x:?} / {y:?}");
    }
    // Different ranges from both replicas at once never share a slot.
    let specs: Vec<RuleSpec> = (0..20u16).map(|i| spec(Protocol::Tcp, 2000 + i)).collect();
    let mut handles = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let db = if i % 2 == 0 { a } else { b };
        handles.push(db.create_engine_rule(agent, "r", s, Utc::now()));
    }
    let results =
        pakkt_core::testing::join_all(handles.into_iter().map(|f| Box::pin(f) as Admission<'_>).collect()).await;
    let mut slots: Vec<Slot> = results.into_iter().map(|r| r.expect("admitted").slot.expect("slot")).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 20, "no slot handed out twice");
    let all = a.list_engine_rules(agent).await.expect("list");
    assert_eq!(all.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqlite_pools_on_one_file() {
    let dir = TempDir::new();
    let path = dir.db("pakkt.db");
    let a = Database::open(&path).await.expect("a");
    let b = Database::open(&path).await.expect("b");
    let agent = agent_on(&a).await;
    two_replicas_admit_atomically(&a, &b, agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_pools_on_one_database() {
    let Some(base) = postgres_url() else { return };
    let url = postgres_schema(&base).await;
    let a = Database::open(&url).await.expect("a");
    let b = Database::open(&url).await.expect("b");
    let agent = agent_on(&a).await;
    two_replicas_admit_atomically(&a, &b, agent).await;
}

/// The next change a listener hears, within 10 s.
async fn heard(listener: &mut pakkt_store::ChangeListener) -> pakkt_store::Change {
    tokio::time::timeout(std::time::Duration::from_secs(10), listener.next())
        .await
        .expect("a change within 10 s")
        .expect("listening")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_one_replica_are_announced_to_the_others() {
    use pakkt_core::account::ApiKeyRecord;
    use pakkt_core::id::ApiKeyId;
    use pakkt_store::Change;

    let Some(base) = postgres_url() else { return };
    let url = postgres_schema(&base).await;
    let a = Database::open(&url).await.expect("a");
    let b = Database::open(&url).await.expect("b");
    let mut listener = a.listen_for_changes().await.expect("listen").expect("PostgreSQL listens");
    let agent = agent_on(&b).await;

    // A rule admitted through B: A hears which agent changed.
    b.create_engine_rule(agent, "r", &spec(Protocol::Udp, 30120), Utc::now()).await.expect("rule");
    let mut change = heard(&mut listener).await;
    // Other tests share the server's notification channel; theirs name
    // other agents.
    while change != Change::Agent(agent) {
        change = heard(&mut listener).await;
    }

    // A key change through B: A hears that cached keys are stale.
    let account = b.account_by_name(&"acme".parse().expect("name")).await.expect("read").expect("account");
    let key = ApiKeyRecord {
        id: ApiKeyId::generate(),
        account_id: account.id,
        hash: pakkt_core::account::ApiKey::generate().hash(),
        created_at: Utc::now(),
    };
    b.insert_api_key(&key, u32::MAX).await.expect("key");
    b.revoke_api_key(key.id).await.expect("revoke");
    while heard(&mut listener).await != Change::Keys {}

    // The listener's connection is cut: it says changes may have been
    // missed, reconnects, and hears the next change.
    let pid: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'pakkt-listen' AND query LIKE 'LISTEN%' \
         AND datname = current_database() ORDER BY backend_start DESC LIMIT 1",
    )
    .fetch_one(&mut sqlx::PgConnection::connect(&url).await.expect("connect"))
    .await
    .expect("the listener's backend");
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut admin).await.expect("terminate");
    while heard(&mut listener).await != Change::Missed {}
    b.create_engine_rule(agent, "r2", &spec(Protocol::Udp, 30121), Utc::now()).await.expect("rule");
    while heard(&mut listener).await != Change::Agent(agent) {}

    // Deleting the agent is announced too (its held polls end).
    b.delete_agent(account.id, agent).await.expect("delete");
    while heard(&mut listener).await != Change::Agent(agent) {}

    // SQLite has one server process: nothing to listen to.
    let dir = TempDir::new();
    assert!(common::sqlite(&dir).await.listen_for_changes().await.expect("sqlite").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_rate_limit_counts_every_replica() {
    use pakkt_core::id::ApiKeyId;
    use pakkt_core::ratelimit::RateLimiter;

    let Some(base) = postgres_url() else { return };
    let url = postgres_schema(&base).await;
    let (a_db, b_db) = (Database::open(&url).await.expect("a"), Database::open(&url).await.expect("b"));
    let shared = |db: &Database, limit| db.shared_rate_limiter(limit).expect("PostgreSQL shares").with_caller_clock();
    let (a, b) = (shared(&a_db, 60), shared(&b_db, 60));
    let key = ApiKeyId::generate();
    let start: chrono::DateTime<Utc> = "2026-03-16T12:00:00Z".parse().expect("time");
    for i in 0..60 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        let d = limiter.check(key, start + chrono::Duration::milliseconds(i * 500)).await.expect("check");
        assert!(d.allowed, "request {i}");
        assert_eq!(d.remaining, 59 - u32::try_from(i).expect("small"));
    }
    for limiter in [&a, &b] {
        let refused = limiter.check(key, start + chrono::Duration::seconds(30)).await.expect("check");
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_after, std::time::Duration::from_secs(30));
    }
    // Refused requests did not count; the oldest leaves the window a minute
    // after it was made, on either replica.
    assert!(!b.check(key, start + chrono::Duration::milliseconds(59_999)).await.expect("check").allowed);
    assert!(b.check(key, start + chrono::Duration::seconds(60)).await.expect("check").allowed);
    assert!(!a.check(key, start + chrono::Duration::seconds(60)).await.expect("check").allowed);
    // Other keys are unaffected.
    assert!(a.check(ApiKeyId::generate(), start).await.expect("check").allowed);

    // The limit lowered to 30 (a replica restarted with another setting)
    // while 60 requests are in the window: refused, not an error, until
    // 31 of them have aged out.
    let key = ApiKeyId::generate();
    let full = shared(&a_db, 60);
    for i in 0..60 {
        assert!(full.check(key, start + chrono::Duration::seconds(i / 2)).await.expect("check").allowed);
    }
    let lowered = shared(&b_db, 30);
    let refused = lowered.check(key, start + chrono::Duration::seconds(40)).await.expect("not an error");
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    // The 31st oldest request was made at 15 s: it leaves at 75 s.
    assert_eq!(refused.reset_after, std::time::Duration::from_secs(35));
    assert!(!lowered.check(key, start + chrono::Duration::milliseconds(74_999)).await.expect("check").allowed);
    assert!(lowered.check(key, start + chrono::Duration::seconds(75)).await.expect("check").allowed);

    // Requests from many tasks on both replicas at once: exactly the limit
    // is allowed.
    let key = ApiKeyId::generate();
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let limiter = if i % 2 == 0 { std::sync::Arc::clone(&a) } else { std::sync::Arc::clone(&b) };
            tokio::spawn(async move { limiter.check(key, start).await.expect("check").allowed })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.expect("task"));
    }
    assert_eq!(allowed, 60);

    // By the database's clock (the default), from two replicas at once.
    let key = ApiKeyId::generate();
    let (a, b) = (a_db.shared_rate_limiter(3).expect("shared"), b_db.shared_rate_limiter(3).expect("shared"));
    let now = Utc::now();
    let answers = [
        a.check(key, now).await.expect("check"),
        b.check(key, now).await.expect("check"),
        a.check(key, now).await.expect("check"),
        b.check(key, now).await.expect("check"),
    ];
    assert_eq!(answers.map(|d| d.allowed), [true, true, true, false]);
    assert!(answers[3].reset_after <= std::time::Duration::from_mins(1) && !answers[3].reset_after.is_zero());

    // SQLite has one server process: its in-process limiter is exact.
    let dir = TempDir::new();
    assert!(common::sqlite(&dir).await.shared_rate_limiter(60).is_none());
    drop((a_db, b_db));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_listener_pings_itself_and_keeps_listening() {
    use pakkt_store::Change;

    let Some(base) = postgres_url() else { return };
    let url = postgres_schema(&base).await;
    let db = Database::open(&url).await.expect("open");
    let mut listener = db.listen_for_changes().await.expect("listen").expect("PostgreSQL listens");
    let agent = agent_on(&db).await;
    // Nothing of ours for 12 s: the listener pings itself after 10 s of
    // quiet and takes its own ping for a sign of life, not a change.
    // (Other tests on this server may announce agents and keys meanwhile.)
    let quiet = tokio::time::timeout(std::time::Duration::from_secs(12), async {
        loop {
            match listener.next().await.expect("listening") {
                Change::Agent(other) if other != agent => {}
                Change::Keys => {}
                change => return change,
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "no change of ours, no reconnection: {quiet:?}");
    db.create_engine_rule(agent, "r", &spec(Protocol::Udp, 30120), Utc::now()).await.expect("rule");
    while heard(&mut listener).await != Change::Agent(agent) {}
}
