//! The use cases against the in-memory store: every error condition the
//! API reference names, produced and checked here.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::error::ErrorKind;
use crate::firewall::{Action, FwProtocol, LimitUnit};
use crate::memory::MemoryStore;
use crate::metrics::{Counters, PortSample};
use crate::rule::{EngineRuleStatus, Protocol, RuleType};
use crate::store::SessionStore;
use crate::store::pass::{
    PassAccounts, PassAgents, PassFirewall, PassIpLists, PassMetrics, PassRules, PassSessions, PassSync,
};
use crate::store::{
    MockAccountStore, MockAgentStore, MockFirewallStore, MockIpListStore, MockMetricsStore, MockRuleStore,
    MockSessionStore, MockSyncStore,
};
use crate::sync::{AppliedIds, ItemFailure, ItemRef};
use crate::testing::t0;
use crate::verdict::DropCounts;

type Service = Pakkt<MemoryStore, ManualClock>;

struct World {
    pakkt: Service,
    clock: ManualClock,
    key: String,
    session: Session,
}

async fn world() -> World {
    let clock = ManualClock::new(t0());
    let pakkt = Pakkt::with_clock(MemoryStore::new(), clock.clone());
    let (_, key) = pakkt.create_api_key(&"acme".parse().expect("name")).await.expect("key");
    let session = pakkt.authenticate(Some(key.expose())).await.expect("session");
    World { pakkt, clock, key: key.expose().to_owned(), session }
}

impl World {
    /// A new agent that has synced once (so engine rules may be created).
    async fn connected_agent(&self) -> (AgentId, String) {
        let created = self
            .pakkt
            .create_agent(&self.session, &CreateAgentRequest { name: "VPS Paris".into() })
            .await
            .expect("agent");
        let report = SyncReport {
            host: crate::agent::HostInfo { iface: Some("ens3".into()), ..Default::default() },
            ..SyncReport::default()
        };
        self.pakkt.agent_sync(Some(&created.token), report, StdDuration::ZERO).await.expect("first sync");
        (created.agent.id, created.token)
    }

    async fn other_session(&self) -> Session {
        let (_, key) = self.pakkt.create_api_key(&"other".parse().expect("name")).await.expect("key");
        self.pakkt.authenticate(Some(key.expose())).await.expect("session")
    }
}

fn rule(protocol: Protocol, start: u16, end: u16, max_pps: u32) -> CreateEngineRuleRequest {
    CreateEngineRuleRequest {
        name: "Rate Limit".into(),
        port_range_start: start,
        port_range_end: end,
        protocol,
        rule_type: RuleType::RateLimit,
        max_pps,
        max_port_pps: 0,
        min_pkt_size: 0,
        max_pkt_size: 0,
    }
}

fn blacklist(ip: &str) -> CreateIpEntryRequest {
    CreateIpEntryRequest {
        list_type: ListType::Blacklist,
        ip_address: ip.into(),
        reason: Some("UDP flood detected".into()),
        expires_at: None,
    }
}

fn block_redis() -> CreateFirewallRuleRequest {
    CreateFirewallRuleRequest {
        name: "Block Redis".into(),
        chain: None,
        protocol: Some(FwProtocol::Tcp),
        port_start: Some(6379),
        port_end: Some(6379),
        action: Action::Drop,
        limit_rate: None,
        limit_unit: None,
        conntrack: None,
    }
}

fn kind<T: std::fmt::Debug>(result: Result<T>) -> ErrorKind {
    result.expect_err("an error").kind()
}

// ----- 401 / 402 / 429 ---------------------------------------------------------

#[tokio::test]
async fn missing_malformed_or_unknown_keys_are_unauthorized() {
    let w = world().await;
    for key in [None, Some(""), Some("nope"), Some("pakkt_pub_short"), Some("pakkt_pub_0123456789012345678901234567")] {
        assert_eq!(kind(w.pakkt.authenticate(key).await), ErrorKind::Unauthorized, "{key:?}");
    }
    assert_eq!(ErrorKind::Unauthorized.code(), "unauthorized");
}

#[tokio::test]
async fn a_suspended_account_gets_402_until_resumed() {
    let w = world().await;
    let acme = "acme".parse().expect("name");
    w.pakkt.set_suspended(&acme, true).await.expect("suspend");
    let err = w.pakkt.authenticate(Some(&w.key)).await.expect_err("suspended");
    assert_eq!(err.kind(), ErrorKind::AccountSuspended);
    assert_eq!(err.kind().code(), "account_suspended");
    w.pakkt.set_suspended(&acme, false).await.expect("resume");
    assert!(w.pakkt.authenticate(Some(&w.key)).await.is_ok());
    let missing = w.pakkt.set_suspended(&"ghost".parse().expect("name"), true).await;
    assert_eq!(kind(missing), ErrorKind::NotFound);
}

#[tokio::test]
async fn the_61st_request_in_a_rolling_minute_is_rate_limited() {
    let w = world().await;
    // `world` already spent one request.
    for _ in 0..59 {
        w.pakkt.authenticate(Some(&w.key)).await.expect("within the limit");
    }
    match w.pakkt.authenticate(Some(&w.key)).await {
        Err(Error::RateLimited { limit, retry_after }) => {
            assert_eq!(limit, 60);
            assert_eq!(retry_after, StdDuration::from_mins(1));
        }
        other => panic!("expected 429, got {other:?}"),
    }
    w.clock.advance(Duration::seconds(60));
    let session = w.pakkt.authenticate(Some(&w.key)).await.expect("a minute later");
    assert_eq!(session.rate.limit, 60);
}

#[tokio::test]
async fn a_revoked_key_stops_working() {
    let w = world().await;
    w.pakkt.revoke_api_key(w.session.key_id).await.expect("revoke");
    assert_eq!(kind(w.pakkt.authenticate(Some(&w.key)).await), ErrorKind::Unauthorized);
    assert_eq!(kind(w.pakkt.revoke_api_key(w.session.key_id).await), ErrorKind::NotFound);
}

#[tokio::test]
async fn an_account_lists_creates_and_revokes_its_own_keys() {
    let w = world().await;
    let (created, secret) = w.pakkt.create_account_key(&w.session).await.expect("create");
    let ids: Vec<ApiKeyId> = w.pakkt.list_account_keys(&w.session).await.expect("list").iter().map(|k| k.id).collect();
    assert_eq!(ids, vec![w.session.key_id, created.id]);
    assert!(w.pakkt.authenticate(Some(secret.expose())).await.is_ok(), "the new key works");

    let other = w.other_session().await;
    assert_eq!(w.pakkt.list_account_keys(&other).await.expect("list").len(), 1, "only its own key");
    assert_eq!(kind(w.pakkt.revoke_account_key(&other, created.id).await), ErrorKind::NotFound);

    w.pakkt.revoke_account_key(&w.session, created.id).await.expect("revoke");
    assert_eq!(kind(w.pakkt.authenticate(Some(secret.expose())).await), ErrorKind::Unauthorized);
    assert_eq!(kind(w.pakkt.revoke_account_key(&w.session, created.id).await), ErrorKind::NotFound);
}

#[tokio::test]
async fn reauthentication_by_hash_is_unmetered_and_sees_revocation_and_suspension() {
    let w = world().await;
    let hash = crate::account::SecretHash::of(&w.key);
    for _ in 0..100 {
        let session = w.pakkt.reauthenticate(&hash).await.expect("not rate limited");
        assert_eq!(session.key_id, w.session.key_id);
    }
    assert!(w.pakkt.authenticate(Some(&w.key)).await.is_ok(), "the API budget is untouched");
    let acme = "acme".parse().expect("name");
    w.pakkt.set_suspended(&acme, true).await.expect("suspend");
    assert_eq!(kind(w.pakkt.reauthenticate(&hash).await), ErrorKind::AccountSuspended);
    w.pakkt.set_suspended(&acme, false).await.expect("resume");
    w.pakkt.revoke_api_key(w.session.key_id).await.expect("revoke");
    assert_eq!(kind(w.pakkt.reauthenticate(&hash).await), ErrorKind::Unauthorized);
}

#[tokio::test]
async fn bootstrap_makes_one_key_the_only_key_of_default() {
    let w = world().await;
    let raw = "pakkt_pub_0123456789abcdefghijABCDEFGHIJ";
    w.pakkt.create_api_key(&"default".parse().expect("name")).await.expect("another key on default");
    w.pakkt.bootstrap_api_key(raw).await.expect("bootstrap");
    w.pakkt.bootstrap_api_key(raw).await.expect("again: idempotent");
    let session = w.pakkt.authenticate(Some(raw)).await.expect("bootstrap key works");
    assert_eq!(session.account.name.as_str(), DEFAULT_ACCOUNT);
    assert_eq!(kind(w.pakkt.bootstrap_api_key("pakkt_pub_bad").await), ErrorKind::ValidationFailed);
    assert_eq!(kind(w.pakkt.bootstrap_api_key(&w.key).await), ErrorKind::Conflict, "a key of another account");
}

// ----- panel sessions ---------------------------------------------------------------

#[tokio::test]
async fn a_panel_signs_in_counted_once_and_its_session_is_found_by_its_token() {
    let w = world().await;
    let (token, signed) = w.pakkt.sign_in(&w.key).await.expect("sign in");
    assert_eq!(signed.session.key_id, w.session.key_id);
    let stored = w.pakkt.store().session(&token.hash()).await.expect("store").expect("stored");
    assert_eq!(stored.key_hash, crate::account::SecretHash::of(&w.key), "the key's digest, never the key");
    for _ in 0..100 {
        let found = w.pakkt.panel_session(token.expose()).await.expect("lookup").expect("live");
        assert_eq!(found.panel.csrf, signed.panel.csrf);
    }
    // `world` and the sign-in spent two requests; the lookups none.
    for _ in 0..58 {
        w.pakkt.authenticate(Some(&w.key)).await.expect("within the limit");
    }
    assert_eq!(kind(w.pakkt.sign_in(&w.key).await), ErrorKind::RateLimited, "a sign-in is counted");
    assert!(w.pakkt.panel_session("not a token").await.expect("lookup").is_none());
    assert!(w.pakkt.panel_session(crate::panel::SessionToken::generate().expose()).await.expect("lookup").is_none());
    assert_eq!(kind(w.pakkt.sign_in("pakkt_pub_nope").await), ErrorKind::Unauthorized);
    w.pakkt.sign_out(token.expose()).await.expect("sign out");
    assert!(w.pakkt.panel_session(token.expose()).await.expect("lookup").is_none(), "signed out");
    w.pakkt.sign_out("garbage").await.expect("nothing to end");
}

#[tokio::test]
async fn a_panel_session_ends_after_twelve_hours_unused_and_lasts_while_used() {
    let w = world().await;
    let (token, _) = w.pakkt.sign_in(&w.key).await.expect("sign in");
    for _ in 0..3 {
        w.clock.advance(Duration::hours(11));
        assert!(w.pakkt.panel_session(token.expose()).await.expect("lookup").is_some(), "used: renewed");
    }
    w.clock.advance(Duration::hours(12));
    assert!(w.pakkt.panel_session(token.expose()).await.expect("lookup").is_none(), "12 h unused");
    assert!(w.pakkt.store().session(&token.hash()).await.expect("store").is_none(), "and deleted");

    let (stale, _) = w.pakkt.sign_in(&w.key).await.expect("sign in");
    w.clock.advance(Duration::hours(13));
    w.pakkt.sign_in(&w.key).await.expect("another sign-in");
    assert!(w.pakkt.store().session(&stale.hash()).await.expect("store").is_none(), "swept by the next sign-in");
}

#[tokio::test]
async fn a_panel_session_ends_with_its_key_or_its_account_s_suspension() {
    let w = world().await;
    let (second, secret) = w.pakkt.create_account_key(&w.session).await.expect("key");
    let (mine, _) = w.pakkt.sign_in(&w.key).await.expect("sign in");
    let (other, _) = w.pakkt.sign_in(secret.expose()).await.expect("sign in");
    w.pakkt.revoke_account_key(&w.session, second.id).await.expect("revoke");
    assert!(w.pakkt.panel_session(other.expose()).await.expect("lookup").is_none(), "its key was revoked");
    assert!(w.pakkt.panel_session(mine.expose()).await.expect("lookup").is_some(), "another key's stays");

    let acme = "acme".parse().expect("name");
    w.pakkt.set_suspended(&acme, true).await.expect("suspend");
    assert!(w.pakkt.panel_session(mine.expose()).await.expect("lookup").is_none(), "suspended");
    w.pakkt.set_suspended(&acme, false).await.expect("resume");
    assert!(w.pakkt.panel_session(mine.expose()).await.expect("lookup").is_none(), "ended, not paused");
}

#[tokio::test]
async fn a_panel_notice_is_taken_once() {
    let w = world().await;
    let (token, signed) = w.pakkt.sign_in(&w.key).await.expect("sign in");
    assert_eq!(w.pakkt.take_panel_notice(&signed.panel).await.expect("take"), None);
    w.pakkt.set_panel_notice(&signed.panel, b"sealed").await.expect("set");
    let found = w.pakkt.panel_session(token.expose()).await.expect("lookup").expect("live");
    assert_eq!(w.pakkt.take_panel_notice(&found.panel).await.expect("take").as_deref(), Some(&b"sealed"[..]));
    assert_eq!(w.pakkt.take_panel_notice(&found.panel).await.expect("take"), None, "once");
}

#[tokio::test]
async fn a_failing_session_store_keeps_the_session() {
    let mut store = MockStore::default();
    store.sessions.expect_session().returning(|_| Err(StoreError::Backend("down".into())));
    store.sessions.expect_end_session().never();
    let pakkt = Pakkt::with_clock(store, ManualClock::new(t0()));
    let token = crate::panel::SessionToken::generate();
    assert_eq!(kind(pakkt.panel_session(token.expose()).await), ErrorKind::Internal);
}

// ----- 400 ------------------------------------------------------------------------

#[test]
fn malformed_ids_and_query_values_are_bad_requests() {
    let err: Error = "01J5".parse::<AgentId>().expect_err("short").into();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert_eq!(err.kind().code(), "bad_request");
    for err in [
        Error::from("2h".parse::<Window>().expect_err("window")),
        Error::from("1d".parse::<Interval>().expect_err("interval")),
        Error::from("grey".parse::<ListType>().expect_err("type")),
        Error::from("Games".parse::<Category>().expect_err("category")),
    ] {
        assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
    }
}

// ----- 404 ------------------------------------------------------------------------

#[tokio::test]
async fn another_accounts_items_are_not_found_everywhere() {
    let w = world().await;
    let (agent, _) = w.connected_agent().await;
    let created =
        w.pakkt.create_engine_rule(&w.session, agent, &rule(Protocol::Udp, 30120, 30120, 5000)).await.expect("rule");
    let entry = w.pakkt.create_ip_entry(&w.session, agent, &blacklist("203.0.113.42")).await.expect("entry");
    let fw = w.pakkt.create_firewall_rule(&w.session, agent, &block_redis()).await.expect("fw");
    let other = w.other_session().await;
    let p = &w.pakkt;
    let not_found = [
        kind(p.get_agent(&other, agent).await),
        kind(p.delete_agent(&other, agent).await),
        kind(p.list_engine_rules(&other, agent).await),
        kind(p.create_engine_rule(&other, agent, &rule(Protocol::Udp, 1, 1, 1)).await),
        kind(p.delete_engine_rule(&other, agent, created.id).await),
        kind(p.list_ip_entries(&other, agent, None).await),
        kind(p.create_ip_entry(&other, agent, &blacklist("198.51.100.1")).await),
        kind(p.delete_ip_entry(&other, agent, entry.id).await),
        kind(p.metrics_summary(&other, agent, Window::Hour).await),
        kind(p.metrics_history(&other, agent, HistoryQuery::default()).await),
        kind(p.apply_template(&other, agent, "tpl_fivem_shield").await),
        kind(p.list_firewall_rules(&other, agent).await),
        kind(p.create_firewall_rule(&other, agent, &block_redis()).await),
        kind(p.delete_firewall_rule(&other, agent, fw.id).await),
    ];
    assert!(not_found.iter().all(|k| *k == ErrorKind::NotFound), "{not_found:?}");
    assert!(p.list_agents(&other).await.expect("list").is_empty());
    // The owner still sees everything.
    assert_eq!(p.list_engine_rules(&w.session, agent).await.expect("rules").len(), 1);

    // Unknown IDs on one's own agent are 404 too.
    assert_eq!(kind(p.delete_engine_rule(&w.session, agent, EngineRuleId::generate()).await), ErrorKind::NotFound);
    assert_eq!(kind(p.delete_ip_entry(&w.session, agent, IpEntryId::generate()).await), ErrorKind::NotFound);
    assert_eq!(kind(p.delete_firewall_rule(&w.session, agent, FirewallRuleId::generate()).await), ErrorKind::NotFound);
    assert_eq!(kind(p.apply_template(&w.session, agent, "tpl_nothing").await), ErrorKind::NotFound);
    assert_eq!(ErrorKind::NotFound.code(), "not_found");
}

// ----- engine rules: 201, 422, 409 -------------------------------------------------

#[tokio::test]
async fn engine_rules_need_a_connected_agent() {
    let w = world().await;
    let created = w.pakkt.create_agent(&w.session, &CreateAgentRequest { name: "fresh".into() }).await.expect("agent");
    let err = w
        .pakkt
        .create_engine_rule(&w.session, created.agent.id, &rule(Protocol::Tcp, 22, 22, 500))
        .await
        .expect_err("pending");
    assert!(matches!(err, Error::AgentNotConnected));
    assert_eq!(err.kind(), ErrorKind::ValidationFailed);
    assert_eq!(err.kind().code(), "validation_failed");
    // Firewall rules and IP lists do not need the interface.
    assert!(w.pakkt.create_firewall_rule(&w.session, created.agent.id, &block_redis()).await.is_ok());
    assert!(w.pakkt.create_ip_entry(&w.session, created.agent.id, &blacklist("203.0.113.42")).await.is_ok());
}

#[tokio::test]
async fn engine_rule_lifecycle_through_the_use_cases() {
    let w = world().await;
    let (agent, token) = w.connected_agent().await;
    let ssh = w.pakkt.create_engine_rule(&w.session, agent, &rule(Protocol::Tcp, 22, 22, 500)).await.expect("201");
    assert_eq!((ssh.name.as_str(), ssh.status, ssh.created_at), ("Rate Limit", EngineRuleStatus::PendingLoad, t0()));
    let listed = w.pakkt.list_engine_rules(&w.session, agent).await.expect("programs");
    assert_eq!(listed[0].iface.as_deref(), Some("ens3"), "interface comes from the agent");
    assert_eq!(listed[0].filename, "pakkt_engine.bpf.o");
    assert_eq!(listed[0].slot, Some(0));

    // Conflicts: same range and overlapping protocol; TCP and UDP coexist.
    let dup = w.pakkt.create_engine_rule(&w.session, agent, &rule(Protocol::Any, 22, 22, 10)).await.expect_err("409");
    assert_eq!(dup.kind(), ErrorKind::Conflict);
    assert_eq!(dup.kind().code(), "conflict");
    assert!(dup.to_string().contains(&ssh.id.to_string()), "{dup}");
    w.pakkt
        .create_engine_rule(&w.session, agent, &rule(Protocol::Udp, 22, 22, 10))
        .await
        .expect("UDP/22 beside TCP/22");

    // 422 beats 409: a duplicate that is also invalid is invalid.
    let invalid_dup = rule(Protocol::Tcp, 22, 22, 0);
    assert_eq!(kind(w.pakkt.create_engine_rule(&w.session, agent, &invalid_dup).await), ErrorKind::ValidationFailed);

    // The agent confirms: loaded.
    let report = SyncReport {
        revision: 0,
        applied: AppliedIds { engine_rules: vec![ssh.id], ..AppliedIds::default() },
        ..SyncReport::default()
    };
    w.clock.advance(Duration::seconds(1));
    w.pakkt.agent_sync(Some(&token), report, StdDuration::ZERO).await.expect("sync");
    let listed = w.pakkt.list_engine_rules(&w.session, agent).await.expect("programs");
    let loaded = listed.iter().find(|r| r.id == ssh.id).expect("ssh");
    assert_eq!((loaded.status, loaded.loaded_at), (EngineRuleStatus::Loaded, Some(t0() + Duration::seconds(1))));

    // DELETE: 204, repeatable while pending, then gone when the agent confirms.
    w.pakkt.delete_engine_rule(&w.session, agent, ssh.id).await.expect("204");
    w.pakkt.delete_engine_rule(&w.session, agent, ssh.id).await.expect("204 again while pending");
    w.pakkt.agent_sync(Some(&token), SyncReport::default(), StdDuration::ZERO).await.expect("sync");
    assert!(w.pakkt.list_engine_rules(&w.session, agent).await.expect("programs").iter().all(|r| r.id != ssh.id));
    assert_eq!(kind(w.pakkt.delete_engine_rule(&w.session, agent, ssh.id).await), ErrorKind::NotFound);
}

#[tokio::test]
async fn every_engine_rule_validation_is_a_422() {
    let w = world().await;
    let (agent, _) = w.connected_agent().await;
    let block = |protocol, start, end| CreateEngineRuleRequest {
        rule_type: RuleType::Block,
        max_pps: 0,
        ..rule(protocol, start, end, 0)
    };
    let cases = [
        ("port 0", rule(Protocol::Tcp, 0, 22, 5)),
        ("end 0", rule(Protocol::Udp, 22, 0, 5)),
        ("reversed", rule(Protocol::Udp, 30130, 30120, 5)),
        ("icmp with ports", rule(Protocol::Icmp, 1, 1, 5)),
        ("rate_limit without limits", rule(Protocol::Udp, 53, 53, 0)),
        ("block with limits", CreateEngineRuleRequest { rule_type: RuleType::Block, ..rule(Protocol::Udp, 53, 53, 5) }),
        (
            "sizes reversed",
            CreateEngineRuleRequest { min_pkt_size: 900, max_pkt_size: 100, ..rule(Protocol::Udp, 53, 53, 5) },
        ),
        ("blank name", CreateEngineRuleRequest { name: "  ".into(), ..block(Protocol::Udp, 53, 53) }),
        (
            "protect without a port budget",
            CreateEngineRuleRequest { rule_type: RuleType::Protect, max_port_pps: 0, ..rule(Protocol::Udp, 53, 53, 5) },
        ),
    ];
    for (what, request) in cases {
        let err = w.pakkt.create_engine_rule(&w.session, agent, &request).await.expect_err(what);
        assert!(matches!(err, Error::Invalid(_)), "{what}: {err:?}");
    }
    assert!(w.pakkt.create_engine_rule(&w.session, agent, &block(Protocol::Icmp, 0, 0)).await.is_ok());
    assert!(w.pakkt.list_engine_rules(&w.session, agent).await.expect("list").len() == 1, "nothing else was stored");
    let protect =
        CreateEngineRuleRequest { rule_type: RuleType::Protect, max_port_pps: 1, ..rule(Protocol::Udp, 53, 53, 0) };
    assert!(
        w.pakkt.create_engine_rule(&w.session, agent, &protect).await.is_ok(),
        "max_pps 0: verified sources unlimited"
    );
}

#[tokio::test]
async fn the_257th_rule_gets_422_slots_exhausted() {
    let w = world().await;
    let (agent, _) = w.connected_agent().await;
    for port in 1..=256u16 {
        w.pakkt.create_engine_rule(&w.session, agent, &rule(Protocol::Udp, port, port, 100)).await.expect("fits");
    }
    let err =
        w.pakkt.create_engine_rule(&w.session, agent, &rule(Protocol::Udp, 999, 999, 100)).await.expect_err("full");
    assert!(matches!(err, Error::SlotsExhausted), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::ValidationFailed);
}

// ----- IP lists -------------------------------------------------------------------------

#[tokio::test]
async fn ip_list_rules() {
    let w = world().await;
    let (agent, _) = w.connected_agent().await;
    let created = w.pakkt.create_ip_entry(&w.session, agent, &blacklist("203.0.113.42")).await.expect("201");
    assert_eq!(created.status, crate::ip_list::EntryStatus::PendingAdd);
    assert_eq!(kind(w.pakkt.create_ip_entry(&w.session, agent, &blacklist("203.0.113.42")).await), ErrorKind::Conflict);
    assert_eq!(
        kind(w.pakkt.create_ip_entry(&w.session, agent, &blacklist("10.0.0.1/8")).await),
        ErrorKind::ValidationFailed
    );
    let past = CreateIpEntryRequest { expires_at: Some(t0() - Duration::seconds(1)), ..blacklist("198.51.100.1") };
    assert_eq!(kind(w.pakkt.create_ip_entry(&w.session, agent, &past).await), ErrorKind::ValidationFailed);
    let white_expiring = CreateIpEntryRequest {
        list_type: ListType::Whitelist,
        expires_at: Some(t0() + Duration::hours(1)),
        ..blacklist("198.51.100.1")
    };
    assert_eq!(kind(w.pakkt.create_ip_entry(&w.session, agent, &white_expiring).await), ErrorKind::ValidationFailed);
    let white = CreateIpEntryRequest { list_type: ListType::Whitelist, expires_at: None, ..blacklist("2001:db8::/48") };
    w.pakkt.create_ip_entry(&w.session, agent, &white).await.expect("v6 whitelist");
    let soon = CreateIpEntryRequest { expires_at: Some(t0() + Duration::seconds(2)), ..blacklist("198.51.100.2") };
    w.pakkt.create_ip_entry(&w.session, agent, &soon).await.expect("expiring");

    let all = w.pakkt.list_ip_entries(&w.session, agent, None).await.expect("all");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].ip_address, "203.0.113.42");
    assert_eq!(all[0].reason.as_deref(), Some("UDP flood detected"));
    assert_eq!(w.pakkt.list_ip_entries(&w.session, agent, Some(ListType::Whitelist)).await.expect("white").len(), 1);
    w.clock.advance(Duration::seconds(2));
    assert_eq!(
        w.pakkt.list_ip_entries(&w.session, agent, Some(ListType::Blacklist)).await.expect("black").len(),
        1,
        "expired"
    );

    w.pakkt.delete_ip_entry(&w.session, agent, created.id).await.expect("204");
    w.pakkt.delete_ip_entry(&w.session, agent, created.id).await.expect("204 again");
    let listed = w.pakkt.list_ip_entries(&w.session, agent, Some(ListType::Blacklist)).await.expect("black");
    assert_eq!(listed[0].status, crate::ip_list::EntryStatus::PendingRemove);
}

// ----- firewall -------------------------------------------------------------------------

#[tokio::test]
async fn firewall_rules_and_system_rules() {
    let w = world().await;
    let (agent, _) = w.connected_agent().await;
    let listed = w.pakkt.list_firewall_rules(&w.session, agent).await.expect("list");
    assert_eq!(listed.len(), 3, "every agent starts with its system rules");
    assert!(listed.iter().all(|r| r.is_system));
    let system = listed[0].id;
    let err = w.pakkt.delete_firewall_rule(&w.session, agent, system).await.expect_err("system");
    assert!(matches!(err, Error::SystemRule));
    assert_eq!(err.kind(), ErrorKind::ValidationFailed);

    let created = w.pakkt.create_firewall_rule(&w.session, agent, &block_redis()).await.expect("201");
    assert_eq!((created.name.as_str(), created.status), ("Block Redis", crate::ip_list::EntryStatus::PendingAdd));
    let limit = CreateFirewallRuleRequest { action: Action::Limit, ..block_redis() };
    assert_eq!(kind(w.pakkt.create_firewall_rule(&w.session, agent, &limit).await), ErrorKind::ValidationFailed);
    let limit = CreateFirewallRuleRequest {
        name: "Anti brute-force SSH".into(),
        port_start: Some(22),
        port_end: Some(22),
        limit_rate: Some(5),
        limit_unit: Some(LimitUnit::Minute),
        conntrack: Some("new".into()),
        ..limit
    };
    w.pakkt.create_firewall_rule(&w.session, agent, &limit).await.expect("limit");
    let listed = w.pakkt.list_firewall_rules(&w.session, agent).await.expect("list");
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[3].id, created.id, "user rules follow system rules in creation order");
    assert_eq!((listed[4].limit_rate, listed[4].conntrack.as_deref()), (Some(5), Some("new")));
    w.pakkt.delete_firewall_rule(&w.session, agent, created.id).await.expect("204");
    w.pakkt.delete_firewall_rule(&w.session, agent, created.id).await.expect("204 again");
}

// ----- marketplace ---------------------------------------------------------------------

#[tokio::test]
async fn templates_filter_and_apply() {
    let w = world().await;
    let (agent, _) = w.connected_agent().await;
    let all = w.pakkt.list_templates(&w.session, None);
    let gaming = w.pakkt.list_templates(&w.session, Some(Category::Gaming));
    assert!(all.len() >= 20 && !gaming.is_empty() && gaming.len() < all.len());
    assert!(gaming.iter().all(|t| t.category == Category::Gaming));

    let applied = w.pakkt.apply_template(&w.session, agent, "tpl_fivem_shield").await.expect("xdp");
    let AppliedTemplate::Engine(rule) = applied else { panic!("an engine rule") };
    assert_eq!((rule.name.as_str(), rule.port_range_start, rule.max_pps), ("FiveM Shield", 30120, 5000));
    assert_eq!(kind(w.pakkt.apply_template(&w.session, agent, "tpl_fivem_shield").await), ErrorKind::Conflict);
    let applied = w.pakkt.apply_template(&w.session, agent, "tpl_nft_redis_block").await.expect("nftables");
    assert!(matches!(applied, AppliedTemplate::Firewall(ref f) if f.port_start == Some(6379)));
}

// ----- metrics -----------------------------------------------------------------------------

#[tokio::test]
async fn metrics_reports_feed_summary_and_history() {
    let w = world().await;
    let (agent, token) = w.connected_agent().await;
    let sample = |port, passed, dropped| PortSample {
        port,
        counters: Counters {
            packets_passed: passed,
            packets_dropped: dropped,
            bytes_passed: passed * 64,
            bytes_dropped: dropped * 64,
            dropped_by_reason: DropCounts { rate: dropped / 2, size: dropped - dropped / 2, ..DropCounts::default() },
        },
    };
    let report = MetricsReport::new("01J5AAAA", vec![sample(30120, 85_420, 3200), sample(22, 10, 0)]);
    assert!(w.pakkt.agent_report_metrics(Some(&token), &report).await.expect("stored"));
    assert!(!w.pakkt.agent_report_metrics(Some(&token), &report).await.expect("retry"), "counted once");
    let bad = MetricsReport::new("no spaces", vec![]);
    assert_eq!(kind(w.pakkt.agent_report_metrics(Some(&token), &bad).await), ErrorKind::ValidationFailed);
    let twice = MetricsReport::new("x", vec![sample(1, 1, 1), sample(1, 1, 1)]);
    assert_eq!(kind(w.pakkt.agent_report_metrics(Some(&token), &twice).await), ErrorKind::ValidationFailed);

    let summary = w.pakkt.metrics_summary(&w.session, agent, Window::TenMinutes).await.expect("summary");
    assert_eq!((summary.total_passed.get(), summary.total_dropped.get()), (85_430, 3200));
    assert_eq!(summary.top_ports[0].port, 30120);
    let reasons = &summary.dropped_by_reason;
    assert_eq!((reasons.rate.get(), reasons.size.get(), reasons.blacklist.get()), (1600, 1600, 0));
    assert_eq!(summary.top_ports[0].dropped_by_reason.rate.get(), 1600);
    w.clock.advance(Duration::minutes(11));
    let later = w.pakkt.metrics_summary(&w.session, agent, Window::TenMinutes).await.expect("summary");
    assert_eq!(later.total_passed.get(), 0, "out of the 10-minute window");
    assert_eq!(w.pakkt.metrics_summary(&w.session, agent, Window::Hour).await.expect("1h").total_passed.get(), 85_430);

    let history = w.pakkt.metrics_history(&w.session, agent, HistoryQuery::default()).await.expect("history");
    assert_eq!(history.len(), 2, "one row per (bucket, port)");
    let one_port = HistoryQuery { port: Some(30120), interval: Interval::FiveMinutes, ..HistoryQuery::default() };
    let history = w.pakkt.metrics_history(&w.session, agent, one_port).await.expect("history");
    assert_eq!((history.len(), history[0].bucket, history[0].packets_dropped.get()), (1, t0(), 3200));
    assert_eq!(history[0].dropped_by_reason.size.get(), 1600);

    let backwards = HistoryQuery { from: Some(t0()), to: Some(t0() - Duration::hours(1)), ..HistoryQuery::default() };
    assert_eq!(kind(w.pakkt.metrics_history(&w.session, agent, backwards).await), ErrorKind::ValidationFailed);
    let too_long = HistoryQuery { from: Some(t0() - Duration::days(30)), to: Some(t0()), ..HistoryQuery::default() };
    assert_eq!(kind(w.pakkt.metrics_history(&w.session, agent, too_long).await), ErrorKind::ValidationFailed);
    let hourly = HistoryQuery { interval: Interval::Hour, ..too_long };
    assert!(w.pakkt.metrics_history(&w.session, agent, hourly).await.is_ok(), "30 days hourly fits");
}

// ----- agents and sync ---------------------------------------------------------------------

#[tokio::test]
async fn agents_are_created_listed_and_deleted_with_their_token() {
    let w = world().await;
    let created =
        w.pakkt.create_agent(&w.session, &CreateAgentRequest { name: " VPS Paris ".into() }).await.expect("201");
    assert_eq!(created.agent.name, "VPS Paris");
    assert_eq!(created.agent.status, crate::agent::AgentStatus::Pending);
    assert!(created.token.starts_with("pakkt_agent_"));
    assert_eq!(
        kind(w.pakkt.create_agent(&w.session, &CreateAgentRequest { name: String::new() }).await),
        ErrorKind::ValidationFailed
    );

    w.pakkt.agent_sync(Some(&created.token), SyncReport::default(), StdDuration::ZERO).await.expect("sync");
    assert_eq!(
        w.pakkt.get_agent(&w.session, created.agent.id).await.expect("get").status,
        crate::agent::AgentStatus::Online
    );
    w.clock.advance(Duration::seconds(31));
    assert_eq!(w.pakkt.list_agents(&w.session).await.expect("list")[0].status, crate::agent::AgentStatus::Offline);

    w.pakkt.delete_agent(&w.session, created.agent.id).await.expect("204");
    assert_eq!(
        kind(w.pakkt.agent_sync(Some(&created.token), SyncReport::default(), StdDuration::ZERO).await),
        ErrorKind::Unauthorized
    );
    assert_eq!(kind(w.pakkt.delete_agent(&w.session, created.agent.id).await), ErrorKind::NotFound);
}

#[tokio::test]
async fn keys_and_tokens_are_not_interchangeable() {
    let w = world().await;
    let (_, token) = w.connected_agent().await;
    assert_eq!(
        kind(w.pakkt.authenticate(Some(&token)).await),
        ErrorKind::Unauthorized,
        "agent token on the public API"
    );
    assert_eq!(
        kind(w.pakkt.agent_sync(Some(&w.key), SyncReport::default(), StdDuration::ZERO).await),
        ErrorKind::Unauthorized
    );
    assert_eq!(kind(w.pakkt.agent_sync(None, SyncReport::default(), StdDuration::ZERO).await), ErrorKind::Unauthorized);
}

#[tokio::test]
async fn sync_reports_failures_and_sanitises_what_agents_send() {
    let w = world().await;
    let (agent, token) = w.connected_agent().await;
    let created = w.pakkt.create_engine_rule(&w.session, agent, &rule(Protocol::Udp, 53, 53, 10)).await.expect("rule");
    let report = SyncReport {
        host: crate::agent::HostInfo { hostname: Some(format!("evil\u{7}{}", "h".repeat(1000))), ..Default::default() },
        failures: vec![ItemFailure { item: ItemRef::EngineRule(created.id), message: "x".repeat(10_000) }],
        ..SyncReport::default()
    };
    let desired = w.pakkt.agent_sync(Some(&token), report, StdDuration::ZERO).await.expect("sync");
    assert!(desired.engine_rules.is_empty(), "a failed rule leaves the desired state");
    let rules = w.pakkt.list_engine_rules(&w.session, agent).await.expect("rules");
    assert_eq!(rules[0].status, EngineRuleStatus::Failed);
    assert_eq!(rules[0].slot, None);
    assert_eq!(rules[0].status_message.as_ref().map(String::len), Some(MAX_STATUS_MESSAGE));
    let agent_view = w.pakkt.get_agent(&w.session, agent).await.expect("agent");
    assert_eq!(agent_view.hostname.as_ref().map(String::len), Some(255));
    // A failed rule is deleted at once.
    w.pakkt.delete_engine_rule(&w.session, agent, created.id).await.expect("204");
    assert!(w.pakkt.list_engine_rules(&w.session, agent).await.expect("rules").is_empty());
}

fn live() -> Arc<Pakkt<MemoryStore>> {
    Arc::new(Pakkt::new(MemoryStore::new()))
}

#[tokio::test]
async fn a_change_wakes_a_waiting_sync_within_100_ms() {
    let pakkt = live();
    let (_, key) = pakkt.create_api_key(&"acme".parse().expect("name")).await.expect("key");
    let session = pakkt.authenticate(Some(key.expose())).await.expect("session");
    let created = pakkt.create_agent(&session, &CreateAgentRequest { name: "a".into() }).await.expect("agent");
    let first = pakkt.agent_sync(Some(&created.token), SyncReport::default(), MAX_POLL).await.expect("first sync");
    assert_eq!(first.firewall_rules.len(), 3, "the first sync answers at once with the system rules");

    let waiting = {
        let pakkt = Arc::clone(&pakkt);
        let token = created.token.clone();
        let report = SyncReport { revision: first.revision, ..SyncReport::default() };
        tokio::spawn(async move {
            let started = Instant::now();
            let desired = pakkt.agent_sync(Some(&token), report, StdDuration::from_secs(10)).await;
            (desired, started.elapsed())
        })
    };
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "nothing changed: the poll is held");
    let changed_at = Instant::now();
    pakkt.create_ip_entry(&session, created.agent.id, &blacklist("203.0.113.42")).await.expect("entry");
    let (desired, _) = waiting.await.expect("task");
    let woke_after = changed_at.elapsed();
    let desired = desired.expect("desired");
    assert!(desired.revision > first.revision);
    assert_eq!(desired.ip_entries.len(), 1);
    assert!(woke_after < StdDuration::from_millis(100), "woke after {woke_after:?}");
}

#[tokio::test]
async fn a_held_sync_ends_at_its_deadline_and_at_an_expiry() {
    let pakkt = live();
    let (_, key) = pakkt.create_api_key(&"acme".parse().expect("name")).await.expect("key");
    let session = pakkt.authenticate(Some(key.expose())).await.expect("session");
    let created = pakkt.create_agent(&session, &CreateAgentRequest { name: "a".into() }).await.expect("agent");
    let agent = created.agent.id;
    let first = pakkt.agent_sync(Some(&created.token), SyncReport::default(), MAX_POLL).await.expect("first");
    let report = SyncReport { revision: first.revision, ..SyncReport::default() };

    let started = Instant::now();
    let same =
        pakkt.agent_sync(Some(&created.token), report.clone(), StdDuration::from_millis(300)).await.expect("held");
    assert_eq!(same.revision, first.revision);
    assert!(started.elapsed() >= StdDuration::from_millis(300));

    let expiring = CreateIpEntryRequest {
        expires_at: Some(pakkt.now() + Duration::milliseconds(400)),
        ..blacklist("198.51.100.9")
    };
    pakkt.create_ip_entry(&session, agent, &expiring).await.expect("entry");
    let with_entry = pakkt.agent_sync(Some(&created.token), report, MAX_POLL).await.expect("change");
    assert_eq!(with_entry.ip_entries.len(), 1);
    let started = Instant::now();
    let report = SyncReport { revision: with_entry.revision, ..SyncReport::default() };
    let without = pakkt.agent_sync(Some(&created.token), report, StdDuration::from_secs(10)).await.expect("expiry");
    assert!(without.ip_entries.is_empty(), "the expired entry left the desired state");
    assert!(started.elapsed() < StdDuration::from_secs(2), "woken by the expiry, not the deadline");
    assert!(pakkt.list_ip_entries(&session, agent, None).await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_held_sync_answers_the_oldest_and_shutdown_answers_all() {
    let pakkt = live();
    let (_, key) = pakkt.create_api_key(&"acme".parse().expect("name")).await.expect("key");
    let session = pakkt.authenticate(Some(key.expose())).await.expect("session");
    let created = pakkt.create_agent(&session, &CreateAgentRequest { name: "a".into() }).await.expect("agent");
    let first = pakkt.agent_sync(Some(&created.token), SyncReport::default(), MAX_POLL).await.expect("first");
    let report = SyncReport { revision: first.revision, ..SyncReport::default() };
    let poll = || {
        let (pakkt, token, report) = (Arc::clone(&pakkt), created.token.clone(), report.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            pakkt.agent_sync(Some(&token), report, StdDuration::from_secs(20)).await.expect("held sync");
            started.elapsed()
        })
    };
    let oldest = poll();
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let second = poll();
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    assert!(!oldest.is_finished(), "two polls of one agent are held");
    let third = poll();
    let waited = tokio::time::timeout(StdDuration::from_secs(5), oldest).await.expect("answered").expect("task");
    assert!(waited < StdDuration::from_secs(5), "the oldest answered at once, not at its deadline: {waited:?}");
    assert!(!second.is_finished() && !third.is_finished());
    pakkt.release_held_polls();
    for held in [second, third] {
        let waited = tokio::time::timeout(StdDuration::from_secs(5), held).await.expect("answered").expect("task");
        assert!(waited < StdDuration::from_secs(5), "shutdown answers held polls: {waited:?}");
    }
}

// ----- quotas ---------------------------------------------------------------------------

/// A world whose quotas are `quotas` (the first key of `acme` was made
/// before they applied).
async fn world_with(quotas: Quotas) -> World {
    let w = world().await;
    World { pakkt: w.pakkt.with_quotas(quotas), ..w }
}

/// Asserts a 422 naming `flag`.
#[track_caller]
fn assert_quota_error<T: std::fmt::Debug>(result: Result<T>, flag: &str) {
    let err = result.expect_err("over the quota");
    assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
    let message = err.to_string();
    assert!(message.starts_with("quota exceeded: at most "), "{message}");
    assert!(message.contains(flag), "{message} names {flag}");
}

#[tokio::test]
async fn the_default_quotas_are_in_force_until_replaced() {
    let w = world().await;
    assert_eq!(*w.pakkt.quotas(), Quotas::default());
    let quotas = Quotas { agents: 7, ..Quotas::default() };
    assert_eq!(*w.pakkt.with_quotas(quotas).quotas(), quotas);
}

#[tokio::test]
async fn an_account_over_its_agent_quota_gets_422_and_no_agent() {
    let w = world_with(Quotas { agents: 2, ..Quotas::default() }).await;
    let request = CreateAgentRequest { name: "VPS".into() };
    let first = w.pakkt.create_agent(&w.session, &request).await.expect("first");
    w.pakkt.create_agent(&w.session, &request).await.expect("second");
    assert_quota_error(w.pakkt.create_agent(&w.session, &request).await, "--max-agents");
    assert_eq!(w.pakkt.list_agents(&w.session).await.expect("list").len(), 2, "nothing created");
    let other = w.other_session().await;
    w.pakkt.create_agent(&other, &request).await.expect("another account has its own quota");
    w.pakkt.delete_agent(&w.session, first.agent.id).await.expect("delete");
    w.pakkt.create_agent(&w.session, &request).await.expect("a deleted agent frees its place");
}

#[tokio::test]
async fn keys_over_the_quota_get_422_from_the_panel_and_the_operator_alike() {
    let w = world_with(Quotas { api_keys: 2, ..Quotas::default() }).await;
    let (second, _) = w.pakkt.create_account_key(&w.session).await.expect("second key");
    assert_quota_error(w.pakkt.create_account_key(&w.session).await, "--max-keys");
    let acme = "acme".parse().expect("name");
    assert_quota_error(w.pakkt.create_api_key(&acme).await, "--max-keys");
    assert_eq!(w.pakkt.list_account_keys(&w.session).await.expect("list").len(), 2, "nothing created");
    w.pakkt.revoke_account_key(&w.session, second.id).await.expect("revoke");
    w.pakkt.create_api_key(&acme).await.expect("a revoked key frees its place");
}

#[tokio::test]
async fn the_bootstrap_key_works_whatever_the_key_quota() {
    let w = world_with(Quotas { api_keys: 0, ..Quotas::default() }).await;
    assert_quota_error(w.pakkt.create_api_key(&"default".parse().expect("name")).await, "--max-keys");
    let raw = "pakkt_pub_0123456789abcdefghijABCDEFGHIJ";
    w.pakkt.bootstrap_api_key(raw).await.expect("bootstrap");
    assert!(w.pakkt.authenticate(Some(raw)).await.is_ok());
}

#[tokio::test]
async fn entries_over_the_agent_quota_get_422_before_dedup() {
    let w = world_with(Quotas { ip_entries: 2, ..Quotas::default() }).await;
    let (agent, _) = w.connected_agent().await;
    let first = w.pakkt.create_ip_entry(&w.session, agent, &blacklist("203.0.113.1")).await.expect("1");
    w.pakkt.create_ip_entry(&w.session, agent, &blacklist("203.0.113.2")).await.expect("2");
    assert_quota_error(w.pakkt.create_ip_entry(&w.session, agent, &blacklist("203.0.113.3")).await, "--max-ip-entries");
    assert_quota_error(w.pakkt.create_ip_entry(&w.session, agent, &blacklist("203.0.113.1")).await, "--max-ip-entries");
    assert_eq!(w.pakkt.list_ip_entries(&w.session, agent, None).await.expect("list").len(), 2);
    w.pakkt.delete_ip_entry(&w.session, agent, first.id).await.expect("delete");
    w.pakkt.create_ip_entry(&w.session, agent, &blacklist("203.0.113.3")).await.expect("a deleted entry's place");
}

#[tokio::test]
async fn firewall_rules_over_the_quota_get_422_by_api_and_by_template() {
    let w = world_with(Quotas { firewall_rules: 1, ..Quotas::default() }).await;
    let (agent, _) = w.connected_agent().await;
    let first = w.pakkt.create_firewall_rule(&w.session, agent, &block_redis()).await.expect("system rules aside");
    assert_quota_error(w.pakkt.create_firewall_rule(&w.session, agent, &block_redis()).await, "--max-firewall-rules");
    assert_quota_error(w.pakkt.apply_template(&w.session, agent, "tpl_nft_redis_block").await, "--max-firewall-rules");
    let listed = w.pakkt.list_firewall_rules(&w.session, agent).await.expect("list");
    assert_eq!(listed.iter().filter(|r| !r.is_system).count(), 1, "nothing created");
    w.pakkt.delete_firewall_rule(&w.session, agent, first.id).await.expect("delete");
    w.pakkt.apply_template(&w.session, agent, "tpl_nft_redis_block").await.expect("a deleted rule's place");
    w.pakkt.apply_template(&w.session, agent, "tpl_fivem_shield").await.expect("engine rules have slots, no quota");
}

/// A store's refusal of `quota` at `limit`.
fn refuse<T>(quota: crate::quota::Quota, limit: u32) -> Result<T, StoreError> {
    Err(StoreError::QuotaExceeded(crate::quota::QuotaExceeded { quota, limit }))
}

#[tokio::test]
async fn the_use_cases_hand_the_operators_figures_to_the_store() {
    let quotas = Quotas { agents: 11, api_keys: 12, ip_entries: 13, firewall_rules: 14, webhooks: 15 };
    let account = crate::account::Account {
        id: crate::id::AccountId::generate(),
        name: "acme".parse().expect("name"),
        suspended: false,
        created_at: t0(),
    };
    let agent = Agent {
        id: AgentId::generate(),
        account_id: account.id,
        name: "a".into(),
        host: crate::agent::HostInfo::default(),
        last_seen_at: Some(t0()),
        created_at: t0(),
        revision: 1,
    };
    let mut store = MockStore::default();
    store
        .agents
        .expect_insert_agent()
        .withf(|_, _, _, max| *max == 11)
        .returning(move |_, _, _, max| refuse(crate::quota::Quota::Agents, max));
    store
        .accounts
        .expect_insert_api_key()
        .withf(|_, max| *max == 12)
        .returning(move |_, max| refuse(crate::quota::Quota::ApiKeys, max));
    let found = agent.clone();
    store.agents.expect_get_agent().returning(move |_, _| Ok(Some(found.clone())));
    store
        .ip_lists
        .expect_create_ip_entry()
        .withf(|_, _, _, max| *max == 13)
        .returning(move |_, _, _, max| refuse(crate::quota::Quota::IpEntries, max));
    store
        .firewall
        .expect_create_firewall_rule()
        .withf(|_, max| *max == 14)
        .returning(move |_, max| refuse(crate::quota::Quota::FirewallRules, max));
    let pakkt = Pakkt::with_clock(store, ManualClock::new(t0())).with_quotas(quotas);
    let rate = crate::ratelimit::RateDecision { allowed: true, limit: 0, remaining: 0, reset_after: StdDuration::ZERO };
    let session = Session { account, key_id: ApiKeyId::generate(), rate };
    let err = pakkt.create_agent(&session, &CreateAgentRequest { name: "a".into() }).await.expect_err("agents");
    assert_eq!(err.to_string(), "quota exceeded: at most 11 agents per account (--max-agents)");
    let err = pakkt.create_account_key(&session).await.expect_err("keys");
    assert_eq!(err.to_string(), "quota exceeded: at most 12 API keys per account (--max-keys)");
    let err = pakkt.create_ip_entry(&session, agent.id, &blacklist("203.0.113.1")).await.expect_err("entries");
    assert_eq!(err.to_string(), "quota exceeded: at most 13 IP list entries per agent (--max-ip-entries)");
    let err = pakkt.create_firewall_rule(&session, agent.id, &block_redis()).await.expect_err("firewall");
    assert_eq!(err.to_string(), "quota exceeded: at most 14 firewall rules per agent (--max-firewall-rules)");
    assert_eq!(err.kind(), ErrorKind::ValidationFailed);
}

// ----- mocks ----------------------------------------------------------------------------

/// A store made of one mock per role.
#[derive(Default)]
struct MockStore {
    accounts: MockAccountStore,
    agents: MockAgentStore,
    rules: MockRuleStore,
    ip_lists: MockIpListStore,
    firewall: MockFirewallStore,
    sync: MockSyncStore,
    metrics: MockMetricsStore,
    sessions: MockSessionStore,
}

macro_rules! pass_to_mocks {
    ($($pass:ident :: $get:ident => $mock:ident),* $(,)?) => {$(
        impl $pass for MockStore {
            type To = $mock;
            fn $get(&self) -> &$mock {
                &self.$get
            }
        }
    )*};
}

pass_to_mocks!(
    PassAccounts::accounts => MockAccountStore,
    PassAgents::agents => MockAgentStore,
    PassRules::rules => MockRuleStore,
    PassIpLists::ip_lists => MockIpListStore,
    PassFirewall::firewall => MockFirewallStore,
    PassSync::sync => MockSyncStore,
    PassMetrics::metrics => MockMetricsStore,
    PassSessions::sessions => MockSessionStore,
);

// ----- 500 ------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_store_is_an_internal_error_that_leaks_nothing() {
    let mut store = MockStore::default();
    store
        .accounts
        .expect_key_by_hash()
        .returning(|_| Err(StoreError::Backend("connection refused to db.internal:5432 password=hunter2".into())));
    let pakkt = Pakkt::with_clock(store, ManualClock::new(t0()));
    let err = pakkt.authenticate(Some("pakkt_pub_0123456789abcdefghijABCDEFGHIJ")).await.expect_err("store down");
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert_eq!(err.kind().code(), "internal");
    assert_eq!(err.to_string(), "internal error", "the cause is for logs only");
    assert!(std::error::Error::source(&err).is_some(), "the cause is kept");
    let body = crate::wire::ErrorBody::from(&err);
    assert!(!body.message.contains("hunter2"));
}

// ----- sync writes ------------------------------------------------------------------------

/// A mock store with one agent (at revision 3) whose token it knows,
/// nothing to purge, and desired state at `revision`.
fn syncing_agent(revision: u64) -> (AgentToken, MockStore) {
    let agent = Agent {
        id: AgentId::generate(),
        account_id: crate::id::AccountId::generate(),
        name: "a".into(),
        host: crate::agent::HostInfo::default(),
        last_seen_at: None,
        created_at: t0(),
        revision: 3,
    };
    let mut store = MockStore::default();
    store.agents.expect_agent_by_token().returning(move |_| Ok(Some(agent.clone())));
    store.ip_lists.expect_purge_expired().returning(|_, _| Ok(0));
    store.sync.expect_revision().returning(move |_| Ok(revision));
    // An empty desired state.
    store.rules.expect_list_engine_rules().returning(|_| Ok(Vec::new()));
    store.ip_lists.expect_list_ip_entries().returning(|_, _, _| Ok(Vec::new()));
    store.firewall.expect_list_firewall_rules().returning(|_| Ok(Vec::new()));
    (AgentToken::generate(), store)
}

#[tokio::test]
async fn a_repeated_sync_report_is_applied_once() {
    let (token, mut store) = syncing_agent(4);
    store.agents.expect_record_sync().returning(|_, _, _| Ok(()));
    // Two distinct reports, each sent twice: two writes.
    store.sync.expect_apply_report().times(2).returning(|_, _, _| Ok(()));
    let pakkt = Pakkt::with_clock(store, ManualClock::new(t0()));
    let first = SyncReport { revision: 3, ..SyncReport::default() };
    let mut counted = first.clone();
    counted.firewall_counters =
        vec![crate::sync::FirewallCounter { id: FirewallRuleId::generate(), packets: 1, bytes: 1 }];
    let second = SyncReport { revision: 4, ..SyncReport::default() };
    for report in [first, counted, second.clone(), second] {
        pakkt.agent_sync(Some(token.expose()), report, StdDuration::ZERO).await.expect("sync");
    }
}

#[tokio::test]
async fn syncs_are_recorded_at_most_once_per_resolution_unless_the_host_changed() {
    let (token, mut store) = syncing_agent(3);
    store.sync.expect_apply_report().returning(|_, _, _| Ok(()));
    let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&recorded);
    store.agents.expect_record_sync().returning(move |_, host, at| {
        log.lock().expect("log").push((host.hostname.clone(), at));
        Ok(())
    });
    let clock = ManualClock::new(t0());
    let pakkt = Pakkt::with_clock(store, clock.clone());
    let sync = |hostname: &str| {
        let mut report = SyncReport { revision: 3, ..SyncReport::default() };
        report.host.hostname = Some(hostname.into());
        pakkt.agent_sync(Some(token.expose()), report, StdDuration::ZERO)
    };
    sync("web-1").await.expect("first sync: recorded");
    clock.advance(Duration::seconds(1));
    sync("web-1").await.expect("1 s later, same host: coalesced");
    sync("web-2").await.expect("host changed: recorded");
    clock.advance(Duration::milliseconds(1500));
    sync("web-2").await.expect("1.5 s after the last record: coalesced");
    clock.advance(Duration::milliseconds(500));
    sync("web-2").await.expect("2 s after the last record: recorded");
    let recorded = recorded.lock().expect("log").clone();
    let at = |ms: i64| t0() + Duration::milliseconds(ms);
    assert_eq!(
        recorded,
        vec![(Some("web-1".into()), at(0)), (Some("web-2".into()), at(1000)), (Some("web-2".into()), at(3000))]
    );
}

#[test]
fn a_held_poll_after_an_unrecorded_sync_still_leaves_the_agent_online() {
    // The last record may be LAST_SEEN_RESOLUTION old when a poll starts
    // and the poll may last MAX_POLL: 3 s must remain for the agent to
    // apply and sync again.
    let worst = crate::agent::LAST_SEEN_RESOLUTION + Duration::from_std(MAX_POLL).expect("small");
    assert!(worst + Duration::seconds(3) <= crate::agent::ONLINE_FOR);
}
