//! The persistence port.
//!
//! A [`Store`] keeps accounts, keys, agents, their rules, entries and
//! firewall rules, and their traffic figures. The contract each method
//! documents is checked for every implementation by the conformance suite
//! in `testing` (feature `testing`).
//!
//! Two guarantees carry the API's promises and MUST hold even with several
//! server processes on one database:
//! - **Atomic admission.** [`RuleStore::create_engine_rule`] checks dedup and
//!   takes the lowest free slot in one atomic step: of two concurrent
//!   creates on the same port range exactly one succeeds and the other gets
//!   [`StoreError::Duplicate`]; concurrent creates never share a slot.
//!   [`IpListStore::create_ip_entry`] is atomic the same way.
//! - **Quotas hold under concurrency.** Every create that a quota bounds
//!   ([`crate::quota`]) takes the figure as an argument, counts what the
//!   account or agent holds and inserts in one atomic step: of concurrent
//!   creates with room for one, exactly one succeeds and the others get
//!   [`StoreError::QuotaExceeded`].
//! - **Revisions.** Every change to what an agent must enforce bumps that
//!   agent's revision in the same transaction, so a sync that saw revision
//!   N and a later read that sees N again saw the same desired state.
//!
//! The port is split by role ([`AccountStore`], [`AgentStore`],
//! [`RuleStore`], [`IpListStore`], [`FirewallStore`], [`SyncStore`],
//! [`MetricsStore`], [`SessionStore`]); [`Store`] is their sum. A store
//! that wraps another and changes only some roles (a cache, say) passes
//! the others through with [`pass`].
//!
//! Stores decide nothing themselves: admission, status moves and report
//! handling are [`crate::lifecycle`]'s pure functions, run by each store
//! inside its transaction, so that every backend writes the same plan.

pub mod pass;

/// Every role trait, for callers that use a concrete store's methods:
/// `use pakkt_core::store::prelude::*;`.
pub mod prelude {
    pub use super::{
        AccountStore, AgentStore, FirewallStore, IpListStore, MetricsStore, RuleStore, SessionStore, Store, SyncStore,
    };
}

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::account::{Account, AccountName, ApiKeyRecord, SecretHash};
use crate::agent::{Agent, HostInfo};
use crate::firewall::FirewallRule;
use crate::id::{AccountId, AgentId, ApiKeyId, EngineRuleId, FirewallRuleId, IpEntryId};
use crate::ip_list::{EntrySpec, IpEntry, ListType};
use crate::lifecycle::Deletion;
use crate::metrics::{Counters, Interval, MetricBucket, MetricsReport};
use crate::panel::PanelSession;
use crate::quota::QuotaExceeded;
use crate::rule::{EngineRule, RuleSpec};
use crate::sync::{DesiredState, SyncReport};

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The item the operation needs does not exist (or is not the caller's).
    #[error("not found")]
    NotFound,
    /// The item would duplicate an existing one.
    #[error("duplicate of {existing}")]
    Duplicate {
        /// The existing item's ID (or name, for accounts).
        existing: String,
    },
    /// All 256 engine slots of the agent are held.
    #[error("all engine slots are held")]
    SlotsExhausted,
    /// The create would take the account or agent over one of its quotas.
    #[error(transparent)]
    QuotaExceeded(#[from] QuotaExceeded),
    /// The database was created by a newer PAKKT than this one.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// The database's version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// The backend failed (I/O, connection, corruption …).
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The outcome of a delete that found its item.
pub type DeleteResult = Result<Deletion, StoreError>;

/// Accounts and their API keys.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account. MUST return `Duplicate` if the name is taken.
    async fn create_account(&self, name: &AccountName, now: DateTime<Utc>) -> Result<Account, StoreError>;

    /// The account of that name, if any.
    async fn account_by_name(&self, name: &AccountName) -> Result<Option<Account>, StoreError>;

    /// Suspends or resumes an account and returns it. MUST return
    /// `NotFound` for an unknown name.
    async fn set_suspended(&self, name: &AccountName, suspended: bool) -> Result<Account, StoreError>;

    /// Stores a new key, atomically with the check that its account holds
    /// fewer than `max` keys ([`Quota::ApiKeys`](crate::quota::Quota);
    /// revoked keys are gone and do not count). MUST return
    /// `QuotaExceeded` when it holds `max` or more, `Duplicate` if the
    /// hash exists, `NotFound` if the account does not.
    async fn insert_api_key(&self, key: &ApiKeyRecord, max: u32) -> Result<(), StoreError>;

    /// Makes `key` the only key of its account (atomically revoking the
    /// others, and ending their panel sessions). Idempotent. No quota
    /// applies: one key is always allowed.
    async fn replace_api_keys(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// Revokes a key and ends its panel sessions ([`SessionStore`]). MUST
    /// return `NotFound` for an unknown ID.
    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), StoreError>;

    /// The key with that hash and its account, if the key exists.
    async fn key_by_hash(&self, hash: &SecretHash) -> Result<Option<(ApiKeyRecord, Account)>, StoreError>;

    /// The account's keys, oldest first (creation time, then ID). MUST
    /// return an empty list, not `NotFound`, for an account without keys
    /// or an unknown account, and never another account's key.
    async fn list_api_keys(&self, account: AccountId) -> Result<Vec<ApiKeyRecord>, StoreError>;
}

/// Agents, their tokens and what they last said about their host.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AgentStore: Send + Sync + 'static {
    /// Stores a new agent with its token hash and its system firewall
    /// rules, at revision 1, atomically with the check that its account
    /// holds fewer than `max` agents ([`Quota::Agents`](crate::quota::Quota);
    /// deleted agents are gone and do not count). MUST return
    /// `QuotaExceeded` when it holds `max` or more, `NotFound` if the
    /// account does not exist.
    async fn insert_agent(
        &self,
        agent: &Agent,
        token: &SecretHash,
        system_rules: &[FirewallRule],
        max: u32,
    ) -> Result<(), StoreError>;

    /// The account's agents, oldest first.
    async fn list_agents(&self, account: AccountId) -> Result<Vec<Agent>, StoreError>;

    /// One of the account's agents.
    async fn get_agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>, StoreError>;

    /// Deletes an agent, its token and everything on it. MUST return
    /// `NotFound` if the account has no such agent.
    async fn delete_agent(&self, account: AccountId, id: AgentId) -> Result<(), StoreError>;

    /// The agent whose token has that hash.
    async fn agent_by_token(&self, token: &SecretHash) -> Result<Option<Agent>, StoreError>;

    /// Records that the agent synced at `now`, reporting `host`.
    async fn record_sync(&self, agent: AgentId, host: &HostInfo, now: DateTime<Utc>) -> Result<(), StoreError>;
}

/// Engine rules.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RuleStore: Send + Sync + 'static {
    /// Admits a rule atomically, by [`crate::lifecycle::admit_rule`] on the
    /// agent's rules read inside the same transaction: `Duplicate` (with
    /// the existing rule's ID) or `SlotsExhausted` as it refuses; else
    /// stores it `pending_load` in the slot it chose and bumps the
    /// revision. `NotFound` if the agent is gone.
    async fn create_engine_rule(
        &self,
        agent: AgentId,
        name: &str,
        spec: &RuleSpec,
        now: DateTime<Utc>,
    ) -> Result<EngineRule, StoreError>;

    /// The agent's engine rules, oldest first.
    async fn list_engine_rules(&self, agent: AgentId) -> Result<Vec<EngineRule>, StoreError>;

    /// Applies [`crate::lifecycle::on_delete`] and bumps the revision if
    /// anything changed. `NotFound` if the agent has no such rule.
    async fn delete_engine_rule(&self, agent: AgentId, id: EngineRuleId) -> DeleteResult;
}

/// IP list entries.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait IpListStore: Send + Sync + 'static {
    /// Admits an entry atomically: `QuotaExceeded` if the agent already
    /// holds `max` entries that count at `now`
    /// ([`crate::quota::charges_entry`]; 422 comes before 409); else
    /// `Duplicate` if an unexpired `pending_add` or `active` entry of the
    /// agent has the same list and prefix
    /// ([`crate::lifecycle::admit_entry`]); else stores it `pending_add`
    /// and bumps the revision. `NotFound` if the agent is gone.
    async fn create_ip_entry(
        &self,
        agent: AgentId,
        spec: &EntrySpec,
        now: DateTime<Utc>,
        max: u32,
    ) -> Result<IpEntry, StoreError>;

    /// The agent's entries that have not expired at `now`, optionally of
    /// one list, oldest first.
    async fn list_ip_entries(
        &self,
        agent: AgentId,
        list: Option<ListType>,
        now: DateTime<Utc>,
    ) -> Result<Vec<IpEntry>, StoreError>;

    /// As [`RuleStore::delete_engine_rule`], for an entry.
    async fn delete_ip_entry(&self, agent: AgentId, id: IpEntryId) -> DeleteResult;

    /// Deletes the agent's entries that expired at or before `now` and, if
    /// there were any, bumps its revision. Returns how many went.
    async fn purge_expired(&self, agent: AgentId, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// The earliest expiry after `now` among the agent's entries.
    async fn next_expiry(&self, agent: AgentId, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError>;
}

/// Firewall (nftables) rules.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait FirewallStore: Send + Sync + 'static {
    /// Stores a new firewall rule and bumps the revision, atomically with
    /// the check that the agent holds fewer than `max` rules that count
    /// ([`crate::quota::charges_firewall_rule`]: system rules and deleted
    /// ones do not): `QuotaExceeded` otherwise. `NotFound` if the agent is
    /// gone.
    async fn create_firewall_rule(&self, rule: &FirewallRule, max: u32) -> Result<(), StoreError>;

    /// The agent's firewall rules in list order
    /// ([`crate::firewall::FirewallRule::list_order`]): system rules
    /// first, then creation order.
    async fn list_firewall_rules(&self, agent: AgentId) -> Result<Vec<FirewallRule>, StoreError>;

    /// As [`RuleStore::delete_engine_rule`], for a firewall rule. Stores do
    /// not protect system rules; the use case refuses them before calling.
    async fn delete_firewall_rule(&self, agent: AgentId, id: FirewallRuleId) -> DeleteResult;
}

/// What an agent has applied: its revision and its reports.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SyncStore: Send + Sync + 'static {
    /// The agent's current revision, without reading its items: a held
    /// sync checks it before it waits. `NotFound` if the agent is gone.
    async fn revision(&self, agent: AgentId) -> Result<u64, StoreError>;

    /// Writes, atomically, the [`crate::lifecycle::plan_report`] of the
    /// report over the agent's items (read inside the same transaction)
    /// and the report's firewall counters. A planned failure bumps the
    /// revision (the failed item leaves the desired state). Items the
    /// report names that the agent does not have are ignored.
    async fn apply_report(&self, agent: AgentId, report: &SyncReport, now: DateTime<Utc>) -> Result<(), StoreError>;
}

/// Traffic figures.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait MetricsStore: Send + Sync + 'static {
    /// Adds the report's increments to the agent's one-minute buckets at
    /// `now` and sets the counters of the agent's firewall rules that the
    /// report names (IDs of other agents' rules, or of none, are ignored),
    /// atomically. Returns `false` and changes nothing if a report with the
    /// same ID was already stored for this agent.
    async fn ingest_metrics(
        &self,
        agent: AgentId,
        report: &MetricsReport,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Per-port totals over buckets starting in `[from, to)`.
    async fn metrics_by_port(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<u16, Counters>, StoreError>;

    /// Buckets of `interval` starting in `[from, to)`, one row per (bucket,
    /// port) with traffic, optionally for one port, ordered by bucket then
    /// port.
    async fn metrics_history(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        interval: Interval,
        port: Option<u16>,
    ) -> Result<Vec<MetricBucket>, StoreError>;
}

/// Web panel sessions ([`crate::panel`]), found by the hash of their
/// token. The store keeps the session's fields and one opaque notice (the
/// panel seals it; the store never reads it); it decides nothing but the
/// per-account cap, which it applies atomically with the start.
///
/// A session belongs to its key: [`AccountStore::revoke_api_key`] and
/// [`AccountStore::replace_api_keys`] end the sessions of the keys they
/// remove.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session and, atomically with it, ends the sessions of
    /// the same account that [`crate::panel::sessions_to_end`] names for
    /// `keep` (never the new one): of two concurrent starts, neither can
    /// leave the account above `keep`. MUST return `NotFound` if no key
    /// has `session.key_hash` (it was revoked meanwhile), and `Duplicate`
    /// if a session has its token hash.
    async fn start_session(&self, session: &PanelSession, keep: usize) -> Result<(), StoreError>;

    /// The session with that token hash, live or expired (the caller
    /// judges), if any.
    async fn session(&self, token: &SecretHash) -> Result<Option<PanelSession>, StoreError>;

    /// Records a use: sets the session's `last_seen_at` and `expires_at`.
    /// Nothing happens if the session is gone.
    async fn renew_session(
        &self,
        token: &SecretHash,
        last_seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Sets the session's one-time notice, replacing any. Nothing happens
    /// if the session is gone.
    async fn set_session_notice(&self, token: &SecretHash, notice: &[u8]) -> Result<(), StoreError>;

    /// Takes the session's notice: returns it and clears it, atomically, so
    /// that of concurrent takes at most one gets it. `None` if there is
    /// none (or no session).
    async fn take_session_notice(&self, token: &SecretHash) -> Result<Option<Vec<u8>>, StoreError>;

    /// Ends a session (with its notice). Nothing happens if it is gone.
    async fn end_session(&self, token: &SecretHash) -> Result<(), StoreError>;

    /// Ends every session whose `expires_at` is at or before `now`; returns
    /// how many.
    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;
}

/// Persistence for everything PAKKT knows: the sum of the role traits,
/// implemented for every type that implements them all.
///
/// Methods scoped by an `agent` ID act only on that agent's items; an item
/// ID of another agent MUST behave as absent. Methods never validate domain
/// rules (use cases do, before calling) except the atomic admission checks.
#[async_trait]
pub trait Store:
    AccountStore + AgentStore + RuleStore + IpListStore + FirewallStore + SyncStore + MetricsStore + SessionStore
{
    /// What the agent must enforce now: rules `pending_load`/`loaded` by
    /// slot, unexpired entries `pending_add`/`active`, firewall rules
    /// `pending_add`/`active` in list order, and the current revision.
    ///
    /// The revision is read before the items: items at least as new as the
    /// revision can only make an agent sync once more, never miss a change.
    async fn desired_state(&self, agent: AgentId, now: DateTime<Utc>) -> Result<DesiredState, StoreError> {
        let revision = self.revision(agent).await?;
        let rules = self.list_engine_rules(agent).await?;
        let entries = self.list_ip_entries(agent, None, now).await?;
        let firewall = self.list_firewall_rules(agent).await?;
        Ok(DesiredState::from_items(revision, &rules, &entries, &firewall, now))
    }
}

impl<T> Store for T where
    T: AccountStore + AgentStore + RuleStore + IpListStore + FirewallStore + SyncStore + MetricsStore + SessionStore
{
}
