//! The panel's own [`Store`]: PAKKT's data kept in the panel's tables.
//!
//! A real panel maps each method onto its own database, one transaction
//! per method. Here the "database" is a set of tables in one structure
//! behind one mutex, which makes every method atomic, the first thing the
//! trait asks for (see `pakkt_core::store`: atomic admission, a revision
//! bump with every change to what an agent enforces). The domain decisions
//! are core's pure functions, so this store decides nothing itself:
//! admission ([`lifecycle::admit_rule`], [`lifecycle::admit_entry`]),
//! deletion ([`Tracked::delete`]), reports ([`lifecycle::plan_report`]),
//! quotas ([`Quota::admit`], counting with [`quota::entries_held`] and
//! [`quota::firewall_rules_held`]) and the firewall's order
//! ([`FirewallRule::list_order`]).
//!
//! `tests/embedding.rs` runs core's store conformance suite on it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pakkt_core::account::{Account, AccountName, ApiKeyRecord, SecretHash};
use pakkt_core::agent::{Agent, HostInfo};
use pakkt_core::firewall::FirewallRule;
use pakkt_core::id::{AccountId, AgentId, ApiKeyId, EngineRuleId, FirewallRuleId, IpEntryId};
use pakkt_core::ip_list::{EntrySpec, IpEntry, ListType};
use pakkt_core::lifecycle::{self, Deletion, Tracked};
use pakkt_core::metrics::{Counters, Interval, MetricBucket, MetricsReport};
use pakkt_core::panel::{self, PanelSession};
use pakkt_core::quota::{self, Quota};
use pakkt_core::rule::{EngineRule, RuleSpec};
use pakkt_core::store::{
    AccountStore, AgentStore, DeleteResult, FirewallStore, IpListStore, MetricsStore, RuleStore, SessionStore,
    StoreError, SyncStore,
};
use pakkt_core::sync::{ItemRef, SyncReport};

/// Metrics report IDs remembered per agent, to store a retried report once.
const REMEMBERED_REPORTS: usize = 1024;

/// The panel's tables.
#[derive(Debug, Default)]
struct Tables {
    accounts: Vec<Account>,
    api_keys: Vec<ApiKeyRecord>,
    /// Each agent with the hash of its token.
    agents: Vec<(Agent, SecretHash)>,
    engine_rules: Vec<EngineRule>,
    ip_entries: Vec<IpEntry>,
    firewall_rules: Vec<FirewallRule>,
    /// One-minute traffic buckets by (agent, minute, port).
    traffic: BTreeMap<(AgentId, DateTime<Utc>, u16), Counters>,
    /// The last metrics report IDs of each agent, oldest first.
    reports: HashMap<AgentId, VecDeque<String>>,
    /// Web panel sessions, each with its sealed one-time notice.
    sessions: Vec<(PanelSession, Option<Vec<u8>>)>,
}

impl Tables {
    fn agent_mut(&mut self, id: AgentId) -> Result<&mut Agent, StoreError> {
        self.agents.iter_mut().map(|(a, _)| a).find(|a| a.id == id).ok_or(StoreError::NotFound)
    }

    /// A new revision of what the agent enforces.
    fn bump(&mut self, id: AgentId) {
        if let Ok(agent) = self.agent_mut(id) {
            agent.revision += 1;
        }
    }

    /// Ends the panel sessions of keys that are gone (a database would
    /// cascade the key's deletion).
    fn end_orphan_sessions(&mut self) {
        let keys = &self.api_keys;
        self.sessions.retain(|(s, _)| keys.iter().any(|k| k.hash == s.key_hash));
    }

    fn session_mut(&mut self, token: &SecretHash) -> Option<&mut (PanelSession, Option<Vec<u8>>)> {
        self.sessions.iter_mut().find(|(s, _)| s.token_hash == *token)
    }
}

/// A [`Store`](pakkt_core::store::Store) on the panel's tables.
#[derive(Debug, Default)]
pub struct PanelStore {
    tables: Mutex<Tables>,
}

impl PanelStore {
    fn tables(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        self.tables.lock().map_err(|_| StoreError::Backend("the panel's tables are poisoned by a panic".into()))
    }
}

/// Deletes one of the agent's items per the lifecycle.
fn delete_item<T: Tracked>(table: &mut Vec<T>, agent: AgentId, item: ItemRef) -> DeleteResult {
    let at = table.iter().position(|t| t.agent() == agent && t.item() == item).ok_or(StoreError::NotFound)?;
    let outcome = table[at].delete();
    if outcome == Deletion::Removed {
        table.remove(at);
    }
    Ok(outcome)
}

#[async_trait]
impl AccountStore for PanelStore {
    async fn create_account(&self, name: &AccountName, now: DateTime<Utc>) -> Result<Account, StoreError> {
        let mut t = self.tables()?;
        if t.accounts.iter().any(|a| &a.name == name) {
            return Err(StoreError::Duplicate { existing: name.to_string() });
        }
        let account = Account { id: AccountId::generate(), name: name.clone(), suspended: false, created_at: now };
        t.accounts.push(account.clone());
        Ok(account)
    }

    async fn account_by_name(&self, name: &AccountName) -> Result<Option<Account>, StoreError> {
        Ok(self.tables()?.accounts.iter().find(|a| &a.name == name).cloned())
    }

    async fn set_suspended(&self, name: &AccountName, suspended: bool) -> Result<Account, StoreError> {
        let mut t = self.tables()?;
        let account = t.accounts.iter_mut().find(|a| &a.name == name).ok_or(StoreError::NotFound)?;
        account.suspended = suspended;
        Ok(account.clone())
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, max: u32) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        if !t.accounts.iter().any(|a| a.id == key.account_id) {
            return Err(StoreError::NotFound);
        }
        Quota::ApiKeys.admit(max, quota::count(t.api_keys.iter().filter(|k| k.account_id == key.account_id)), 1)?;
        if let Some(existing) = t.api_keys.iter().find(|k| k.hash == key.hash) {
            return Err(StoreError::Duplicate { existing: existing.id.to_string() });
        }
        t.api_keys.push(key.clone());
        Ok(())
    }

    async fn replace_api_keys(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        if !t.accounts.iter().any(|a| a.id == key.account_id) {
            return Err(StoreError::NotFound);
        }
        let kept = match t.api_keys.iter().find(|k| k.hash == key.hash) {
            Some(k) if k.account_id != key.account_id => {
                return Err(StoreError::Duplicate { existing: k.id.to_string() });
            }
            Some(k) => k.clone(),
            None => key.clone(),
        };
        t.api_keys.retain(|k| k.account_id != key.account_id);
        t.api_keys.push(kept);
        t.end_orphan_sessions();
        Ok(())
    }

    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        let at = t.api_keys.iter().position(|k| k.id == id).ok_or(StoreError::NotFound)?;
        t.api_keys.remove(at);
        t.end_orphan_sessions();
        Ok(())
    }

    async fn key_by_hash(&self, hash: &SecretHash) -> Result<Option<(ApiKeyRecord, Account)>, StoreError> {
        let t = self.tables()?;
        let key = t.api_keys.iter().find(|k| &k.hash == hash);
        Ok(key.and_then(|k| t.accounts.iter().find(|a| a.id == k.account_id).map(|a| (k.clone(), a.clone()))))
    }

    async fn list_api_keys(&self, account: AccountId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut keys: Vec<ApiKeyRecord> =
            self.tables()?.api_keys.iter().filter(|k| k.account_id == account).cloned().collect();
        keys.sort_by_key(|k| (k.created_at, k.id));
        Ok(keys)
    }
}

#[async_trait]
impl AgentStore for PanelStore {
    async fn insert_agent(
        &self,
        agent: &Agent,
        token: &SecretHash,
        system_rules: &[FirewallRule],
        max: u32,
    ) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        if !t.accounts.iter().any(|a| a.id == agent.account_id) {
            return Err(StoreError::NotFound);
        }
        let held = quota::count(t.agents.iter().filter(|(a, _)| a.account_id == agent.account_id));
        Quota::Agents.admit(max, held, 1)?;
        if t.agents.iter().any(|(_, hash)| hash == token) {
            return Err(StoreError::Duplicate { existing: "agent token".into() });
        }
        t.agents.push((Agent { revision: 1, ..agent.clone() }, *token));
        t.firewall_rules.extend_from_slice(system_rules);
        Ok(())
    }

    async fn list_agents(&self, account: AccountId) -> Result<Vec<Agent>, StoreError> {
        let t = self.tables()?;
        let mut agents: Vec<Agent> =
            t.agents.iter().map(|(a, _)| a).filter(|a| a.account_id == account).cloned().collect();
        agents.sort_by_key(|a| (a.created_at, a.id));
        Ok(agents)
    }

    async fn get_agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>, StoreError> {
        let t = self.tables()?;
        Ok(t.agents.iter().map(|(a, _)| a).find(|a| a.id == id && a.account_id == account).cloned())
    }

    async fn delete_agent(&self, account: AccountId, id: AgentId) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        let at =
            t.agents.iter().position(|(a, _)| a.id == id && a.account_id == account).ok_or(StoreError::NotFound)?;
        t.agents.remove(at);
        t.engine_rules.retain(|r| r.agent_id != id);
        t.ip_entries.retain(|e| e.agent_id != id);
        t.firewall_rules.retain(|f| f.agent_id != id);
        t.traffic.retain(|(agent, _, _), _| *agent != id);
        t.reports.remove(&id);
        Ok(())
    }

    async fn agent_by_token(&self, token: &SecretHash) -> Result<Option<Agent>, StoreError> {
        Ok(self.tables()?.agents.iter().find(|(_, hash)| hash == token).map(|(a, _)| a.clone()))
    }

    async fn record_sync(&self, agent: AgentId, host: &HostInfo, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        let agent = t.agent_mut(agent)?;
        agent.host = host.clone();
        agent.last_seen_at = Some(now);
        Ok(())
    }
}

#[async_trait]
impl RuleStore for PanelStore {
    async fn create_engine_rule(
        &self,
        agent: AgentId,
        name: &str,
        spec: &RuleSpec,
        now: DateTime<Utc>,
    ) -> Result<EngineRule, StoreError> {
        let mut t = self.tables()?;
        t.agent_mut(agent)?;
        let slot = lifecycle::admit_rule(t.engine_rules.iter().filter(|r| r.agent_id == agent), spec)?;
        let rule = lifecycle::admitted_rule(agent, name, spec, slot, now);
        t.engine_rules.push(rule.clone());
        t.bump(agent);
        Ok(rule)
    }

    async fn list_engine_rules(&self, agent: AgentId) -> Result<Vec<EngineRule>, StoreError> {
        let mut rules: Vec<EngineRule> =
            self.tables()?.engine_rules.iter().filter(|r| r.agent_id == agent).cloned().collect();
        rules.sort_by_key(|r| (r.created_at, r.id));
        Ok(rules)
    }

    async fn delete_engine_rule(&self, agent: AgentId, id: EngineRuleId) -> DeleteResult {
        let mut t = self.tables()?;
        let outcome = delete_item(&mut t.engine_rules, agent, ItemRef::EngineRule(id))?;
        if outcome != Deletion::AlreadyPending {
            t.bump(agent);
        }
        Ok(outcome)
    }
}

#[async_trait]
impl IpListStore for PanelStore {
    async fn create_ip_entry(
        &self,
        agent: AgentId,
        spec: &EntrySpec,
        now: DateTime<Utc>,
        max: u32,
    ) -> Result<IpEntry, StoreError> {
        let mut t = self.tables()?;
        t.agent_mut(agent)?;
        Quota::IpEntries.admit(
            max,
            quota::entries_held(t.ip_entries.iter().filter(|e| e.agent_id == agent), now),
            1,
        )?;
        lifecycle::admit_entry(t.ip_entries.iter().filter(|e| e.agent_id == agent), spec, now)?;
        let entry = lifecycle::admitted_entry(agent, spec, now);
        t.ip_entries.push(entry.clone());
        t.bump(agent);
        Ok(entry)
    }

    async fn list_ip_entries(
        &self,
        agent: AgentId,
        list: Option<ListType>,
        now: DateTime<Utc>,
    ) -> Result<Vec<IpEntry>, StoreError> {
        let t = self.tables()?;
        let mut entries: Vec<IpEntry> = t
            .ip_entries
            .iter()
            .filter(|e| e.agent_id == agent && !e.is_expired(now) && list.is_none_or(|l| e.spec.list_type == l))
            .cloned()
            .collect();
        entries.sort_by_key(|e| (e.created_at, e.id));
        Ok(entries)
    }

    async fn delete_ip_entry(&self, agent: AgentId, id: IpEntryId) -> DeleteResult {
        let mut t = self.tables()?;
        let outcome = delete_item(&mut t.ip_entries, agent, ItemRef::IpEntry(id))?;
        if outcome != Deletion::AlreadyPending {
            t.bump(agent);
        }
        Ok(outcome)
    }

    async fn purge_expired(&self, agent: AgentId, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut t = self.tables()?;
        let before = t.ip_entries.len();
        t.ip_entries.retain(|e| e.agent_id != agent || !e.is_expired(now));
        let purged = before - t.ip_entries.len();
        if purged > 0 {
            t.bump(agent);
        }
        Ok(purged)
    }

    async fn next_expiry(&self, agent: AgentId, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        let t = self.tables()?;
        Ok(t.ip_entries
            .iter()
            .filter(|e| e.agent_id == agent)
            .filter_map(|e| e.spec.expires_at)
            .filter(|at| *at > now)
            .min())
    }
}

#[async_trait]
impl FirewallStore for PanelStore {
    async fn create_firewall_rule(&self, rule: &FirewallRule, max: u32) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        t.agent_mut(rule.agent_id)?;
        let held = quota::firewall_rules_held(t.firewall_rules.iter().filter(|f| f.agent_id == rule.agent_id));
        Quota::FirewallRules.admit(max, held, u64::from(quota::charges_firewall_rule(rule)))?;
        t.firewall_rules.push(rule.clone());
        t.bump(rule.agent_id);
        Ok(())
    }

    async fn list_firewall_rules(&self, agent: AgentId) -> Result<Vec<FirewallRule>, StoreError> {
        let mut rules: Vec<FirewallRule> =
            self.tables()?.firewall_rules.iter().filter(|f| f.agent_id == agent).cloned().collect();
        FirewallRule::list_order(&mut rules);
        Ok(rules)
    }

    async fn delete_firewall_rule(&self, agent: AgentId, id: FirewallRuleId) -> DeleteResult {
        let mut t = self.tables()?;
        let outcome = delete_item(&mut t.firewall_rules, agent, ItemRef::FirewallRule(id))?;
        if outcome != Deletion::AlreadyPending {
            t.bump(agent);
        }
        Ok(outcome)
    }
}

#[async_trait]
impl SyncStore for PanelStore {
    async fn revision(&self, agent: AgentId) -> Result<u64, StoreError> {
        Ok(self.tables()?.agent_mut(agent)?.revision)
    }

    async fn apply_report(&self, agent: AgentId, report: &SyncReport, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        t.agent_mut(agent)?;
        let items = lifecycle::phases(&t.engine_rules, agent)
            .chain(lifecycle::phases(&t.ip_entries, agent))
            .chain(lifecycle::phases(&t.firewall_rules, agent))
            .collect::<Vec<_>>();
        let plan = lifecycle::plan_report(items, report);
        t.engine_rules.retain_mut(|r| lifecycle::keeps(r, agent, &plan, now));
        t.ip_entries.retain_mut(|e| lifecycle::keeps(e, agent, &plan, now));
        t.firewall_rules.retain_mut(|f| lifecycle::keeps(f, agent, &plan, now));
        lifecycle::set_counters(&mut t.firewall_rules, agent, &report.firewall_counters);
        if plan.bump {
            t.bump(agent);
        }
        Ok(())
    }
}

#[async_trait]
impl MetricsStore for PanelStore {
    async fn ingest_metrics(
        &self,
        agent: AgentId,
        report: &MetricsReport,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut t = self.tables()?;
        t.agent_mut(agent)?;
        let seen = t.reports.entry(agent).or_default();
        if seen.contains(&report.report_id) {
            return Ok(false);
        }
        seen.push_back(report.report_id.clone());
        if seen.len() > REMEMBERED_REPORTS {
            seen.pop_front();
        }
        let minute = Interval::Minute.bucket_of(now);
        for sample in &report.ports {
            t.traffic.entry((agent, minute, sample.port)).or_default().add(sample.counters);
        }
        lifecycle::set_counters(&mut t.firewall_rules, agent, &report.firewall_counters);
        Ok(true)
    }

    async fn metrics_by_port(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<u16, Counters>, StoreError> {
        let t = self.tables()?;
        let mut per_port: BTreeMap<u16, Counters> = BTreeMap::new();
        for ((_, _, port), counters) in t.traffic.range((agent, from, 0)..(agent, to, 0)) {
            per_port.entry(*port).or_default().add(*counters);
        }
        Ok(per_port)
    }

    async fn metrics_history(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        interval: Interval,
        port: Option<u16>,
    ) -> Result<Vec<MetricBucket>, StoreError> {
        let t = self.tables()?;
        let mut rows: BTreeMap<(DateTime<Utc>, u16), Counters> = BTreeMap::new();
        for ((_, minute, p), counters) in t.traffic.range((agent, from, 0)..(agent, to, 0)) {
            if port.is_none_or(|want| want == *p) {
                rows.entry((interval.bucket_of(*minute), *p)).or_default().add(*counters);
            }
        }
        Ok(rows.into_iter().map(|((bucket, port), counters)| MetricBucket { bucket, port, counters }).collect())
    }
}

#[async_trait]
impl SessionStore for PanelStore {
    async fn start_session(&self, session: &PanelSession, keep: usize) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        if !t.api_keys.iter().any(|k| k.hash == session.key_hash) {
            return Err(StoreError::NotFound);
        }
        if t.session_mut(&session.token_hash).is_some() {
            return Err(StoreError::Duplicate { existing: "panel session".into() });
        }
        let account: Vec<PanelSession> =
            t.sessions.iter().filter(|(s, _)| s.account == session.account).map(|(s, _)| s.clone()).collect();
        let ended = panel::sessions_to_end(&account, &session.token_hash, keep);
        t.sessions.retain(|(s, _)| !ended.contains(&s.token_hash));
        t.sessions.push((session.clone(), None));
        Ok(())
    }

    async fn session(&self, token: &SecretHash) -> Result<Option<PanelSession>, StoreError> {
        Ok(self.tables()?.session_mut(token).map(|(s, _)| s.clone()))
    }

    async fn renew_session(
        &self,
        token: &SecretHash,
        last_seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some((session, _)) = self.tables()?.session_mut(token) {
            session.last_seen_at = last_seen_at;
            session.expires_at = expires_at;
        }
        Ok(())
    }

    async fn set_session_notice(&self, token: &SecretHash, notice: &[u8]) -> Result<(), StoreError> {
        if let Some((_, slot)) = self.tables()?.session_mut(token) {
            *slot = Some(notice.to_vec());
        }
        Ok(())
    }

    async fn take_session_notice(&self, token: &SecretHash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables()?.session_mut(token).and_then(|(_, slot)| slot.take()))
    }

    async fn end_session(&self, token: &SecretHash) -> Result<(), StoreError> {
        self.tables()?.sessions.retain(|(s, _)| s.token_hash != *token);
        Ok(())
    }

    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut t = self.tables()?;
        let before = t.sessions.len();
        t.sessions.retain(|(s, _)| s.expires_at > now);
        Ok(before - t.sessions.len())
    }
}
