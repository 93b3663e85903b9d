//! The `Store` conformance checks: each gets a fresh store and panics
//! with what broke the contract. The concurrency checks poll several
//! operations at once, so a backend that really runs them in parallel (a
//! connection pool) is tested under real interleaving.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Duration, Utc};

use crate::account::{Account, AccountName, AgentToken, ApiKey, ApiKeyRecord, SecretHash};
use crate::agent::{Agent, DataplaneMode, EgressMode, HostInfo};
use crate::firewall::{Action, FirewallFields, FirewallRule, FirewallSpec, FwProtocol, SystemRole};
use crate::id::{AccountId, AgentId, ApiKeyId, EngineRuleId, IpEntryId};
use crate::ip_list::{EntrySpec, EntryStatus, IpEntry, ListType};
use crate::lifecycle::Deletion;
use crate::metrics::{Counters, Interval, MetricsReport, PortSample};
use crate::panel::{PanelSession, SessionToken};
use crate::quota::{Quota, QuotaExceeded};
use crate::rule::{EngineRule, EngineRuleStatus, Protocol, RuleSpec};
use crate::slot::{SLOT_COUNT, Slot};
use crate::store::{Store, StoreError};
use crate::sync::{AppliedIds, FirewallCounter, ItemFailure, ItemRef, SyncReport};
use crate::verdict::DropCounts;

use super::{join_all, spec, t0};

/// The figure the checks pass where they do not test a quota.
const NO_QUOTA: u32 = u32::MAX;

fn name(text: &str) -> AccountName {
    text.parse().expect("test account name")
}

async fn account<S: Store>(store: &S, text: &str) -> Account {
    store.create_account(&name(text), t0()).await.expect("create account")
}

async fn agent<S: Store>(store: &S, account: AccountId) -> (Agent, AgentToken) {
    let agent = Agent {
        id: AgentId::generate(),
        account_id: account,
        name: "VPS Paris".into(),
        host: HostInfo::default(),
        last_seen_at: None,
        created_at: t0(),
        revision: 1,
    };
    let token = AgentToken::generate();
    let system: Vec<FirewallRule> = SystemRole::ALL.iter().map(|r| FirewallRule::system(agent.id, *r, t0())).collect();
    store.insert_agent(&agent, &token.hash(), &system, NO_QUOTA).await.expect("insert agent");
    (agent, token)
}

/// The agent's revision, as `desired_state` and `revision` both answer it.
async fn revision<S: Store>(store: &S, agent: AgentId) -> u64 {
    let desired = store.desired_state(agent, t0()).await.expect("desired state").revision;
    assert_eq!(store.revision(agent).await.expect("revision"), desired, "revision() agrees with desired_state()");
    desired
}

fn entry(list: ListType, ip: &str, expires_at: Option<DateTime<Utc>>) -> EntrySpec {
    EntrySpec::new(list, ip, Some("flood"), expires_at, t0()).expect("test entry")
}

fn report(applied: AppliedIds, failures: Vec<ItemFailure>) -> SyncReport {
    SyncReport { applied, failures, ..SyncReport::default() }
}

/// Accounts are unique by name; keys are found by hash, revoked by ID and
/// replaced atomically.
pub async fn accounts_and_keys<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    assert!(
        matches!(store.create_account(&name("acme"), t0()).await, Err(StoreError::Duplicate { .. })),
        "duplicate account name"
    );
    assert_eq!(store.account_by_name(&name("acme")).await.expect("by name"), Some(acme.clone()));
    assert_eq!(store.account_by_name(&name("nobody")).await.expect("by name"), None);
    assert!(store.set_suspended(&name("acme"), true).await.expect("suspend").suspended);
    assert!(!store.set_suspended(&name("acme"), false).await.expect("resume").suspended);
    assert!(matches!(store.set_suspended(&name("nobody"), true).await, Err(StoreError::NotFound)));

    let key = ApiKey::generate();
    let record = ApiKeyRecord { id: ApiKeyId::generate(), account_id: acme.id, hash: key.hash(), created_at: t0() };
    store.insert_api_key(&record, NO_QUOTA).await.expect("insert key");
    assert!(
        matches!(store.insert_api_key(&record, NO_QUOTA).await, Err(StoreError::Duplicate { .. })),
        "same hash twice"
    );
    let (found, owner) = store.key_by_hash(&key.hash()).await.expect("lookup").expect("found");
    assert_eq!((found.id, owner.id), (record.id, acme.id));
    assert_eq!(store.key_by_hash(&ApiKey::generate().hash()).await.expect("lookup"), None);

    let second = ApiKey::generate();
    let second_record = ApiKeyRecord { id: ApiKeyId::generate(), hash: second.hash(), ..record.clone() };
    store.insert_api_key(&second_record, NO_QUOTA).await.expect("second key");
    let bootstrap = ApiKey::generate();
    let bootstrap_record = ApiKeyRecord { id: ApiKeyId::generate(), hash: bootstrap.hash(), ..record.clone() };
    store.replace_api_keys(&bootstrap_record).await.expect("replace");
    store.replace_api_keys(&bootstrap_record).await.expect("replace is idempotent");
    assert!(store.key_by_hash(&key.hash()).await.expect("lookup").is_none(), "replaced keys are gone");
    assert!(store.key_by_hash(&second.hash()).await.expect("lookup").is_none(), "replaced keys are gone");
    assert!(store.key_by_hash(&bootstrap.hash()).await.expect("lookup").is_some());

    store.revoke_api_key(bootstrap_record.id).await.expect("revoke");
    assert!(store.key_by_hash(&bootstrap.hash()).await.expect("lookup").is_none());
    assert!(matches!(store.revoke_api_key(bootstrap_record.id).await, Err(StoreError::NotFound)));
}

/// An account's keys are listed oldest first, without other accounts'
/// keys or revoked ones; an account without keys lists none.
pub async fn key_listing<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let other = account(store, "other").await;
    assert_eq!(store.list_api_keys(acme.id).await.expect("list"), vec![], "no keys yet");
    assert_eq!(store.list_api_keys(AccountId::generate()).await.expect("list"), vec![], "unknown account");
    let record = |account: AccountId, minutes: i64| ApiKeyRecord {
        id: ApiKeyId::generate(),
        account_id: account,
        hash: ApiKey::generate().hash(),
        created_at: t0() + Duration::minutes(minutes),
    };
    let later = record(acme.id, 5);
    let earlier = record(acme.id, 1);
    let foreign = record(other.id, 0);
    for key in [&later, &earlier, &foreign] {
        store.insert_api_key(key, NO_QUOTA).await.expect("insert key");
    }
    assert_eq!(store.list_api_keys(acme.id).await.expect("list"), vec![earlier.clone(), later.clone()]);
    assert_eq!(store.list_api_keys(other.id).await.expect("list"), vec![foreign]);
    store.revoke_api_key(earlier.id).await.expect("revoke");
    assert_eq!(store.list_api_keys(acme.id).await.expect("list"), vec![later]);
}

/// Agents are scoped to their account, found by token, and deleted with
/// everything on them.
pub async fn agents<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let other = account(store, "other").await;
    let (a, token) = agent(store, acme.id).await;
    let (b, _) = agent(store, acme.id).await;
    let (c, _) = agent(store, other.id).await;
    assert_eq!(revision(store, a.id).await, 1, "new agents start at revision 1");

    let listed: Vec<AgentId> = store.list_agents(acme.id).await.expect("list").iter().map(|x| x.id).collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&a.id) && listed.contains(&b.id) && !listed.contains(&c.id));
    assert_eq!(store.get_agent(acme.id, c.id).await.expect("get"), None, "another account's agent is absent");
    assert_eq!(store.agent_by_token(&token.hash()).await.expect("by token").map(|x| x.id), Some(a.id));
    assert_eq!(store.agent_by_token(&AgentToken::generate().hash()).await.expect("by token"), None);

    let host = HostInfo {
        hostname: Some("debian".into()),
        iface: Some("ens3".into()),
        version: Some("a1b2c3d".into()),
        mode: Some(DataplaneMode::Native),
        egress: Some(EgressMode::Clsact),
    };
    store.record_sync(a.id, &host, t0() + Duration::seconds(5)).await.expect("record sync");
    let seen = store.get_agent(acme.id, a.id).await.expect("get").expect("agent");
    assert_eq!(seen.host, host);
    assert_eq!(seen.last_seen_at, Some(t0() + Duration::seconds(5)));
    let tcx = HostInfo { egress: Some(EgressMode::Tcx), ..host.clone() };
    store.record_sync(a.id, &tcx, t0() + Duration::seconds(6)).await.expect("record sync");
    assert_eq!(store.get_agent(acme.id, a.id).await.expect("get").map(|x| x.host.egress), Some(Some(EgressMode::Tcx)));
    // An older agent reports no egress mode: the stored one goes with it.
    let older = HostInfo { egress: None, ..host };
    store.record_sync(a.id, &older, t0() + Duration::seconds(7)).await.expect("record sync");
    let seen = store.get_agent(acme.id, a.id).await.expect("get").expect("agent");
    assert_eq!(seen.host, older, "egress mode cleared");
    let listed = store.list_agents(acme.id).await.expect("list");
    assert_eq!(listed.iter().find(|x| x.id == a.id).map(|x| &x.host), Some(&older), "listed alike");

    let fw = store.list_firewall_rules(a.id).await.expect("firewall");
    assert_eq!(
        fw.iter().filter(|r| r.is_system()).count(),
        SystemRole::ALL.len(),
        "system rules stored with the agent"
    );

    assert!(
        matches!(store.delete_agent(other.id, a.id).await, Err(StoreError::NotFound)),
        "another account cannot delete it"
    );
    store.create_engine_rule(a.id, "r", &spec(Protocol::Udp, 1, 1), t0()).await.expect("rule");
    store.delete_agent(acme.id, a.id).await.expect("delete");
    assert_eq!(store.get_agent(acme.id, a.id).await.expect("get"), None);
    assert_eq!(store.agent_by_token(&token.hash()).await.expect("by token"), None, "token dies with the agent");
    assert!(store.list_engine_rules(a.id).await.expect("rules").is_empty(), "rules die with the agent");
    assert!(store.list_firewall_rules(a.id).await.expect("fw").is_empty());
    assert!(matches!(store.delete_agent(acme.id, a.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.create_engine_rule(a.id, "r", &spec(Protocol::Udp, 2, 2), t0()).await,
        Err(StoreError::NotFound)
    ));
}

/// Dedup and lowest-free slots, per DESIGN §2.
pub async fn engine_rule_admission<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let (b, _) = agent(store, acme.id).await;
    let r0 = store.create_engine_rule(a.id, "FiveM UDP", &spec(Protocol::Udp, 30120, 30120), t0()).await.expect("udp");
    assert_eq!((r0.slot, r0.status), (Some(Slot::new(0)), EngineRuleStatus::PendingLoad));
    assert_eq!(revision(store, a.id).await, 2, "a create bumps the revision");
    let r1 = store
        .create_engine_rule(a.id, "FiveM TCP", &spec(Protocol::Tcp, 30120, 30120), t0())
        .await
        .expect("tcp coexists with udp");
    assert_eq!(r1.slot, Some(Slot::new(1)));
    match store.create_engine_rule(a.id, "any", &spec(Protocol::Any, 30120, 30120), t0()).await {
        Err(StoreError::Duplicate { existing }) => {
            assert!(existing == r0.id.to_string() || existing == r1.id.to_string());
        }
        other => panic!("protocol 0 overlaps both: {other:?}"),
    }
    assert!(matches!(
        store.create_engine_rule(a.id, "dup", &spec(Protocol::Udp, 30120, 30120), t0()).await,
        Err(StoreError::Duplicate { .. })
    ));
    let wider = store
        .create_engine_rule(a.id, "range", &spec(Protocol::Udp, 30120, 30130), t0())
        .await
        .expect("another range is no duplicate");
    assert_eq!(wider.slot, Some(Slot::new(2)));
    let other_agent = store
        .create_engine_rule(b.id, "same on b", &spec(Protocol::Udp, 30120, 30120), t0())
        .await
        .expect("other agent");
    assert_eq!(other_agent.slot, Some(Slot::new(0)), "slots are per agent");

    let any = store.create_engine_rule(b.id, "any 22", &spec(Protocol::Any, 22, 22), t0()).await.expect("any");
    assert!(
        matches!(
            store.create_engine_rule(b.id, "tcp 22", &spec(Protocol::Tcp, 22, 22), t0()).await,
            Err(StoreError::Duplicate { .. })
        ),
        "dedup is symmetric in protocol 0"
    );

    // pending_unload: holds its slot but no longer counts for dedup.
    assert_eq!(store.delete_engine_rule(b.id, any.id).await.expect("delete"), Deletion::Pending);
    let again = store
        .create_engine_rule(b.id, "tcp 22", &spec(Protocol::Tcp, 22, 22), t0())
        .await
        .expect("pending_unload does not dedup");
    assert_eq!(again.slot, Some(Slot::new(2)), "pending_unload still holds slot 1");

    let listed = store.list_engine_rules(a.id).await.expect("list");
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![r0.id, r1.id, wider.id],
        "oldest first, own agent only"
    );
    assert_eq!(listed[0].name, "FiveM UDP");
    assert_eq!(listed[0].spec, spec(Protocol::Udp, 30120, 30120));
}

/// The 257th rule gets `SlotsExhausted`; a failed rule frees its slot.
pub async fn engine_rule_slots_exhaust<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let mut ids = Vec::new();
    for i in 0..SLOT_COUNT {
        let port = u16::try_from(i + 1).expect("port");
        let rule = store.create_engine_rule(a.id, "r", &spec(Protocol::Udp, port, port), t0()).await.expect("fill");
        assert_eq!(rule.slot.map(Slot::index), Some(i));
        ids.push(rule.id);
    }
    assert!(matches!(
        store.create_engine_rule(a.id, "r", &spec(Protocol::Udp, 1000, 1000), t0()).await,
        Err(StoreError::SlotsExhausted)
    ));
    let failed = ids[7];
    let rep = report(
        AppliedIds::default(),
        vec![ItemFailure { item: ItemRef::EngineRule(failed), message: "map update failed".into() }],
    );
    store.apply_report(a.id, &rep, t0()).await.expect("report");
    let rule = store
        .create_engine_rule(a.id, "r", &spec(Protocol::Udp, 1000, 1000), t0())
        .await
        .expect("failed frees its slot");
    assert_eq!(rule.slot, Some(Slot::new(7)));
}

/// Deleting moves statuses per [`crate::lifecycle::on_delete`].
pub async fn engine_rule_deletion<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let (b, _) = agent(store, acme.id).await;
    let r = store.create_engine_rule(a.id, "r", &spec(Protocol::Udp, 53, 53), t0()).await.expect("rule");
    assert!(
        matches!(store.delete_engine_rule(b.id, r.id).await, Err(StoreError::NotFound)),
        "another agent's rule is absent"
    );
    assert!(matches!(store.delete_engine_rule(a.id, EngineRuleId::generate()).await, Err(StoreError::NotFound)));
    let before = revision(store, a.id).await;
    assert_eq!(store.delete_engine_rule(a.id, r.id).await.expect("delete"), Deletion::Pending);
    assert_eq!(revision(store, a.id).await, before + 1);
    assert_eq!(store.delete_engine_rule(a.id, r.id).await.expect("again"), Deletion::AlreadyPending);
    assert_eq!(revision(store, a.id).await, before + 1, "a repeated delete changes nothing");
    assert_eq!(store.list_engine_rules(a.id).await.expect("list")[0].status, EngineRuleStatus::PendingUnload);

    let f = store.create_engine_rule(a.id, "f", &spec(Protocol::Udp, 54, 54), t0()).await.expect("rule");
    let rep =
        report(AppliedIds::default(), vec![ItemFailure { item: ItemRef::EngineRule(f.id), message: "boom".into() }]);
    store.apply_report(a.id, &rep, t0()).await.expect("report");
    let failed =
        store.list_engine_rules(a.id).await.expect("list").into_iter().find(|x| x.id == f.id).expect("failed rule");
    assert_eq!(
        (failed.status, failed.slot, failed.status_message.as_deref()),
        (EngineRuleStatus::Failed, None, Some("boom"))
    );
    assert_eq!(store.delete_engine_rule(a.id, f.id).await.expect("delete failed"), Deletion::Removed);
    assert!(
        store.list_engine_rules(a.id).await.expect("list").iter().all(|x| x.id != f.id),
        "a failed rule goes at once"
    );
}

/// Entries dedup per list and prefix, filter by list, and delete like rules.
pub async fn ip_entries<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let (b, _) = agent(store, acme.id).await;
    let e = store
        .create_ip_entry(a.id, &entry(ListType::Blacklist, "203.0.113.42", None), t0(), NO_QUOTA)
        .await
        .expect("entry");
    assert_eq!(e.status, EntryStatus::PendingAdd);
    assert_eq!(e.spec.reason.as_deref(), Some("flood"));
    assert!(matches!(
        store.create_ip_entry(a.id, &entry(ListType::Blacklist, "203.0.113.42", None), t0(), NO_QUOTA).await,
        Err(StoreError::Duplicate { .. })
    ));
    store
        .create_ip_entry(a.id, &entry(ListType::Whitelist, "203.0.113.42", None), t0(), NO_QUOTA)
        .await
        .expect("other list");
    store
        .create_ip_entry(a.id, &entry(ListType::Blacklist, "203.0.113.0/24", None), t0(), NO_QUOTA)
        .await
        .expect("other prefix");
    store
        .create_ip_entry(b.id, &entry(ListType::Blacklist, "203.0.113.42", None), t0(), NO_QUOTA)
        .await
        .expect("other agent");
    store.create_ip_entry(a.id, &entry(ListType::Blacklist, "2001:db8::/32", None), t0(), NO_QUOTA).await.expect("v6");
    assert_eq!(store.list_ip_entries(a.id, None, t0()).await.expect("all").len(), 4);
    assert_eq!(store.list_ip_entries(a.id, Some(ListType::Whitelist), t0()).await.expect("whitelist").len(), 1);
    assert_eq!(store.list_ip_entries(a.id, Some(ListType::Blacklist), t0()).await.expect("blacklist").len(), 3);
    assert!(matches!(store.delete_ip_entry(b.id, e.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_ip_entry(a.id, IpEntryId::generate()).await, Err(StoreError::NotFound)));
    assert_eq!(store.delete_ip_entry(a.id, e.id).await.expect("delete"), Deletion::Pending);
    assert_eq!(store.delete_ip_entry(a.id, e.id).await.expect("again"), Deletion::AlreadyPending);
    store
        .create_ip_entry(a.id, &entry(ListType::Blacklist, "203.0.113.42", None), t0(), NO_QUOTA)
        .await
        .expect("pending_remove does not dedup");
}

/// Expired entries vanish from lists, the desired state and dedup; a purge
/// deletes them and bumps the revision.
pub async fn ip_expiry<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let soon = t0() + Duration::seconds(2);
    store
        .create_ip_entry(a.id, &entry(ListType::Blacklist, "198.51.100.7", Some(soon)), t0(), NO_QUOTA)
        .await
        .expect("expiring");
    store
        .create_ip_entry(
            a.id,
            &entry(ListType::Blacklist, "198.51.100.8", Some(t0() + Duration::hours(1))),
            t0(),
            NO_QUOTA,
        )
        .await
        .expect("later");
    assert_eq!(store.next_expiry(a.id, t0()).await.expect("next"), Some(soon));
    assert_eq!(store.list_ip_entries(a.id, None, soon - Duration::milliseconds(1)).await.expect("before").len(), 2);
    assert_eq!(store.list_ip_entries(a.id, None, soon).await.expect("at expiry").len(), 1, "expired at expires_at");
    assert_eq!(store.desired_state(a.id, soon).await.expect("desired").ip_entries.len(), 1);
    store
        .create_ip_entry(a.id, &entry(ListType::Blacklist, "198.51.100.7", None), soon, NO_QUOTA)
        .await
        .expect("an expired entry does not dedup");
    let before = revision(store, a.id).await;
    assert_eq!(store.purge_expired(a.id, soon).await.expect("purge"), 1);
    assert_eq!(revision(store, a.id).await, before + 1);
    assert_eq!(store.purge_expired(a.id, soon).await.expect("purge again"), 0);
    assert_eq!(revision(store, a.id).await, before + 1, "nothing purged, nothing bumped");
    assert_eq!(store.next_expiry(a.id, soon).await.expect("next"), Some(t0() + Duration::hours(1)));
}

/// System rules first, then creation order; deletes like entries.
pub async fn firewall_rules<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let drop_redis = FirewallSpec::new(&FirewallFields {
        protocol: Some(FwProtocol::Tcp),
        port_start: Some(6379),
        action: Some(Action::Drop),
        ..FirewallFields::default()
    })
    .expect("spec");
    let first = FirewallRule::user(a.id, "Block Redis", drop_redis.clone(), t0() + Duration::seconds(1)).expect("rule");
    let second = FirewallRule::user(a.id, "Block Redis 2", drop_redis, t0() + Duration::seconds(2)).expect("rule");
    let before = revision(store, a.id).await;
    store.create_firewall_rule(&second, NO_QUOTA).await.expect("second");
    store.create_firewall_rule(&first, NO_QUOTA).await.expect("first");
    assert_eq!(revision(store, a.id).await, before + 2);
    let listed = store.list_firewall_rules(a.id).await.expect("list");
    assert_eq!(listed.len(), 5);
    assert!(listed[..3].iter().all(FirewallRule::is_system), "system rules first");
    assert_eq!(listed[3].id, first.id, "then creation order");
    assert_eq!(listed[4].id, second.id);
    assert_eq!(listed[3], first, "stored as given");
    assert_eq!(store.delete_firewall_rule(a.id, first.id).await.expect("delete"), Deletion::Pending);
    assert_eq!(store.delete_firewall_rule(a.id, first.id).await.expect("again"), Deletion::AlreadyPending);
    let orphan = FirewallRule::user(AgentId::generate(), "x", first.spec.clone(), t0()).expect("rule");
    assert!(matches!(store.create_firewall_rule(&orphan, NO_QUOTA).await, Err(StoreError::NotFound)));
}

/// The desired state holds exactly the wanted items; reports move statuses
/// and confirm removals by absence.
pub async fn desired_state_and_reports<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let r1 = store.create_engine_rule(a.id, "r1", &spec(Protocol::Udp, 100, 100), t0()).await.expect("r1");
    let r2 = store.create_engine_rule(a.id, "r2", &spec(Protocol::Udp, 200, 200), t0()).await.expect("r2");
    let r3 = store.create_engine_rule(a.id, "r3", &spec(Protocol::Udp, 300, 300), t0()).await.expect("r3");
    let e1 =
        store.create_ip_entry(a.id, &entry(ListType::Whitelist, "192.0.2.1", None), t0(), NO_QUOTA).await.expect("e1");
    let system: Vec<_> = store.list_firewall_rules(a.id).await.expect("fw").iter().map(|f| f.id).collect();

    let desired = store.desired_state(a.id, t0()).await.expect("desired");
    assert_eq!(store.revision(a.id).await.expect("revision"), desired.revision);
    assert!(matches!(store.revision(AgentId::generate()).await, Err(StoreError::NotFound)), "unknown agent");
    assert_eq!(desired.engine_rules.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r1.id, r2.id, r3.id], "by slot");
    assert_eq!(desired.ip_entries.len(), 1);
    assert_eq!(desired.firewall_rules.iter().map(|f| f.id).collect::<Vec<_>>(), system);
    assert_eq!(store.desired_state(a.id, t0()).await.expect("again").revision, desired.revision, "reads do not bump");

    // r1 loaded, r2 failed, r3 not yet seen; e1 active; system rules active.
    let applied = AppliedIds { engine_rules: vec![r1.id], ip_entries: vec![e1.id], firewall_rules: system.clone() };
    let mut rep = report(
        applied.clone(),
        vec![ItemFailure { item: ItemRef::EngineRule(r2.id), message: "verifier said no".into() }],
    );
    rep.firewall_counters = vec![FirewallCounter { id: system[0], packets: 4821, bytes: 289_260 }];
    store.apply_report(a.id, &rep, t0() + Duration::seconds(1)).await.expect("report");
    let rules = store.list_engine_rules(a.id).await.expect("rules");
    let status = |id| rules.iter().find(|r| r.id == id).map(|r| r.status);
    assert_eq!(status(r1.id), Some(EngineRuleStatus::Loaded));
    assert_eq!(rules.iter().find(|r| r.id == r1.id).and_then(|r| r.loaded_at), Some(t0() + Duration::seconds(1)));
    assert_eq!(status(r2.id), Some(EngineRuleStatus::Failed));
    assert_eq!(status(r3.id), Some(EngineRuleStatus::PendingLoad));
    assert_eq!(store.list_ip_entries(a.id, None, t0()).await.expect("entries")[0].status, EntryStatus::Active);
    let fw = store.list_firewall_rules(a.id).await.expect("fw");
    assert!(fw.iter().all(|f| f.status == EntryStatus::Active));
    assert_eq!(fw.iter().find(|f| f.id == system[0]).map(|f| (f.packets_total, f.bytes_total)), Some((4821, 289_260)));
    let after_failure = store.desired_state(a.id, t0()).await.expect("desired");
    assert!(after_failure.revision > desired.revision, "a failure changes the desired state");
    assert!(after_failure.engine_rules.iter().all(|r| r.id != r2.id), "failed rules are not desired");

    // A repeated report changes nothing; loaded_at keeps its first value.
    store.apply_report(a.id, &report(applied.clone(), vec![]), t0() + Duration::seconds(9)).await.expect("repeat");
    let rules = store.list_engine_rules(a.id).await.expect("rules");
    assert_eq!(rules.iter().find(|r| r.id == r1.id).and_then(|r| r.loaded_at), Some(t0() + Duration::seconds(1)));
    assert_eq!(store.desired_state(a.id, t0()).await.expect("desired").revision, after_failure.revision);

    // Delete r1 (loaded) and r3 (never seen by the agent).
    store.delete_engine_rule(a.id, r1.id).await.expect("delete r1");
    store.delete_engine_rule(a.id, r3.id).await.expect("delete r3");
    store.delete_ip_entry(a.id, e1.id).await.expect("delete e1");
    store.apply_report(a.id, &report(applied, vec![]), t0()).await.expect("still has r1 and e1");
    let rules = store.list_engine_rules(a.id).await.expect("rules");
    assert_eq!(
        rules.iter().find(|r| r.id == r1.id).map(|r| r.status),
        Some(EngineRuleStatus::PendingUnload),
        "r1 waits for the agent"
    );
    assert!(rules.iter().all(|r| r.id != r3.id), "r3 was never applied: its removal is confirmed at once");
    store
        .apply_report(a.id, &report(AppliedIds { firewall_rules: system, ..AppliedIds::default() }, vec![]), t0())
        .await
        .expect("r1 gone");
    assert!(store.list_engine_rules(a.id).await.expect("rules").iter().all(|r| r.id != r1.id));
    assert!(store.list_ip_entries(a.id, None, t0()).await.expect("entries").is_empty());
    let slot =
        store.create_engine_rule(a.id, "reuse", &spec(Protocol::Udp, 100, 100), t0()).await.expect("r1's slot is free");
    assert_eq!(slot.slot, Some(Slot::new(0)));
}

/// A report naming another agent's items changes none of them.
pub async fn reports_ignore_other_agents<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let (b, _) = agent(store, acme.id).await;
    let rb = store.create_engine_rule(b.id, "b", &spec(Protocol::Udp, 100, 100), t0()).await.expect("rule");
    let applied = AppliedIds { engine_rules: vec![rb.id], ..AppliedIds::default() };
    store
        .apply_report(
            a.id,
            &report(applied, vec![ItemFailure { item: ItemRef::EngineRule(rb.id), message: "x".into() }]),
            t0(),
        )
        .await
        .expect("report");
    assert_eq!(store.list_engine_rules(b.id).await.expect("rules")[0].status, EngineRuleStatus::PendingLoad);
}

/// `passed` and `dropped` packets on `port`, the drops counted as `rate`.
fn sample(port: u16, passed: u64, dropped: u64) -> PortSample {
    PortSample {
        port,
        counters: Counters {
            packets_passed: passed,
            packets_dropped: dropped,
            bytes_passed: passed * 100,
            bytes_dropped: dropped * 60,
            dropped_by_reason: DropCounts { rate: dropped, ..DropCounts::default() },
        },
    }
}

/// `sample`, with its drops counted as `reasons` instead.
fn with_reasons(mut sample: PortSample, reasons: DropCounts) -> PortSample {
    sample.counters.dropped_by_reason = reasons;
    sample
}

/// Reports land in one-minute buckets once; queries roll them up.
pub async fn metrics<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let (b, _) = agent(store, acme.id).await;
    let first = MetricsReport::new("r1", vec![sample(30120, 10, 2), sample(22, 5, 0)]);
    assert!(store.ingest_metrics(a.id, &first, t0() + Duration::seconds(10)).await.expect("ingest"));
    assert!(
        !store.ingest_metrics(a.id, &first, t0() + Duration::seconds(20)).await.expect("retry"),
        "same report ID counts once"
    );
    let blacklisted = DropCounts { blacklist: 1, ..DropCounts::default() };
    let second = MetricsReport::new("r2", vec![with_reasons(sample(30120, 1, 1), blacklisted)]);
    assert!(store.ingest_metrics(a.id, &second, t0() + Duration::seconds(50)).await.expect("same minute"));
    let third = MetricsReport::new("r3", vec![sample(30120, 7, 0)]);
    assert!(store.ingest_metrics(a.id, &third, t0() + Duration::minutes(6)).await.expect("later"));
    assert!(store.ingest_metrics(b.id, &first, t0()).await.expect("IDs are per agent"));

    let by_port = store.metrics_by_port(a.id, t0(), t0() + Duration::hours(1)).await.expect("by port");
    assert_eq!(by_port.get(&30120).map(|c| c.packets_passed), Some(18));
    assert_eq!(by_port.get(&30120).map(|c| c.bytes_dropped), Some(180));
    assert_eq!(by_port.get(&22).map(|c| c.packets_passed), Some(5));
    // Drop reasons are stored and summed over buckets like the other
    // counters, each on its own.
    let both = DropCounts { rate: 2, blacklist: 1, ..DropCounts::default() };
    assert_eq!(by_port.get(&30120).map(|c| c.dropped_by_reason), Some(both));
    assert_eq!(by_port.get(&22).map(|c| c.dropped_by_reason), Some(DropCounts::default()));
    let narrow = store.metrics_by_port(a.id, t0(), t0() + Duration::minutes(1)).await.expect("first minute");
    assert_eq!(narrow.get(&30120).map(|c| c.packets_passed), Some(11), "[from, to) by bucket start");

    let minutes =
        store.metrics_history(a.id, t0(), t0() + Duration::hours(1), Interval::Minute, None).await.expect("1m");
    let rows: Vec<(DateTime<Utc>, u16, u64)> =
        minutes.iter().map(|m| (m.bucket, m.port, m.counters.packets_passed)).collect();
    assert_eq!(rows, vec![(t0(), 22, 5), (t0(), 30120, 11), (t0() + Duration::minutes(6), 30120, 7)]);
    assert_eq!(minutes[1].counters.dropped_by_reason, both, "two reports in one minute add up, reason by reason");
    let fives = store
        .metrics_history(a.id, t0(), t0() + Duration::hours(1), Interval::FiveMinutes, Some(30120))
        .await
        .expect("5m");
    let rows: Vec<(DateTime<Utc>, u64)> = fives.iter().map(|m| (m.bucket, m.counters.packets_passed)).collect();
    assert_eq!(rows, vec![(t0(), 11), (t0() + Duration::minutes(5), 7)]);
    let hours =
        store.metrics_history(a.id, t0(), t0() + Duration::hours(1), Interval::Hour, Some(30120)).await.expect("1h");
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0].counters.packets_dropped, 3);
    assert_eq!(hours[0].counters.dropped_by_reason, both);
    assert!(
        store
            .metrics_history(a.id, t0(), t0() + Duration::hours(1), Interval::Hour, Some(443))
            .await
            .expect("none")
            .is_empty()
    );

    // A bucket that starts within the same second as `to` is in range.
    let (c, _) = agent(store, acme.id).await;
    let minute = t0() + Duration::hours(2);
    let early = MetricsReport::new("r-early", vec![sample(53, 1, 0)]);
    assert!(store.ingest_metrics(c.id, &early, minute + Duration::milliseconds(300)).await.expect("ingest"));
    let soon = minute + Duration::milliseconds(700);
    assert_eq!(store.metrics_history(c.id, t0(), soon, Interval::Minute, None).await.expect("history").len(), 1);
    assert_eq!(
        store.metrics_by_port(c.id, t0(), soon).await.expect("by port").get(&53).map(|x| x.packets_passed),
        Some(1)
    );

    // Reasons saturate like the other counters: whatever the largest count
    // a bucket holds, a reason's stops where `packets_dropped` stops.
    let (d, _) = agent(store, acme.id).await;
    let huge = PortSample {
        port: 9,
        counters: Counters {
            packets_dropped: u64::MAX,
            dropped_by_reason: DropCounts { fragment: u64::MAX, malformed: 5, ..DropCounts::default() },
            ..Counters::default()
        },
    };
    for n in 0..2 {
        let report = MetricsReport::new(format!("huge{n}"), vec![huge]);
        assert!(store.ingest_metrics(d.id, &report, minute + Duration::seconds(n)).await.expect("saturated"));
    }
    let saturated = store.metrics_by_port(d.id, minute, minute + Duration::minutes(1)).await.expect("by port");
    let nine = saturated.get(&9).copied().unwrap_or_default();
    assert!(nine.packets_dropped >= u64::try_from(i64::MAX).unwrap_or(u64::MAX), "{nine:?}");
    assert_eq!(nine.dropped_by_reason.fragment, nine.packets_dropped, "saturated alike");
    assert_eq!(nine.dropped_by_reason.malformed, 10, "the other reasons unaffected");

    // Firewall counters ride along: set on the agent's own rules only.
    let a_rule = store.list_firewall_rules(a.id).await.expect("a's rules")[0].id;
    let b_rule = store.list_firewall_rules(b.id).await.expect("b's rules")[0].id;
    let mut counted = MetricsReport::new("r4", vec![]);
    counted.firewall_counters = vec![
        FirewallCounter { id: a_rule, packets: 4821, bytes: 289_260 },
        FirewallCounter { id: b_rule, packets: 7, bytes: 7 },
    ];
    assert!(store.ingest_metrics(a.id, &counted, t0() + Duration::minutes(7)).await.expect("counters"));
    let totals =
        |rules: Vec<FirewallRule>, id| rules.iter().find(|f| f.id == id).map(|f| (f.packets_total, f.bytes_total));
    assert_eq!(totals(store.list_firewall_rules(a.id).await.expect("a"), a_rule), Some((4821, 289_260)));
    assert_eq!(totals(store.list_firewall_rules(b.id).await.expect("b"), b_rule), Some((0, 0)), "not a's rule");
}

/// Two concurrent creates on one port range: one wins, one conflicts.
pub async fn concurrent_duplicate_rules<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    for round in 0..5u16 {
        let port = 1000 + round;
        let udp = spec(Protocol::Udp, port, port);
        let any = spec(Protocol::Any, port, port);
        let results = join_all(vec![
            Box::pin(store.create_engine_rule(a.id, "one", &udp, t0())),
            Box::pin(store.create_engine_rule(a.id, "two", &any, t0())),
        ])
        .await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let dup = results.iter().filter(|r| matches!(r, Err(StoreError::Duplicate { .. }))).count();
        assert_eq!((ok, dup), (1, 1), "round {round}: {results:?}");
    }
}

/// Concurrent creates never share a slot.
pub async fn concurrent_slots<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let specs: Vec<RuleSpec> = (1..=24u16).map(|p| spec(Protocol::Tcp, p, p)).collect();
    let futures = specs
        .iter()
        .map(|s| {
            Box::pin(store.create_engine_rule(a.id, "r", s, t0()))
                as Pin<Box<dyn Future<Output = Result<EngineRule, StoreError>> + Send + '_>>
        })
        .collect();
    let results = join_all(futures).await;
    let slots: Vec<Slot> =
        results.iter().map(|r| r.as_ref().expect("distinct ports all admitted").slot.expect("slot")).collect();
    let distinct: BTreeSet<Slot> = slots.iter().copied().collect();
    assert_eq!(distinct.len(), slots.len(), "no slot shared: {slots:?}");
    assert_eq!(distinct, (0..24u8).map(Slot::new).collect(), "lowest slots taken");
}

/// Two concurrent adds of one prefix: one wins, one conflicts.
pub async fn concurrent_duplicate_entries<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let spec = entry(ListType::Blacklist, "203.0.113.9", None);
    let results = join_all(vec![
        Box::pin(store.create_ip_entry(a.id, &spec, t0(), NO_QUOTA)),
        Box::pin(store.create_ip_entry(a.id, &spec, t0(), NO_QUOTA)),
    ])
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let dup = results.iter().filter(|r| matches!(r, Err(StoreError::Duplicate { .. }))).count();
    assert_eq!((ok, dup), (1, 1), "{results:?}");
}

/// A refusal of `quota` at `limit`.
#[track_caller]
fn assert_quota<T: std::fmt::Debug>(outcome: Result<T, StoreError>, quota: Quota, limit: u32, what: &str) {
    match outcome {
        Err(StoreError::QuotaExceeded(e)) => assert_eq!(e, QuotaExceeded { quota, limit }, "{what}"),
        other => panic!("{what}: expected {quota:?} exceeded at {limit}, got {other:?}"),
    }
}

/// An agent (of `account`) that is not stored yet, with its token and
/// system rules.
fn unsaved_agent(account: AccountId) -> (Agent, AgentToken, Vec<FirewallRule>) {
    let agent = Agent {
        id: AgentId::generate(),
        account_id: account,
        name: "VPS".into(),
        host: HostInfo::default(),
        last_seen_at: None,
        created_at: t0(),
        revision: 1,
    };
    let system = SystemRole::ALL.iter().map(|r| FirewallRule::system(agent.id, *r, t0())).collect();
    (agent, AgentToken::generate(), system)
}

fn key_record(account: AccountId) -> ApiKeyRecord {
    ApiKeyRecord { id: ApiKeyId::generate(), account_id: account, hash: ApiKey::generate().hash(), created_at: t0() }
}

fn drop_port(agent: AgentId, port: u16) -> FirewallRule {
    let spec = FirewallSpec::new(&FirewallFields {
        protocol: Some(FwProtocol::Tcp),
        port_start: Some(port),
        action: Some(Action::Drop),
        ..FirewallFields::default()
    })
    .expect("spec");
    FirewallRule::user(agent, "drop", spec, t0()).expect("rule")
}

/// An account holds at most `max` agents; deleted agents free their
/// place, and other accounts have their own count.
pub async fn agent_quota<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let other = account(store, "other").await;
    let mut made = Vec::new();
    for _ in 0..2 {
        let (agent, token, system) = unsaved_agent(acme.id);
        store.insert_agent(&agent, &token.hash(), &system, 2).await.expect("within the quota");
        made.push(agent.id);
    }
    let (extra, token, system) = unsaved_agent(acme.id);
    assert_quota(store.insert_agent(&extra, &token.hash(), &system, 2).await, Quota::Agents, 2, "a third agent");
    assert_eq!(store.get_agent(acme.id, extra.id).await.expect("get"), None, "nothing stored");
    assert!(store.list_firewall_rules(extra.id).await.expect("fw").is_empty(), "not even its system rules");
    assert_eq!(store.list_agents(acme.id).await.expect("list").len(), 2);

    let (theirs, their_token, their_system) = unsaved_agent(other.id);
    store.insert_agent(&theirs, &their_token.hash(), &their_system, 2).await.expect("another account counts apart");

    store.delete_agent(acme.id, made[0]).await.expect("delete");
    store.insert_agent(&extra, &token.hash(), &system, 2).await.expect("a deleted agent frees its place");
    let (late, late_token, late_system) = unsaved_agent(acme.id);
    assert_quota(
        store.insert_agent(&late, &late_token.hash(), &late_system, 0).await,
        Quota::Agents,
        0,
        "0 allows none",
    );
    let (ghost, ghost_token, ghost_system) = unsaved_agent(AccountId::generate());
    assert!(
        matches!(store.insert_agent(&ghost, &ghost_token.hash(), &ghost_system, 5).await, Err(StoreError::NotFound)),
        "an unknown account is not found"
    );
}

/// An account holds at most `max` keys; revoked keys free their place;
/// the bootstrap replacement is never refused.
pub async fn key_quota<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let other = account(store, "other").await;
    let first = key_record(acme.id);
    store.insert_api_key(&first, 2).await.expect("first");
    store.insert_api_key(&key_record(acme.id), 2).await.expect("second");
    let third = key_record(acme.id);
    assert_quota(store.insert_api_key(&third, 2).await, Quota::ApiKeys, 2, "a third key");
    assert!(store.key_by_hash(&third.hash).await.expect("lookup").is_none(), "nothing stored");
    store.insert_api_key(&key_record(other.id), 2).await.expect("another account counts apart");

    store.revoke_api_key(first.id).await.expect("revoke");
    store.insert_api_key(&third, 2).await.expect("a revoked key frees its place");

    let bootstrap = key_record(acme.id);
    store.replace_api_keys(&bootstrap).await.expect("the bootstrap key needs no room");
    assert_eq!(store.list_api_keys(acme.id).await.expect("list"), vec![bootstrap]);
    assert_quota(store.insert_api_key(&key_record(acme.id), 1).await, Quota::ApiKeys, 1, "the bootstrap key counts");
    assert!(
        matches!(store.insert_api_key(&key_record(AccountId::generate()), 5).await, Err(StoreError::NotFound)),
        "an unknown account is not found"
    );
}

/// An agent holds at most `max` entries, both lists together; entries
/// being removed or expired free their place, failed ones do not; the
/// quota comes before dedup (422 before 409).
pub async fn ip_entry_quota<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let (b, _) = agent(store, acme.id).await;
    let soon = t0() + Duration::seconds(30);
    let kept =
        store.create_ip_entry(a.id, &entry(ListType::Blacklist, "198.51.100.1", None), t0(), 3).await.expect("1");
    let failing =
        store.create_ip_entry(a.id, &entry(ListType::Whitelist, "198.51.100.2", None), t0(), 3).await.expect("2");
    store.create_ip_entry(a.id, &entry(ListType::Blacklist, "198.51.100.3", Some(soon)), t0(), 3).await.expect("3");
    let extra = entry(ListType::Blacklist, "198.51.100.4", None);
    assert_quota(store.create_ip_entry(a.id, &extra, t0(), 3).await, Quota::IpEntries, 3, "a fourth entry");
    assert_quota(
        store.create_ip_entry(a.id, &entry(ListType::Blacklist, "198.51.100.1", None), t0(), 3).await,
        Quota::IpEntries,
        3,
        "a duplicate on a full list is over the quota first",
    );
    assert_eq!(store.list_ip_entries(a.id, None, t0()).await.expect("list").len(), 3, "nothing stored");
    store.create_ip_entry(b.id, &extra, t0(), 3).await.expect("another agent counts apart");

    // Failed still counts (deleting it removes it at once).
    let failure = ItemFailure { item: ItemRef::IpEntry(failing.id), message: "map full".into() };
    store.apply_report(a.id, &report(AppliedIds::default(), vec![failure]), t0()).await.expect("report");
    assert_quota(store.create_ip_entry(a.id, &extra, t0(), 3).await, Quota::IpEntries, 3, "a failed entry counts");

    // Expired: no longer counts, even before it is purged.
    store.create_ip_entry(a.id, &extra, soon, 3).await.expect("the expired entry's place");
    assert_quota(
        store.create_ip_entry(a.id, &entry(ListType::Blacklist, "198.51.100.5", None), soon, 3).await,
        Quota::IpEntries,
        3,
        "full again",
    );
    // Deleted (pending_remove): no longer counts.
    assert_eq!(store.delete_ip_entry(a.id, kept.id).await.expect("delete"), Deletion::Pending);
    store
        .create_ip_entry(a.id, &entry(ListType::Blacklist, "198.51.100.5", None), soon, 3)
        .await
        .expect("a deleted entry frees its place");
}

/// An agent holds at most `max` firewall rules of its own; system rules
/// and rules being removed do not count.
pub async fn firewall_rule_quota<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let (b, _) = agent(store, acme.id).await;
    let first = drop_port(a.id, 1);
    store.create_firewall_rule(&first, 2).await.expect("system rules do not count");
    store.create_firewall_rule(&drop_port(a.id, 2), 2).await.expect("second");
    let third = drop_port(a.id, 3);
    let before = revision(store, a.id).await;
    assert_quota(store.create_firewall_rule(&third, 2).await, Quota::FirewallRules, 2, "a third rule");
    assert!(store.list_firewall_rules(a.id).await.expect("list").iter().all(|f| f.id != third.id), "nothing stored");
    assert_eq!(revision(store, a.id).await, before, "a refusal changes nothing");
    store.create_firewall_rule(&drop_port(b.id, 3), 2).await.expect("another agent counts apart");
    assert_eq!(store.delete_firewall_rule(a.id, first.id).await.expect("delete"), Deletion::Pending);
    store.create_firewall_rule(&third, 2).await.expect("a deleted rule frees its place");
}

/// Concurrent creates never take an account past its agent or key quota.
pub async fn concurrent_account_quotas<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let agents: Vec<_> = (0..6).map(|_| unsaved_agent(acme.id)).collect();
    let hashes: Vec<_> = agents.iter().map(|(_, token, _)| token.hash()).collect();
    let futures = agents
        .iter()
        .zip(&hashes)
        .map(|((agent, _, system), hash)| {
            Box::pin(store.insert_agent(agent, hash, system, 3))
                as Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>
        })
        .collect();
    let results = join_all(futures).await;
    let refused = results.iter().filter(|r| matches!(r, Err(StoreError::QuotaExceeded(_)))).count();
    assert_eq!((results.iter().filter(|r| r.is_ok()).count(), refused), (3, 3), "agents: {results:?}");
    assert_eq!(store.list_agents(acme.id).await.expect("list").len(), 3);

    let keys: Vec<_> = (0..6).map(|_| key_record(acme.id)).collect();
    let futures = keys
        .iter()
        .map(|key| {
            Box::pin(store.insert_api_key(key, 3)) as Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>
        })
        .collect();
    let results = join_all(futures).await;
    let refused = results.iter().filter(|r| matches!(r, Err(StoreError::QuotaExceeded(_)))).count();
    assert_eq!((results.iter().filter(|r| r.is_ok()).count(), refused), (3, 3), "keys: {results:?}");
    assert_eq!(store.list_api_keys(acme.id).await.expect("list").len(), 3);
}

/// Concurrent creates never take an agent past its entry or firewall
/// rule quota.
pub async fn concurrent_agent_quotas<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (a, _) = agent(store, acme.id).await;
    let specs: Vec<EntrySpec> = (1..=6).map(|i| entry(ListType::Blacklist, &format!("203.0.113.{i}"), None)).collect();
    let futures = specs
        .iter()
        .map(|spec| {
            Box::pin(store.create_ip_entry(a.id, spec, t0(), 3))
                as Pin<Box<dyn Future<Output = Result<IpEntry, StoreError>> + Send + '_>>
        })
        .collect();
    let results = join_all(futures).await;
    let refused = results.iter().filter(|r| matches!(r, Err(StoreError::QuotaExceeded(_)))).count();
    assert_eq!((results.iter().filter(|r| r.is_ok()).count(), refused), (3, 3), "entries: {results:?}");
    assert_eq!(store.list_ip_entries(a.id, None, t0()).await.expect("list").len(), 3);

    let rules: Vec<FirewallRule> = (1..=6).map(|port| drop_port(a.id, port)).collect();
    let futures = rules
        .iter()
        .map(|rule| {
            Box::pin(store.create_firewall_rule(rule, 3))
                as Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>
        })
        .collect();
    let results = join_all(futures).await;
    let refused = results.iter().filter(|r| matches!(r, Err(StoreError::QuotaExceeded(_)))).count();
    assert_eq!((results.iter().filter(|r| r.is_ok()).count(), refused), (3, 3), "firewall: {results:?}");
    let held = store.list_firewall_rules(a.id).await.expect("list").iter().filter(|f| !f.is_system()).count();
    assert_eq!(held, 3);
}

/// A key of `account`, stored; its hash.
async fn stored_key<S: Store>(store: &S, account: AccountId) -> (ApiKeyRecord, SecretHash) {
    let key = ApiKey::generate();
    let record = ApiKeyRecord { id: ApiKeyId::generate(), account_id: account, hash: key.hash(), created_at: t0() };
    store.insert_api_key(&record, 100).await.expect("insert key");
    (record, key.hash())
}

/// A new session of `key` at `t0()` + `minutes`.
fn panel_session(key: SecretHash, account: AccountId, minutes: i64) -> PanelSession {
    PanelSession::new(&SessionToken::generate(), key, account, t0() + Duration::minutes(minutes))
}

/// Whether the store still holds the session.
async fn holds<S: Store>(store: &S, session: &PanelSession) -> bool {
    store.session(&session.token_hash).await.expect("session").is_some()
}

/// A panel session is stored for an existing key, found by its token's
/// hash as it was stored, renewed, carries one notice taken once, and
/// ends; expired ones are purged.
pub async fn panel_sessions<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (_, key) = stored_key(store, acme.id).await;
    let session = panel_session(key, acme.id, 0);
    store.start_session(&session, 32).await.expect("start");
    assert_eq!(store.session(&session.token_hash).await.expect("session"), Some(session.clone()));
    assert!(
        matches!(store.start_session(&session, 32).await, Err(StoreError::Duplicate { .. })),
        "the same token twice"
    );
    let unknown_key = panel_session(ApiKey::generate().hash(), acme.id, 0);
    assert!(matches!(store.start_session(&unknown_key, 32).await, Err(StoreError::NotFound)), "no such key");
    assert!(!holds(store, &unknown_key).await);
    assert_eq!(store.session(&SessionToken::generate().hash()).await.expect("session"), None);

    let (seen, expires) = (t0() + Duration::minutes(5), t0() + Duration::hours(13));
    store.renew_session(&session.token_hash, seen, expires).await.expect("renew");
    let renewed = store.session(&session.token_hash).await.expect("session").expect("held");
    assert_eq!((renewed.last_seen_at, renewed.expires_at), (seen, expires));
    assert_eq!((renewed.created_at, &renewed.csrf), (session.created_at, &session.csrf), "the rest unchanged");

    assert_eq!(store.take_session_notice(&session.token_hash).await.expect("take"), None, "no notice yet");
    store.set_session_notice(&session.token_hash, b"first").await.expect("set");
    store.set_session_notice(&session.token_hash, b"second \x00\xff").await.expect("replace");
    assert_eq!(
        store.take_session_notice(&session.token_hash).await.expect("take").as_deref(),
        Some(&b"second \x00\xff"[..])
    );
    assert_eq!(store.take_session_notice(&session.token_hash).await.expect("take"), None, "taken once");

    let gone = SessionToken::generate().hash();
    store.renew_session(&gone, seen, expires).await.expect("renewing no session does nothing");
    store.set_session_notice(&gone, b"x").await.expect("a notice for no session does nothing");
    assert_eq!(store.take_session_notice(&gone).await.expect("take"), None);
    store.end_session(&gone).await.expect("ending no session does nothing");

    let old = panel_session(key, acme.id, 0);
    store.start_session(&old, 32).await.expect("start");
    store.set_session_notice(&old.token_hash, b"left").await.expect("set");
    // `old` expires at t0 + 12 h, `session` at t0 + 13 h.
    assert_eq!(
        store.purge_expired_sessions(t0() + Duration::hours(12) - Duration::seconds(1)).await.expect("purge"),
        0
    );
    assert_eq!(store.purge_expired_sessions(t0() + Duration::hours(12)).await.expect("purge"), 1, "at expiry");
    assert!(!holds(store, &old).await && holds(store, &session).await);
    store.end_session(&session.token_hash).await.expect("end");
    assert!(!holds(store, &session).await);
}

/// An account keeps at most `keep` sessions, its most recently used; other
/// accounts' sessions are never pushed out.
pub async fn panel_session_cap<S: Store>(store: &S) {
    let busy = account(store, "busy").await;
    let quiet = account(store, "quiet").await;
    let (_, busy_key) = stored_key(store, busy.id).await;
    let (_, quiet_key) = stored_key(store, quiet.id).await;
    let theirs = panel_session(quiet_key, quiet.id, 0);
    store.start_session(&theirs, 3).await.expect("start");
    let mut mine = Vec::new();
    for n in 0..10 {
        let session = panel_session(busy_key, busy.id, n);
        store.start_session(&session, 3).await.expect("start");
        mine.push(session);
        if n == 7 {
            // Used again: the most recently used of the old ones.
            store
                .renew_session(&mine[6].token_hash, t0() + Duration::minutes(20), t0() + Duration::hours(13))
                .await
                .expect("renew");
        }
    }
    let mut held = Vec::new();
    for (n, session) in mine.iter().enumerate() {
        if holds(store, session).await {
            held.push(n);
        }
    }
    assert_eq!(held, vec![6, 8, 9], "the three most recently used");
    assert!(holds(store, &theirs).await, "another account's session stays");
}

/// Revoking a key ends its sessions; replacing an account's keys ends the
/// removed keys' sessions; other keys' sessions stay.
pub async fn panel_sessions_end_with_their_key<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (first, first_hash) = stored_key(store, acme.id).await;
    let (second, second_hash) = stored_key(store, acme.id).await;
    let (_, third_hash) = stored_key(store, acme.id).await;
    let of_first = panel_session(first_hash, acme.id, 0);
    let of_second = panel_session(second_hash, acme.id, 0);
    let of_third = panel_session(third_hash, acme.id, 0);
    for session in [&of_first, &of_second, &of_third] {
        store.start_session(session, 32).await.expect("start");
    }
    store.revoke_api_key(first.id).await.expect("revoke");
    assert!(!holds(store, &of_first).await, "the revoked key's session ended");
    assert!(holds(store, &of_second).await && holds(store, &of_third).await);
    store.replace_api_keys(&second).await.expect("replace");
    assert!(holds(store, &of_second).await, "the kept key's session stays");
    assert!(!holds(store, &of_third).await, "a replaced key's session ended");
}

/// Concurrent sign-ins of one account never leave it above its cap, and
/// of concurrent takes of one notice exactly one gets it.
pub async fn concurrent_panel_sessions<S: Store>(store: &S) {
    let acme = account(store, "acme").await;
    let (_, key) = stored_key(store, acme.id).await;
    let sessions: Vec<PanelSession> = (0..12).map(|n| panel_session(key, acme.id, n)).collect();
    let futures = sessions
        .iter()
        .map(|s| {
            Box::pin(store.start_session(s, 3)) as Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>
        })
        .collect();
    for result in join_all(futures).await {
        result.expect("every start succeeds");
    }
    let mut held = 0;
    for session in &sessions {
        held += usize::from(holds(store, session).await);
    }
    assert!((1..=3).contains(&held), "{held} sessions held, at most 3");

    let session = panel_session(key, acme.id, 30);
    store.start_session(&session, 3).await.expect("start");
    store.set_session_notice(&session.token_hash, b"once").await.expect("set");
    let futures = (0..8)
        .map(|_| {
            Box::pin(store.take_session_notice(&session.token_hash))
                as Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send + '_>>
        })
        .collect();
    let taken: Vec<Option<Vec<u8>>> = join_all(futures).await.into_iter().map(|r| r.expect("take")).collect();
    assert_eq!(taken.iter().filter(|t| t.is_some()).count(), 1, "{taken:?}");
}
