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
use pakkt_core::store::{Store, StoreError};
use pakkt_store::Database;

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
    db.insert_agent(&agent, &AgentToken::generate().hash(), &[]).await.expect("agent");
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
