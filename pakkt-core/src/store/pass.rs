//! Passing store roles through to another store.
//!
//! A store that wraps another and changes only some roles (the server's
//! read cache changes the accounts and agents roles) implements those
//! roles itself and, for each other role, says where to find it with one
//! of these traits; the role is then implemented by plain delegation,
//! written once here. [`std::sync::Arc`] passes every role through, so one
//! store can be shared by several services.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    AccountStore, AgentStore, DeleteResult, FirewallStore, IpListStore, MetricsStore, RuleStore, SessionStore,
    StoreError, SyncStore,
};
use crate::account::{Account, AccountName, ApiKeyRecord, SecretHash};
use crate::agent::{Agent, HostInfo};
use crate::firewall::FirewallRule;
use crate::id::{AccountId, AgentId, ApiKeyId, EngineRuleId, FirewallRuleId, IpEntryId};
use crate::ip_list::{EntrySpec, IpEntry, ListType};
use crate::metrics::{Counters, Interval, MetricBucket, MetricsReport};
use crate::panel::PanelSession;
use crate::rule::{EngineRule, RuleSpec};
use crate::sync::SyncReport;

/// Implements [`AccountStore`] by passing it through to [`Self::accounts`].
pub trait PassAccounts: Send + Sync + 'static {
    /// The store that answers.
    type To: AccountStore + ?Sized;
    /// That store.
    fn accounts(&self) -> &Self::To;
}

/// Implements [`AgentStore`] by passing it through to [`Self::agents`].
pub trait PassAgents: Send + Sync + 'static {
    /// The store that answers.
    type To: AgentStore + ?Sized;
    /// That store.
    fn agents(&self) -> &Self::To;
}

/// Implements [`RuleStore`] by passing it through to [`Self::rules`].
pub trait PassRules: Send + Sync + 'static {
    /// The store that answers.
    type To: RuleStore + ?Sized;
    /// That store.
    fn rules(&self) -> &Self::To;
}

/// Implements [`IpListStore`] by passing it through to [`Self::ip_lists`].
pub trait PassIpLists: Send + Sync + 'static {
    /// The store that answers.
    type To: IpListStore + ?Sized;
    /// That store.
    fn ip_lists(&self) -> &Self::To;
}

/// Implements [`FirewallStore`] by passing it through to [`Self::firewall`].
pub trait PassFirewall: Send + Sync + 'static {
    /// The store that answers.
    type To: FirewallStore + ?Sized;
    /// That store.
    fn firewall(&self) -> &Self::To;
}

/// Implements [`SyncStore`] by passing it through to [`Self::sync`].
pub trait PassSync: Send + Sync + 'static {
    /// The store that answers.
    type To: SyncStore + ?Sized;
    /// That store.
    fn sync(&self) -> &Self::To;
}

/// Implements [`MetricsStore`] by passing it through to [`Self::metrics`].
pub trait PassMetrics: Send + Sync + 'static {
    /// The store that answers.
    type To: MetricsStore + ?Sized;
    /// That store.
    fn metrics(&self) -> &Self::To;
}

/// Implements [`SessionStore`] by passing it through to [`Self::sessions`].
pub trait PassSessions: Send + Sync + 'static {
    /// The store that answers.
    type To: SessionStore + ?Sized;
    /// That store.
    fn sessions(&self) -> &Self::To;
}

#[async_trait]
impl<T: PassAccounts> AccountStore for T {
    async fn create_account(&self, name: &AccountName, now: DateTime<Utc>) -> Result<Account, StoreError> {
        self.accounts().create_account(name, now).await
    }
    async fn account_by_name(&self, name: &AccountName) -> Result<Option<Account>, StoreError> {
        self.accounts().account_by_name(name).await
    }
    async fn set_suspended(&self, name: &AccountName, suspended: bool) -> Result<Account, StoreError> {
        self.accounts().set_suspended(name, suspended).await
    }
    async fn insert_api_key(&self, key: &ApiKeyRecord, max: u32) -> Result<(), StoreError> {
        self.accounts().insert_api_key(key, max).await
    }
    async fn replace_api_keys(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        self.accounts().replace_api_keys(key).await
    }
    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), StoreError> {
        self.accounts().revoke_api_key(id).await
    }
    async fn key_by_hash(&self, hash: &SecretHash) -> Result<Option<(ApiKeyRecord, Account)>, StoreError> {
        self.accounts().key_by_hash(hash).await
    }
    async fn list_api_keys(&self, account: AccountId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.accounts().list_api_keys(account).await
    }
}

#[async_trait]
impl<T: PassAgents> AgentStore for T {
    async fn insert_agent(
        &self,
        agent: &Agent,
        token: &SecretHash,
        system: &[FirewallRule],
        max: u32,
    ) -> Result<(), StoreError> {
        self.agents().insert_agent(agent, token, system, max).await
    }
    async fn list_agents(&self, account: AccountId) -> Result<Vec<Agent>, StoreError> {
        self.agents().list_agents(account).await
    }
    async fn get_agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>, StoreError> {
        self.agents().get_agent(account, id).await
    }
    async fn delete_agent(&self, account: AccountId, id: AgentId) -> Result<(), StoreError> {
        self.agents().delete_agent(account, id).await
    }
    async fn agent_by_token(&self, token: &SecretHash) -> Result<Option<Agent>, StoreError> {
        self.agents().agent_by_token(token).await
    }
    async fn record_sync(&self, agent: AgentId, host: &HostInfo, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.agents().record_sync(agent, host, now).await
    }
}

#[async_trait]
impl<T: PassRules> RuleStore for T {
    async fn create_engine_rule(
        &self,
        agent: AgentId,
        name: &str,
        spec: &RuleSpec,
        now: DateTime<Utc>,
    ) -> Result<EngineRule, StoreError> {
        self.rules().create_engine_rule(agent, name, spec, now).await
    }
    async fn list_engine_rules(&self, agent: AgentId) -> Result<Vec<EngineRule>, StoreError> {
        self.rules().list_engine_rules(agent).await
    }
    async fn delete_engine_rule(&self, agent: AgentId, id: EngineRuleId) -> DeleteResult {
        self.rules().delete_engine_rule(agent, id).await
    }
}

#[async_trait]
impl<T: PassIpLists> IpListStore for T {
    async fn create_ip_entry(
        &self,
        agent: AgentId,
        spec: &EntrySpec,
        now: DateTime<Utc>,
        max: u32,
    ) -> Result<IpEntry, StoreError> {
        self.ip_lists().create_ip_entry(agent, spec, now, max).await
    }
    async fn list_ip_entries(
        &self,
        agent: AgentId,
        list: Option<ListType>,
        now: DateTime<Utc>,
    ) -> Result<Vec<IpEntry>, StoreError> {
        self.ip_lists().list_ip_entries(agent, list, now).await
    }
    async fn delete_ip_entry(&self, agent: AgentId, id: IpEntryId) -> DeleteResult {
        self.ip_lists().delete_ip_entry(agent, id).await
    }
    async fn purge_expired(&self, agent: AgentId, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.ip_lists().purge_expired(agent, now).await
    }
    async fn next_expiry(&self, agent: AgentId, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.ip_lists().next_expiry(agent, now).await
    }
}

#[async_trait]
impl<T: PassFirewall> FirewallStore for T {
    async fn create_firewall_rule(&self, rule: &FirewallRule, max: u32) -> Result<(), StoreError> {
        self.firewall().create_firewall_rule(rule, max).await
    }
    async fn list_firewall_rules(&self, agent: AgentId) -> Result<Vec<FirewallRule>, StoreError> {
        self.firewall().list_firewall_rules(agent).await
    }
    async fn delete_firewall_rule(&self, agent: AgentId, id: FirewallRuleId) -> DeleteResult {
        self.firewall().delete_firewall_rule(agent, id).await
    }
}

#[async_trait]
impl<T: PassSync> SyncStore for T {
    async fn revision(&self, agent: AgentId) -> Result<u64, StoreError> {
        self.sync().revision(agent).await
    }
    async fn apply_report(&self, agent: AgentId, report: &SyncReport, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.sync().apply_report(agent, report, now).await
    }
}

#[async_trait]
impl<T: PassMetrics> MetricsStore for T {
    async fn ingest_metrics(
        &self,
        agent: AgentId,
        report: &MetricsReport,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.metrics().ingest_metrics(agent, report, now).await
    }
    async fn metrics_by_port(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<u16, Counters>, StoreError> {
        self.metrics().metrics_by_port(agent, from, to).await
    }
    async fn metrics_history(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        interval: Interval,
        port: Option<u16>,
    ) -> Result<Vec<MetricBucket>, StoreError> {
        self.metrics().metrics_history(agent, from, to, interval, port).await
    }
}

#[async_trait]
impl<T: PassSessions> SessionStore for T {
    async fn start_session(&self, session: &PanelSession, keep: usize) -> Result<(), StoreError> {
        self.sessions().start_session(session, keep).await
    }
    async fn session(&self, token: &SecretHash) -> Result<Option<PanelSession>, StoreError> {
        self.sessions().session(token).await
    }
    async fn renew_session(
        &self,
        token: &SecretHash,
        last_seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.sessions().renew_session(token, last_seen_at, expires_at).await
    }
    async fn set_session_notice(&self, token: &SecretHash, notice: &[u8]) -> Result<(), StoreError> {
        self.sessions().set_session_notice(token, notice).await
    }
    async fn take_session_notice(&self, token: &SecretHash) -> Result<Option<Vec<u8>>, StoreError> {
        self.sessions().take_session_notice(token).await
    }
    async fn end_session(&self, token: &SecretHash) -> Result<(), StoreError> {
        self.sessions().end_session(token).await
    }
    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.sessions().purge_expired_sessions(now).await
    }
}

/// One store shared by several owners answers every role itself.
macro_rules! arc_passes {
    ($($pass:ident :: $get:ident => $role:ident),* $(,)?) => {$(
        impl<S: $role + ?Sized> $pass for Arc<S> {
            type To = S;
            fn $get(&self) -> &S {
                self
            }
        }
    )*};
}

arc_passes!(
    PassAccounts::accounts => AccountStore,
    PassAgents::agents => AgentStore,
    PassRules::rules => RuleStore,
    PassIpLists::ip_lists => IpListStore,
    PassFirewall::firewall => FirewallStore,
    PassSync::sync => SyncStore,
    PassMetrics::metrics => MetricsStore,
    PassSessions::sessions => SessionStore,
);
