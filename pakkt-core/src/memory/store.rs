//! The in-memory [`Store`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::account::{Account, AccountName, ApiKeyRecord, SecretHash};
use crate::agent::{Agent, HostInfo};
use crate::firewall::FirewallRule;
use crate::id::{AccountId, AgentId, ApiKeyId, EngineRuleId, FirewallRuleId, IpEntryId};
use crate::ip_list::{EntrySpec, IpEntry, ListType};
use crate::lifecycle::{self, Deletion, Tracked};
use crate::metrics::{Counters, Interval, MetricBucket, MetricsReport};
use crate::panel::{self, PanelSession};
use crate::quota::{self, Quota};
use crate::rule::{EngineRule, RuleSpec};
use crate::store::{
    AccountStore, AgentStore, DeleteResult, FirewallStore, IpListStore, MetricsStore, RuleStore, SessionStore,
    StoreError, SyncStore,
};
use crate::sync::SyncReport;

/// How many report IDs per agent are remembered for deduplication.
const REMEMBERED_REPORTS: usize = 1024;

#[derive(Debug, Default)]
struct State {
    accounts: BTreeMap<AccountId, Account>,
    keys: HashMap<SecretHash, ApiKeyRecord>,
    agents: BTreeMap<AgentId, Agent>,
    tokens: HashMap<SecretHash, AgentId>,
    rules: BTreeMap<EngineRuleId, EngineRule>,
    entries: BTreeMap<IpEntryId, IpEntry>,
    firewall: BTreeMap<FirewallRuleId, FirewallRule>,
    minutes: BTreeMap<(AgentId, DateTime<Utc>, u16), Counters>,
    reports: HashMap<AgentId, (HashSet<String>, VecDeque<String>)>,
    /// Panel sessions by token hash, each with its sealed notice.
    sessions: HashMap<SecretHash, (PanelSession, Option<Vec<u8>>)>,
}

impl State {
    fn bump(&mut self, agent: AgentId) {
        if let Some(a) = self.agents.get_mut(&agent) {
            a.revision += 1;
        }
    }

    fn require_agent(&self, agent: AgentId) -> Result<(), StoreError> {
        if self.agents.contains_key(&agent) { Ok(()) } else { Err(StoreError::NotFound) }
    }

    /// The IP list entries charged to `agent`'s quota at `now`: today its
    /// own entries; entries that reach it otherwise (account-wide,
    /// automatic) are to be counted here too.
    fn ip_entries_held(&self, agent: AgentId, now: DateTime<Utc>) -> u64 {
        quota::entries_held(self.entries.values().filter(|e| e.agent_id == agent), now)
    }

    /// Ends the sessions of keys that are gone.
    fn end_orphan_sessions(&mut self) {
        let keys = &self.keys;
        self.sessions.retain(|_, (session, _)| keys.contains_key(&session.key_hash));
    }
}

/// A [`Store`](crate::store::Store) in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("memory store lock")
    }
}

/// Deletes item `id` of `agent` from `table` per the lifecycle, bumping the
/// agent's revision when anything changed.
fn delete_from<K: Ord, T: Tracked>(
    table: impl FnOnce(&mut State) -> &mut BTreeMap<K, T>,
    s: &mut State,
    agent: AgentId,
    id: &K,
) -> DeleteResult {
    let table = table(s);
    let item = table.get_mut(id).filter(|t| t.agent() == agent).ok_or(StoreError::NotFound)?;
    let outcome = item.delete();
    if outcome == Deletion::Removed {
        table.remove(id);
    }
    if outcome != Deletion::AlreadyPending {
        s.bump(agent);
    }
    Ok(outcome)
}

#[async_trait]
impl AccountStore for MemoryStore {
    async fn create_account(&self, name: &AccountName, now: DateTime<Utc>) -> Result<Account, StoreError> {
        let mut s = self.lock();
        if let Some(existing) = s.accounts.values().find(|a| &a.name == name) {
            return Err(StoreError::Duplicate { existing: existing.name.to_string() });
        }
        let account = Account { id: AccountId::generate(), name: name.clone(), suspended: false, created_at: now };
        s.accounts.insert(account.id, account.clone());
        Ok(account)
    }

    async fn account_by_name(&self, name: &AccountName) -> Result<Option<Account>, StoreError> {
        Ok(self.lock().accounts.values().find(|a| &a.name == name).cloned())
    }

    async fn set_suspended(&self, name: &AccountName, suspended: bool) -> Result<Account, StoreError> {
        let mut s = self.lock();
        let account = s.accounts.values_mut().find(|a| &a.name == name).ok_or(StoreError::NotFound)?;
        account.suspended = suspended;
        Ok(account.clone())
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, max: u32) -> Result<(), StoreError> {
        let mut s = self.lock();
        if !s.accounts.contains_key(&key.account_id) {
            return Err(StoreError::NotFound);
        }
        Quota::ApiKeys.admit(max, quota::count(s.keys.values().filter(|k| k.account_id == key.account_id)), 1)?;
        if let Some(existing) = s.keys.get(&key.hash) {
            return Err(StoreError::Duplicate { existing: existing.id.to_string() });
        }
        s.keys.insert(key.hash, key.clone());
        Ok(())
    }

    async fn replace_api_keys(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut s = self.lock();
        if !s.accounts.contains_key(&key.account_id) {
            return Err(StoreError::NotFound);
        }
        if s.keys.get(&key.hash).is_some_and(|k| k.account_id != key.account_id) {
            return Err(StoreError::Duplicate { existing: key.hash.to_hex() });
        }
        let keep = s.keys.get(&key.hash).cloned();
        s.keys.retain(|_, k| k.account_id != key.account_id);
        s.keys.insert(key.hash, keep.unwrap_or_else(|| key.clone()));
        s.end_orphan_sessions();
        Ok(())
    }

    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), StoreError> {
        let mut s = self.lock();
        let before = s.keys.len();
        s.keys.retain(|_, k| k.id != id);
        if s.keys.len() == before {
            return Err(StoreError::NotFound);
        }
        s.end_orphan_sessions();
        Ok(())
    }

    async fn key_by_hash(&self, hash: &SecretHash) -> Result<Option<(ApiKeyRecord, Account)>, StoreError> {
        let s = self.lock();
        Ok(s.keys.get(hash).and_then(|k| s.accounts.get(&k.account_id).map(|a| (k.clone(), a.clone()))))
    }

    async fn list_api_keys(&self, account: AccountId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut keys: Vec<ApiKeyRecord> =
            self.lock().keys.values().filter(|k| k.account_id == account).cloned().collect();
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(keys)
    }
}

#[async_trait]
impl AgentStore for MemoryStore {
    async fn insert_agent(
        &self,
        agent: &Agent,
        token: &SecretHash,
        system_rules: &[FirewallRule],
        max: u32,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        if !s.accounts.contains_key(&agent.account_id) {
            return Err(StoreError::NotFound);
        }
        Quota::Agents.admit(max, quota::count(s.agents.values().filter(|a| a.account_id == agent.account_id)), 1)?;
        if s.tokens.contains_key(token) {
            return Err(StoreError::Duplicate { existing: "agent token".into() });
        }
        s.agents.insert(agent.id, Agent { revision: 1, ..agent.clone() });
        s.tokens.insert(*token, agent.id);
        for rule in system_rules {
            s.firewall.insert(rule.id, rule.clone());
        }
        Ok(())
    }

    async fn list_agents(&self, account: AccountId) -> Result<Vec<Agent>, StoreError> {
        let s = self.lock();
        let mut agents: Vec<Agent> = s.agents.values().filter(|a| a.account_id == account).cloned().collect();
        agents.sort_by_key(|a| (a.created_at, a.id));
        Ok(agents)
    }

    async fn get_agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>, StoreError> {
        Ok(self.lock().agents.get(&id).filter(|a| a.account_id == account).cloned())
    }

    async fn delete_agent(&self, account: AccountId, id: AgentId) -> Result<(), StoreError> {
        let mut s = self.lock();
        if s.agents.get(&id).is_none_or(|a| a.account_id != account) {
            return Err(StoreError::NotFound);
        }
        s.agents.remove(&id);
        s.tokens.retain(|_, a| *a != id);
        s.rules.retain(|_, r| r.agent_id != id);
        s.entries.retain(|_, e| e.agent_id != id);
        s.firewall.retain(|_, f| f.agent_id != id);
        s.minutes.retain(|(a, _, _), _| *a != id);
        s.reports.remove(&id);
        Ok(())
    }

    async fn agent_by_token(&self, token: &SecretHash) -> Result<Option<Agent>, StoreError> {
        let s = self.lock();
        Ok(s.tokens.get(token).and_then(|id| s.agents.get(id)).cloned())
    }

    async fn record_sync(&self, agent: AgentId, host: &HostInfo, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut s = self.lock();
        let a = s.agents.get_mut(&agent).ok_or(StoreError::NotFound)?;
        a.host = host.clone();
        a.last_seen_at = Some(now);
        Ok(())
    }
}

#[async_trait]
impl RuleStore for MemoryStore {
    async fn create_engine_rule(
        &self,
        agent: AgentId,
        name: &str,
        spec: &RuleSpec,
        now: DateTime<Utc>,
    ) -> Result<EngineRule, StoreError> {
        let mut s = self.lock();
        s.require_agent(agent)?;
        let slot = lifecycle::admit_rule(s.rules.values().filter(|r| r.agent_id == agent), spec)?;
        let rule = lifecycle::admitted_rule(agent, name, spec, slot, now);
        s.rules.insert(rule.id, rule.clone());
        s.bump(agent);
        Ok(rule)
    }

    async fn list_engine_rules(&self, agent: AgentId) -> Result<Vec<EngineRule>, StoreError> {
        let s = self.lock();
        let mut rules: Vec<EngineRule> = s.rules.values().filter(|r| r.agent_id == agent).cloned().collect();
        rules.sort_by_key(|r| (r.created_at, r.id));
        Ok(rules)
    }

    async fn delete_engine_rule(&self, agent: AgentId, id: EngineRuleId) -> DeleteResult {
        delete_from(|s| &mut s.rules, &mut self.lock(), agent, &id)
    }
}

#[async_trait]
impl IpListStore for MemoryStore {
    async fn create_ip_entry(
        &self,
        agent: AgentId,
        spec: &EntrySpec,
        now: DateTime<Utc>,
        max: u32,
    ) -> Result<IpEntry, StoreError> {
        let mut s = self.lock();
        s.require_agent(agent)?;
        Quota::IpEntries.admit(max, s.ip_entries_held(agent, now), 1)?;
        lifecycle::admit_entry(s.entries.values().filter(|e| e.agent_id == agent), spec, now)?;
        let entry = lifecycle::admitted_entry(agent, spec, now);
        s.entries.insert(entry.id, entry.clone());
        s.bump(agent);
        Ok(entry)
    }

    async fn list_ip_entries(
        &self,
        agent: AgentId,
        list: Option<ListType>,
        now: DateTime<Utc>,
    ) -> Result<Vec<IpEntry>, StoreError> {
        let s = self.lock();
        let mut entries: Vec<IpEntry> = s
            .entries
            .values()
            .filter(|e| e.agent_id == agent && !e.is_expired(now))
            .filter(|e| list.is_none_or(|l| e.spec.list_type == l))
            .cloned()
            .collect();
        entries.sort_by_key(|e| (e.created_at, e.id));
        Ok(entries)
    }

    async fn delete_ip_entry(&self, agent: AgentId, id: IpEntryId) -> DeleteResult {
        delete_from(|s| &mut s.entries, &mut self.lock(), agent, &id)
    }

    async fn purge_expired(&self, agent: AgentId, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut s = self.lock();
        let before = s.entries.len();
        s.entries.retain(|_, e| e.agent_id != agent || !e.is_expired(now));
        let purged = before - s.entries.len();
        if purged > 0 {
            s.bump(agent);
        }
        Ok(purged)
    }

    async fn next_expiry(&self, agent: AgentId, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        let s = self.lock();
        Ok(s.entries
            .values()
            .filter(|e| e.agent_id == agent)
            .filter_map(|e| e.spec.expires_at)
            .filter(|at| *at > now)
            .min())
    }
}

#[async_trait]
impl FirewallStore for MemoryStore {
    async fn create_firewall_rule(&self, rule: &FirewallRule, max: u32) -> Result<(), StoreError> {
        let mut s = self.lock();
        s.require_agent(rule.agent_id)?;
        let held = quota::firewall_rules_held(s.firewall.values().filter(|f| f.agent_id == rule.agent_id));
        Quota::FirewallRules.admit(max, held, u64::from(quota::charges_firewall_rule(rule)))?;
        s.firewall.insert(rule.id, rule.clone());
        s.bump(rule.agent_id);
        Ok(())
    }

    async fn list_firewall_rules(&self, agent: AgentId) -> Result<Vec<FirewallRule>, StoreError> {
        let mut rules: Vec<FirewallRule> =
            self.lock().firewall.values().filter(|f| f.agent_id == agent).cloned().collect();
        FirewallRule::list_order(&mut rules);
        Ok(rules)
    }

    async fn delete_firewall_rule(&self, agent: AgentId, id: FirewallRuleId) -> DeleteResult {
        delete_from(|s| &mut s.firewall, &mut self.lock(), agent, &id)
    }
}

#[async_trait]
impl SyncStore for MemoryStore {
    async fn revision(&self, agent: AgentId) -> Result<u64, StoreError> {
        Ok(self.lock().agents.get(&agent).ok_or(StoreError::NotFound)?.revision)
    }

    async fn apply_report(&self, agent: AgentId, report: &SyncReport, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut s = self.lock();
        s.require_agent(agent)?;
        let items = lifecycle::phases(s.rules.values(), agent)
            .chain(lifecycle::phases(s.entries.values(), agent))
            .chain(lifecycle::phases(s.firewall.values(), agent))
            .collect::<Vec<_>>();
        let plan = lifecycle::plan_report(items, report);
        s.rules.retain(|_, r| lifecycle::keeps(r, agent, &plan, now));
        s.entries.retain(|_, e| lifecycle::keeps(e, agent, &plan, now));
        s.firewall.retain(|_, f| lifecycle::keeps(f, agent, &plan, now));
        lifecycle::set_counters(s.firewall.values_mut(), agent, &report.firewall_counters);
        if plan.bump {
            s.bump(agent);
        }
        Ok(())
    }
}

#[async_trait]
impl MetricsStore for MemoryStore {
    async fn ingest_metrics(
        &self,
        agent: AgentId,
        report: &MetricsReport,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut s = self.lock();
        s.require_agent(agent)?;
        let (seen, order) = s.reports.entry(agent).or_default();
        if seen.contains(&report.report_id) {
            return Ok(false);
        }
        seen.insert(report.report_id.clone());
        order.push_back(report.report_id.clone());
        if order.len() > REMEMBERED_REPORTS
            && let Some(old) = order.pop_front()
        {
            seen.remove(&old);
        }
        let bucket = Interval::Minute.bucket_of(now);
        for sample in &report.ports {
            s.minutes.entry((agent, bucket, sample.port)).or_default().add(sample.counters);
        }
        lifecycle::set_counters(s.firewall.values_mut(), agent, &report.firewall_counters);
        Ok(true)
    }

    async fn metrics_by_port(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<u16, Counters>, StoreError> {
        let s = self.lock();
        let mut per_port: BTreeMap<u16, Counters> = BTreeMap::new();
        for ((_, _, port), counters) in s.minutes.range((agent, from, 0)..(agent, to, 0)) {
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
        let s = self.lock();
        let mut rows: BTreeMap<(DateTime<Utc>, u16), Counters> = BTreeMap::new();
        for ((_, minute, p), counters) in s.minutes.range((agent, from, 0)..(agent, to, 0)) {
            if port.is_none_or(|want| want == *p) {
                rows.entry((interval.bucket_of(*minute), *p)).or_default().add(*counters);
            }
        }
        Ok(rows.into_iter().map(|((bucket, port), counters)| MetricBucket { bucket, port, counters }).collect())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn start_session(&self, session: &PanelSession, keep: usize) -> Result<(), StoreError> {
        let mut s = self.lock();
        if !s.keys.contains_key(&session.key_hash) {
            return Err(StoreError::NotFound);
        }
        if s.sessions.contains_key(&session.token_hash) {
            return Err(StoreError::Duplicate { existing: "panel session".into() });
        }
        let account: Vec<PanelSession> =
            s.sessions.values().filter(|(o, _)| o.account == session.account).map(|(o, _)| o.clone()).collect();
        for ended in panel::sessions_to_end(&account, &session.token_hash, keep) {
            s.sessions.remove(&ended);
        }
        s.sessions.insert(session.token_hash, (session.clone(), None));
        Ok(())
    }

    async fn session(&self, token: &SecretHash) -> Result<Option<PanelSession>, StoreError> {
        Ok(self.lock().sessions.get(token).map(|(session, _)| session.clone()))
    }

    async fn renew_session(
        &self,
        token: &SecretHash,
        last_seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some((session, _)) = self.lock().sessions.get_mut(token) {
            session.last_seen_at = last_seen_at;
            session.expires_at = expires_at;
        }
        Ok(())
    }

    async fn set_session_notice(&self, token: &SecretHash, notice: &[u8]) -> Result<(), StoreError> {
        if let Some((_, slot)) = self.lock().sessions.get_mut(token) {
            *slot = Some(notice.to_vec());
        }
        Ok(())
    }

    async fn take_session_notice(&self, token: &SecretHash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().sessions.get_mut(token).and_then(|(_, slot)| slot.take()))
    }

    async fn end_session(&self, token: &SecretHash) -> Result<(), StoreError> {
        self.lock().sessions.remove(token);
        Ok(())
    }

    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut s = self.lock();
        let before = s.sessions.len();
        s.sessions.retain(|_, (session, _)| session.expires_at > now);
        Ok(before - s.sessions.len())
    }
}

#[cfg(test)]
mod conformance {
    use super::MemoryStore;

    crate::store_conformance_tests!(|| async { Some(MemoryStore::new()) });
}
