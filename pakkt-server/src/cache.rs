//! A short-lived read cache in front of the store for the reads every
//! request makes: the API key's lookup (or the agent token's, on the agent
//! routes) and, for `GET /agents`, the account's agents.
//!
//! Without it each such request is two database round trips, and with
//! SQLite each round trip is a hand-off to the connection's worker thread
//! and back; the cache serves repeated requests from memory.
//!
//! Consistency:
//! - every write through this process that could change a cached answer
//!   (key revocation or replacement, suspension, an agent's creation,
//!   deletion or sync) drops the answers it touches before it returns, and
//!   a read that raced with such a write is not cached;
//! - a write by another process is seen within a bound: key and account
//!   changes (the `keys`/`accounts` commands, another replica's bootstrap
//!   key) within [`KEY_CACHE_TTL`], and the commands wait that long before
//!   they return, so a running server answers accordingly once a command
//!   has exited; agent changes made by another replica within
//!   [`AGENTS_CACHE_TTL`], and an agent deleted through another replica
//!   loses its token within [`KEY_CACHE_TTL`] (its replica announces the
//!   deletion, which drops the token here at once when the announcement
//!   arrives).
//!
//! With the default limit of 60 requests a minute per key, a key sending
//! at its limit makes a request a second on average, so the key lookup is
//! cached for a few seconds to be of use; agent listings change more often
//! and are cached for one.
//!
//! Only successful lookups are cached: an unknown key or token always asks
//! the database, so a new one works at once. A cached token's agent is
//! only used for its identity: its host details may be up to
//! [`KEY_CACHE_TTL`] old.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pakkt_core::account::{Account, AccountName, ApiKeyRecord, SecretHash};
use pakkt_core::agent::{Agent, HostInfo};
use pakkt_core::firewall::FirewallRule;
use pakkt_core::id::{AccountId, AgentId, ApiKeyId};
use pakkt_core::store::pass::{PassFirewall, PassIpLists, PassMetrics, PassRules, PassSessions, PassSync};
use pakkt_core::store::{
    AccountStore, AgentStore, FirewallStore, IpListStore, MetricsStore, RuleStore, SessionStore, StoreError, SyncStore,
};

/// How long a key lookup may be served from the cache. Keys and accounts
/// change only through the operator's commands, which wait this long.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// How long an account's agent listing may be served from the cache. Local
/// changes drop it at once; this bounds what other replicas' changes take.
pub const AGENTS_CACHE_TTL: Duration = Duration::from_secs(1);

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 50_000;

#[derive(Debug, Default)]
struct Entries {
    /// Bumped by every invalidation of `keys`; a lookup that saw another
    /// value is not cached.
    keys_generation: u64,
    keys: HashMap<SecretHash, (Instant, ApiKeyRecord, Account)>,
    /// The same for `agents`.
    agents_generation: u64,
    agents: HashMap<AccountId, (Instant, Vec<Agent>)>,
    /// The same for agent tokens.
    tokens_generation: u64,
    tokens: HashMap<SecretHash, (Instant, Agent)>,
}

impl Entries {
    fn forget_keys(&mut self, mut stale: impl FnMut(&ApiKeyRecord, &Account) -> bool) {
        self.keys_generation = self.keys_generation.wrapping_add(1);
        self.keys.retain(|_, (_, record, account)| !stale(record, account));
    }

    fn forget_tokens(&mut self, mut stale: impl FnMut(&Agent) -> bool) {
        self.tokens_generation = self.tokens_generation.wrapping_add(1);
        self.tokens.retain(|_, (_, agent)| !stale(agent));
    }

    fn forget_agents(&mut self, mut stale: impl FnMut(AccountId, &[Agent]) -> bool) {
        self.agents_generation = self.agents_generation.wrapping_add(1);
        self.agents.retain(|account, (_, agents)| !stale(*account, agents));
    }
}

/// A [`Store`](pakkt_core::store::Store) that caches key lookups and agent
/// listings (see the module docs). It implements the two roles it caches,
/// accounts and agents; the others pass through to the store behind it.
#[derive(Debug)]
pub struct CachedStore<S> {
    inner: S,
    entries: Mutex<Entries>,
}

impl<S> CachedStore<S> {
    /// `inner` behind the cache.
    pub fn new(inner: S) -> Self {
        Self { inner, entries: Mutex::new(Entries::default()) }
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Drops every cached key lookup and agent listing: another replica
    /// announced a change to keys or accounts, or announcements may have
    /// been missed.
    pub fn forget_all(&self) {
        let mut entries = self.lock();
        entries.forget_keys(|_, _| true);
        entries.forget_agents(|_, _| true);
        entries.forget_tokens(|_| true);
    }

    /// Drops what is cached about `agent`: another replica announced a
    /// change to it (its deletion, say).
    pub fn forget_agent(&self, agent: AgentId) {
        let mut entries = self.lock();
        entries.forget_tokens(|cached| cached.id == agent);
        entries.forget_agents(|_, agents| agents.iter().any(|a| a.id == agent));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `forget` on the entries once a write is done, whatever its
    /// outcome (a failed write may still have committed).
    fn after_write<T>(
        &self,
        outcome: Result<T, StoreError>,
        forget: impl FnOnce(&mut Entries),
    ) -> Result<T, StoreError> {
        forget(&mut self.lock());
        outcome
    }
}

macro_rules! passes_through {
    ($($pass:ident :: $get:ident => $role:ident),* $(,)?) => {$(
        impl<S: $role> $pass for CachedStore<S> {
            type To = S;
            fn $get(&self) -> &S {
                &self.inner
            }
        }
    )*};
}

passes_through!(
    PassRules::rules => RuleStore,
    PassIpLists::ip_lists => IpListStore,
    PassFirewall::firewall => FirewallStore,
    PassSync::sync => SyncStore,
    PassMetrics::metrics => MetricsStore,
    PassSessions::sessions => SessionStore,
);

#[async_trait]
impl<S: AccountStore> AccountStore for CachedStore<S> {
    async fn create_account(&self, name: &AccountName, now: DateTime<Utc>) -> Result<Account, StoreError> {
        self.inner.create_account(name, now).await
    }

    async fn account_by_name(&self, name: &AccountName) -> Result<Option<Account>, StoreError> {
        self.inner.account_by_name(name).await
    }

    async fn set_suspended(&self, name: &AccountName, suspended: bool) -> Result<Account, StoreError> {
        let outcome = self.inner.set_suspended(name, suspended).await;
        self.after_write(outcome, |e| e.forget_keys(|_, account| account.name == *name))
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, max: u32) -> Result<(), StoreError> {
        self.inner.insert_api_key(key, max).await
    }

    async fn replace_api_keys(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let outcome = self.inner.replace_api_keys(key).await;
        self.after_write(outcome, |e| e.forget_keys(|record, _| record.account_id == key.account_id))
    }

    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), StoreError> {
        let outcome = self.inner.revoke_api_key(id).await;
        self.after_write(outcome, |e| e.forget_keys(|record, _| record.id == id))
    }

    async fn key_by_hash(&self, hash: &SecretHash) -> Result<Option<(ApiKeyRecord, Account)>, StoreError> {
        let generation = {
            let entries = self.lock();
            if let Some((at, record, account)) = entries.keys.get(hash)
                && at.elapsed() < KEY_CACHE_TTL
            {
                return Ok(Some((record.clone(), account.clone())));
            }
            entries.keys_generation
        };
        let found = self.inner.key_by_hash(hash).await?;
        if let Some((record, account)) = &found {
            let mut entries = self.lock();
            if entries.keys_generation == generation {
                if entries.keys.len() >= SWEEP_AT {
                    entries.keys.retain(|_, (at, _, _)| at.elapsed() < KEY_CACHE_TTL);
                }
                entries.keys.insert(*hash, (Instant::now(), record.clone(), account.clone()));
            }
        }
        Ok(found)
    }

    async fn list_api_keys(&self, account: AccountId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.inner.list_api_keys(account).await
    }
}

#[async_trait]
impl<S: AgentStore> AgentStore for CachedStore<S> {
    async fn insert_agent(
        &self,
        agent: &Agent,
        token: &SecretHash,
        system_rules: &[FirewallRule],
        max: u32,
    ) -> Result<(), StoreError> {
        let outcome = self.inner.insert_agent(agent, token, system_rules, max).await;
        self.after_write(outcome, |e| e.forget_agents(|account, _| account == agent.account_id))
    }

    async fn list_agents(&self, account: AccountId) -> Result<Vec<Agent>, StoreError> {
        let generation = {
            let entries = self.lock();
            if let Some((at, agents)) = entries.agents.get(&account)
                && at.elapsed() < AGENTS_CACHE_TTL
            {
                return Ok(agents.clone());
            }
            entries.agents_generation
        };
        let agents = self.inner.list_agents(account).await?;
        let mut entries = self.lock();
        if entries.agents_generation == generation {
            if entries.agents.len() >= SWEEP_AT {
                entries.agents.retain(|_, (at, _)| at.elapsed() < AGENTS_CACHE_TTL);
            }
            entries.agents.insert(account, (Instant::now(), agents.clone()));
        }
        Ok(agents)
    }

    async fn get_agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>, StoreError> {
        self.inner.get_agent(account, id).await
    }

    async fn delete_agent(&self, account: AccountId, id: AgentId) -> Result<(), StoreError> {
        let outcome = self.inner.delete_agent(account, id).await;
        self.after_write(outcome, |e| {
            e.forget_agents(|owner, _| owner == account);
            e.forget_tokens(|agent| agent.id == id);
        })
    }

    async fn agent_by_token(&self, token: &SecretHash) -> Result<Option<Agent>, StoreError> {
        let generation = {
            let entries = self.lock();
            if let Some((at, agent)) = entries.tokens.get(token)
                && at.elapsed() < KEY_CACHE_TTL
            {
                return Ok(Some(agent.clone()));
            }
            entries.tokens_generation
        };
        let found = self.inner.agent_by_token(token).await?;
        if let Some(agent) = &found {
            let mut entries = self.lock();
            if entries.tokens_generation == generation {
                if entries.tokens.len() >= SWEEP_AT {
                    entries.tokens.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
                }
                entries.tokens.insert(*token, (Instant::now(), agent.clone()));
            }
        }
        Ok(found)
    }

    async fn record_sync(&self, agent: AgentId, host: &HostInfo, now: DateTime<Utc>) -> Result<(), StoreError> {
        let outcome = self.inner.record_sync(agent, host, now).await;
        self.after_write(outcome, |e| e.forget_agents(|_, agents| agents.iter().any(|a| a.id == agent)))
    }
}

#[cfg(test)]
mod tests {
    use pakkt_core::memory::MemoryStore;
    use pakkt_core::service::Pakkt;

    use super::*;

    #[tokio::test]
    async fn local_writes_are_seen_at_once() {
        let core = Pakkt::new(CachedStore::new(MemoryStore::new()));
        let name: AccountName = "acme".parse().expect("name");
        let (record, key) = core.create_api_key(&name).await.expect("key");
        let session = core.authenticate(Some(key.expose())).await.expect("auth");
        assert!(core.authenticate(Some(key.expose())).await.is_ok(), "served from the cache");
        assert!(core.list_agents(&session).await.expect("list").is_empty());
        let created = core
            .create_agent(&session, &pakkt_core::wire::CreateAgentRequest { name: "web".into() })
            .await
            .expect("agent");
        assert_eq!(core.list_agents(&session).await.expect("list").len(), 1);
        core.delete_agent(&session, created.agent.id).await.expect("delete");
        assert!(core.list_agents(&session).await.expect("list").is_empty());
        core.set_suspended(&name, true).await.expect("suspend");
        assert!(matches!(core.authenticate(Some(key.expose())).await, Err(pakkt_core::Error::AccountSuspended)));
        core.set_suspended(&name, false).await.expect("resume");
        core.revoke_api_key(record.id).await.expect("revoke");
        assert!(matches!(core.authenticate(Some(key.expose())).await, Err(pakkt_core::Error::Unauthenticated)));
    }

    #[tokio::test]
    async fn writes_elsewhere_are_seen_within_the_ttl() {
        let name: AccountName = "acme".parse().expect("name");
        let store = std::sync::Arc::new(MemoryStore::new());
        // Two `Pakkt`s over one store, as two processes over one database.
        let direct = Pakkt::new(std::sync::Arc::clone(&store));
        let cached = Pakkt::new(CachedStore::new(store));
        let (_, key) = direct.create_api_key(&name).await.expect("key");
        assert!(cached.authenticate(Some(key.expose())).await.is_ok());
        direct.set_suspended(&name, true).await.expect("suspend elsewhere");
        tokio::time::sleep(KEY_CACHE_TTL).await;
        assert!(matches!(cached.authenticate(Some(key.expose())).await, Err(pakkt_core::Error::AccountSuspended)));
    }
}
