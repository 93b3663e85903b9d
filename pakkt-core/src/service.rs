//! The use cases: one method per operation of the public API, plus agent
//! creation and deletion, the agent's sync, the operator's key and
//! account commands, and the web panel's sessions.
//!
//! [`Pakkt`] is generic over its [`Store`] and [`Clock`]. The server is a
//! thin HTTP skin over it; a hosting panel can embed it with a store of its
//! own. Every method checks, in DESIGN §2's order, that the caller may act
//! (401, 402, 429 in [`Pakkt::authenticate`]), that the item exists for
//! this account (404), that the request keeps the domain rules (422, the
//! account's [`Quotas`] included) and that it duplicates nothing (409).
//! Schema errors (400) are the edge's, except for values only the core can
//! judge (malformed IDs and query values, which convert into
//! [`Error::BadRequest`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::account::{AccountName, AgentToken, ApiKey, ApiKeyRecord, SecretHash};
use crate::agent::{Agent, HostInfo, LAST_SEEN_RESOLUTION};
use crate::clock::{Clock, SystemClock};
use crate::error::{Entity, Error, Result};
use crate::feed::ChangeFeed;
use crate::firewall::{FirewallFields, FirewallRule, FirewallSpec, SystemRole};
use crate::held::HeldPolls;
use crate::id::{AgentId, ApiKeyId, EngineRuleId, FirewallRuleId, IpEntryId};
use crate::ip_list::{EntrySpec, ListType};
use crate::metrics::{Interval, MAX_HISTORY_BUCKETS, MetricsReport, MetricsSummary, Window};
use crate::quota::Quotas;
use crate::ratelimit::{AgentLimits, RateDecision, RateLimiter, SlidingWindowLimiter};
use crate::rule::{RateLimits, RuleSpec};
use crate::store::{Store, StoreError};
use crate::sync::{DesiredState, SyncReport};
use crate::template::{self, Category, TemplateRule};
use crate::validation::{self, Invalid};
use crate::wire::{
    AgentView, CreateAgentRequest, CreateEngineRuleRequest, CreateFirewallRuleRequest, CreateIpEntryRequest,
    CreatedAgent, CreatedEngineRule, CreatedFirewallRule, CreatedIpEntry, EngineRuleView, FirewallRuleView,
    IpEntryView, MetricBucketView, MetricsSummaryView, TemplateView,
};

mod panel;

pub use panel::SignedIn;

/// The longest an agent's sync may be held waiting for a change.
pub const MAX_POLL: Duration = Duration::from_secs(25);

/// The account that `PAKKT_BOOTSTRAP_API_KEY` and first-start keys go to.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Longest failure message kept from an agent's report.
const MAX_STATUS_MESSAGE: usize = 500;

/// Most items one sync report may name.
const MAX_REPORT_ITEMS: usize = 200_000;

/// Entries of the recorded-syncs map kept before old ones are swept.
const RECORDED_SYNCS_SWEEP_AT: usize = 100_000;

/// An authenticated API caller.
#[derive(Debug, Clone)]
pub struct Session {
    /// The caller's account.
    pub account: crate::account::Account,
    /// The key used.
    pub key_id: ApiKeyId,
    /// The rate-limit state after this request (for the headers).
    pub rate: RateDecision,
}

/// A history query (`GET /metrics/:agent_id`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Start (default: 24 h before `to`).
    pub from: Option<DateTime<Utc>>,
    /// End (default: now).
    pub to: Option<DateTime<Utc>>,
    /// Bucket size (default 1m).
    pub interval: Interval,
    /// One port only.
    pub port: Option<u16>,
}

/// What applying a template created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppliedTemplate {
    /// An engine rule.
    Engine(EngineRuleView),
    /// A firewall rule.
    Firewall(FirewallRuleView),
}

/// PAKKT's use cases over a store and a clock.
pub struct Pakkt<S, C = SystemClock> {
    store: S,
    clock: C,
    limiter: Arc<dyn RateLimiter>,
    agent_limits: AgentLimits,
    quotas: Quotas,
    feed: Arc<ChangeFeed>,
    held: Arc<HeldPolls>,
    /// A fingerprint of each agent's last sync report this process applied
    /// (firewall counters aside): an agent holding a long poll repeats its
    /// report until something changes, and applying the same report twice
    /// changes nothing, so the repeat costs no write.
    applied_reports: std::sync::Mutex<HashMap<AgentId, u64>>,
    /// When this process last recorded each agent's sync, and a
    /// fingerprint of the host details it recorded (see
    /// [`LAST_SEEN_RESOLUTION`]).
    recorded_syncs: std::sync::Mutex<HashMap<AgentId, (DateTime<Utc>, u64)>>,
}

impl<S, C> std::fmt::Debug for Pakkt<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pakkt").finish_non_exhaustive()
    }
}

fn internal(e: StoreError) -> Error {
    Error::Internal(e)
}

/// A store error of a create that a quota bounds: the quota's 422, or
/// internal.
fn quota_or_internal(e: StoreError) -> Error {
    match e {
        StoreError::QuotaExceeded(e) => Error::QuotaExceeded(e),
        other => internal(other),
    }
}

impl<S: Store> Pakkt<S, SystemClock> {
    /// Use cases on `store` with the system clock, the default limit of
    /// 60 requests per rolling minute per key and the default [`Quotas`].
    pub fn new(store: S) -> Self {
        Self::with_clock(store, SystemClock)
    }
}

impl<S: Store, C: Clock> Pakkt<S, C> {
    /// Use cases on `store` with `clock`.
    pub fn with_clock(store: S, clock: C) -> Self {
        Self {
            store,
            clock,
            limiter: Arc::new(SlidingWindowLimiter::default()),
            agent_limits: AgentLimits::default(),
            quotas: Quotas::default(),
            feed: Arc::new(ChangeFeed::new()),
            held: Arc::new(HeldPolls::new()),
            applied_reports: std::sync::Mutex::new(HashMap::new()),
            recorded_syncs: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the rate limiter (another limit, or one shared by replicas).
    #[must_use]
    pub fn with_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Replaces the per-agent limits on the agent endpoints.
    #[must_use]
    pub fn with_agent_limits(mut self, limits: AgentLimits) -> Self {
        self.agent_limits = limits;
        self
    }

    /// Replaces the quotas (the operator's figures instead of the defaults).
    #[must_use]
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// The quotas in force.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Replaces the change feed (one fed by other replicas' changes too).
    #[must_use]
    pub fn with_feed(mut self, feed: Arc<ChangeFeed>) -> Self {
        self.feed = feed;
        self
    }

    /// Answers every held agent sync at once, and every later one without
    /// holding it: the process is shutting down ([`HeldPolls`]).
    pub fn release_held_polls(&self) {
        self.held.release_all();
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The change feed that wakes agents' long polls.
    pub fn feed(&self) -> &Arc<ChangeFeed> {
        &self.feed
    }

    /// The clock's now.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    // ----- authentication ------------------------------------------------

    /// Checks an `X-API-Key`: 401 if missing, malformed or unknown; 402 if
    /// its account is suspended; 429 once the key has used its requests for
    /// the rolling minute.
    pub async fn authenticate(&self, api_key: Option<&str>) -> Result<Session> {
        let key: ApiKey = api_key.and_then(|k| k.trim().parse().ok()).ok_or(Error::Unauthenticated)?;
        let (record, account) =
            self.store.key_by_hash(&key.hash()).await.map_err(internal)?.ok_or(Error::Unauthenticated)?;
        if account.suspended {
            return Err(Error::AccountSuspended);
        }
        let rate = self.take_request(record.id).await?;
        Ok(Session { account, key_id: record.id, rate })
    }

    /// Checks a key known by its hash, as a panel that signed in with
    /// [`Pakkt::authenticate`] re-checks it on each page: 401 once the key
    /// is revoked, 402 while its account is suspended. Not counted against
    /// the key's rate limit (the session's `rate` reports no limit).
    pub async fn reauthenticate(&self, key_hash: &SecretHash) -> Result<Session> {
        let (record, account) =
            self.store.key_by_hash(key_hash).await.map_err(internal)?.ok_or(Error::Unauthenticated)?;
        if account.suspended {
            return Err(Error::AccountSuspended);
        }
        let rate = RateDecision { allowed: true, limit: 0, remaining: 0, reset_after: Duration::ZERO };
        Ok(Session { account, key_id: record.id, rate })
    }

    /// Counts one request of a session that [`Pakkt::reauthenticate`]
    /// checked (a panel's form) against its key's limit, as
    /// [`Pakkt::authenticate`] counts the API's: 429 once the key has used
    /// its requests for the rolling minute. A panel's page loads are not
    /// counted; its changes are, so a signed-in browser cannot do more
    /// than the key itself.
    pub async fn count_request(&self, session: &Session) -> Result<RateDecision> {
        self.take_request(session.key_id).await
    }

    /// One request of `key` against its limit: 429 when it has none left.
    async fn take_request(&self, key: ApiKeyId) -> Result<RateDecision> {
        let rate = self.limiter.check(key, self.clock.now()).await.map_err(internal)?;
        if !rate.allowed {
            return Err(Error::RateLimited { limit: rate.limit, retry_after: rate.reset_after });
        }
        Ok(rate)
    }

    async fn agent_of(&self, session: &Session, id: AgentId) -> Result<Agent> {
        self.store
            .get_agent(session.account.id, id)
            .await
            .map_err(internal)?
            .ok_or(Error::NotFound { what: Entity::Agent })
    }

    fn changed(&self, agent: AgentId) {
        self.feed.publish(agent);
    }

    // ----- agents -----------------------------------------------------------

    /// `GET /agents`.
    pub async fn list_agents(&self, session: &Session) -> Result<Vec<AgentView>> {
        let now = self.clock.now();
        let agents = self.store.list_agents(session.account.id).await.map_err(internal)?;
        Ok(agents.iter().map(|a| AgentView::new(a, now)).collect())
    }

    /// `GET /agents/:id`.
    pub async fn get_agent(&self, session: &Session, id: AgentId) -> Result<AgentView> {
        let agent = self.agent_of(session, id).await?;
        Ok(AgentView::new(&agent, self.clock.now()))
    }

    /// `POST /agents`: a new agent with its one-time token and the system
    /// firewall rules that keep it reachable (which do not count against
    /// the firewall quota); 422 when the account holds all the agents
    /// [`Quotas::agents`] allows.
    pub async fn create_agent(&self, session: &Session, request: &CreateAgentRequest) -> Result<CreatedAgent> {
        let name = validation::name("name", &request.name)?;
        let now = self.clock.now();
        let agent = Agent {
            id: AgentId::generate(),
            account_id: session.account.id,
            name,
            host: crate::agent::HostInfo::default(),
            last_seen_at: None,
            created_at: now,
            revision: 1,
        };
        let token = AgentToken::generate();
        let system: Vec<FirewallRule> =
            SystemRole::ALL.iter().map(|r| FirewallRule::system(agent.id, *r, now)).collect();
        self.store.insert_agent(&agent, &token.hash(), &system, self.quotas.agents).await.map_err(quota_or_internal)?;
        Ok(CreatedAgent { agent: AgentView::new(&agent, now), token: token.expose().to_owned() })
    }

    /// `DELETE /agents/:id`: the agent, its token and everything on it.
    pub async fn delete_agent(&self, session: &Session, id: AgentId) -> Result<()> {
        match self.store.delete_agent(session.account.id, id).await {
            Ok(()) => {
                self.lock_applied().remove(&id);
                self.changed(id);
                Ok(())
            }
            Err(StoreError::NotFound) => Err(Error::NotFound { what: Entity::Agent }),
            Err(e) => Err(internal(e)),
        }
    }

    // ----- engine rules -----------------------------------------------------

    /// `GET /agents/:id/programs`.
    pub async fn list_engine_rules(&self, session: &Session, agent: AgentId) -> Result<Vec<EngineRuleView>> {
        let agent = self.agent_of(session, agent).await?;
        let rules = self.store.list_engine_rules(agent.id).await.map_err(internal)?;
        Ok(rules.iter().map(|r| EngineRuleView::new(r, agent.host.iface.as_deref())).collect())
    }

    /// `POST /agents/:id/engine-rules`.
    pub async fn create_engine_rule(
        &self,
        session: &Session,
        agent: AgentId,
        request: &CreateEngineRuleRequest,
    ) -> Result<CreatedEngineRule> {
        let agent = self.agent_of(session, agent).await?;
        let name = validation::name("name", &request.name)?;
        let spec = RuleSpec::new(
            request.protocol,
            request.port_range_start,
            request.port_range_end,
            request.rule_type,
            RateLimits {
                max_pps: request.max_pps,
                max_port_pps: request.max_port_pps,
                min_pkt_size: request.min_pkt_size,
                max_pkt_size: request.max_pkt_size,
            },
        )?;
        let rule = self.admit_engine_rule(&agent, &name, &spec).await?;
        Ok(CreatedEngineRule::from(&rule))
    }

    async fn admit_engine_rule(&self, agent: &Agent, name: &str, spec: &RuleSpec) -> Result<crate::rule::EngineRule> {
        if agent.last_seen_at.is_none() {
            return Err(Error::AgentNotConnected);
        }
        let rule =
            self.store.create_engine_rule(agent.id, name, spec, self.clock.now()).await.map_err(|e| match e {
                StoreError::Duplicate { existing } => {
                    Error::Conflict { what: "an active rule on this port range", existing }
                }
                StoreError::SlotsExhausted => Error::SlotsExhausted,
                StoreError::NotFound => Error::NotFound { what: Entity::Agent },
                other => internal(other),
            })?;
        self.changed(agent.id);
        Ok(rule)
    }

    /// `DELETE /agents/:id/programs/:prog_id`.
    pub async fn delete_engine_rule(&self, session: &Session, agent: AgentId, rule: EngineRuleId) -> Result<()> {
        let agent = self.agent_of(session, agent).await?;
        match self.store.delete_engine_rule(agent.id, rule).await {
            Ok(_) => {
                self.changed(agent.id);
                Ok(())
            }
            Err(StoreError::NotFound) => Err(Error::NotFound { what: Entity::EngineRule }),
            Err(e) => Err(internal(e)),
        }
    }

    // ----- IP lists -----------------------------------------------------------

    /// `GET /agents/:id/ip-list[?type=…]`.
    pub async fn list_ip_entries(
        &self,
        session: &Session,
        agent: AgentId,
        list: Option<ListType>,
    ) -> Result<Vec<IpEntryView>> {
        let agent = self.agent_of(session, agent).await?;
        let entries = self.store.list_ip_entries(agent.id, list, self.clock.now()).await.map_err(internal)?;
        Ok(entries.iter().map(IpEntryView::from).collect())
    }

    /// `POST /agents/:id/ip-list`. 422 when the agent holds all the entries
    /// [`Quotas::ip_entries`] allows.
    pub async fn create_ip_entry(
        &self,
        session: &Session,
        agent: AgentId,
        request: &CreateIpEntryRequest,
    ) -> Result<CreatedIpEntry> {
        let agent = self.agent_of(session, agent).await?;
        let now = self.clock.now();
        let spec =
            EntrySpec::new(request.list_type, &request.ip_address, request.reason.as_deref(), request.expires_at, now)?;
        let entry =
            self.store.create_ip_entry(agent.id, &spec, now, self.quotas.ip_entries).await.map_err(|e| match e {
                StoreError::Duplicate { existing } => Error::Conflict { what: "this address on this list", existing },
                StoreError::NotFound => Error::NotFound { what: Entity::Agent },
                other => quota_or_internal(other),
            })?;
        self.changed(agent.id);
        Ok(CreatedIpEntry::from(&entry))
    }

    /// `DELETE /agents/:id/ip-list/:entry_id`.
    pub async fn delete_ip_entry(&self, session: &Session, agent: AgentId, entry: IpEntryId) -> Result<()> {
        let agent = self.agent_of(session, agent).await?;
        match self.store.delete_ip_entry(agent.id, entry).await {
            Ok(_) => {
                self.changed(agent.id);
                Ok(())
            }
            Err(StoreError::NotFound) => Err(Error::NotFound { what: Entity::IpEntry }),
            Err(e) => Err(internal(e)),
        }
    }

    // ----- metrics --------------------------------------------------------------

    /// `GET /metrics/:agent_id/summary?window=…`: the last `window` of
    /// one-minute buckets, the current minute included.
    pub async fn metrics_summary(
        &self,
        session: &Session,
        agent: AgentId,
        window: Window,
    ) -> Result<MetricsSummaryView> {
        let agent = self.agent_of(session, agent).await?;
        let minute = Interval::Minute.duration();
        let to = Interval::Minute.bucket_of(self.clock.now()) + minute;
        let from = to - window.duration();
        let per_port = self.store.metrics_by_port(agent.id, from, to).await.map_err(internal)?;
        Ok(MetricsSummaryView::from(&MetricsSummary::from_ports(&per_port)))
    }

    /// `GET /metrics/:agent_id?from&to&interval&port`: buckets that start
    /// in `[from, to)`, `from` rounded down to the interval.
    pub async fn metrics_history(
        &self,
        session: &Session,
        agent: AgentId,
        query: HistoryQuery,
    ) -> Result<Vec<MetricBucketView>> {
        let agent = self.agent_of(session, agent).await?;
        for (name, at) in [("from", query.from), ("to", query.to)] {
            if at.is_some_and(|at| !validation::rfc3339_year(at)) {
                return Err(Error::BadRequest(format!("{name} must be within the years 0001 to 9999")));
            }
        }
        let to = query.to.unwrap_or_else(|| self.clock.now());
        let from = match query.from {
            Some(from) => from,
            None => to
                .checked_sub_signed(chrono::Duration::hours(24))
                .ok_or_else(|| Invalid::new("to", "is too early for the default 24-hour range"))?,
        };
        if from >= to {
            return Err(Invalid::new("from", "must be before to").into());
        }
        let from = query.interval.bucket_of(from);
        let span = (to - from).num_seconds() / query.interval.duration().num_seconds();
        if span > MAX_HISTORY_BUCKETS {
            return Err(Invalid::new(
                "interval",
                format!("from..to spans more than {MAX_HISTORY_BUCKETS} buckets of {}; choose a larger interval or a shorter range", query.interval),
            )
            .into());
        }
        let rows =
            self.store.metrics_history(agent.id, from, to, query.interval, query.port).await.map_err(internal)?;
        Ok(rows.iter().map(MetricBucketView::from).collect())
    }

    // ----- marketplace ----------------------------------------------------------

    /// `GET /marketplace/templates[?category=…]`.
    pub fn list_templates(&self, _session: &Session, category: Option<Category>) -> Vec<TemplateView> {
        template::catalog()
            .iter()
            .filter(|t| category.is_none_or(|c| t.category == c))
            .map(TemplateView::from)
            .collect()
    }

    /// `POST /agents/:id/templates/:template_id`: creates the template's
    /// rule on the agent, named after the template.
    pub async fn apply_template(
        &self,
        session: &Session,
        agent: AgentId,
        template_id: &str,
    ) -> Result<AppliedTemplate> {
        let agent = self.agent_of(session, agent).await?;
        let template = template::find(template_id).ok_or(Error::NotFound { what: Entity::Template })?;
        match template.rule {
            TemplateRule::Engine(spec) => {
                let rule = self.admit_engine_rule(&agent, template.title, &spec).await?;
                Ok(AppliedTemplate::Engine(EngineRuleView::new(&rule, agent.host.iface.as_deref())))
            }
            TemplateRule::Firewall(spec) => {
                let rule = self.insert_firewall_rule(&agent, template.title, spec).await?;
                Ok(AppliedTemplate::Firewall(FirewallRuleView::from(&rule)))
            }
        }
    }

    // ----- firewall ----------------------------------------------------------------

    /// `GET /agents/:id/firewall`.
    pub async fn list_firewall_rules(&self, session: &Session, agent: AgentId) -> Result<Vec<FirewallRuleView>> {
        let agent = self.agent_of(session, agent).await?;
        let rules = self.store.list_firewall_rules(agent.id).await.map_err(internal)?;
        Ok(rules.iter().map(FirewallRuleView::from).collect())
    }

    /// `POST /agents/:id/firewall`. 422 when the agent holds all the rules
    /// [`Quotas::firewall_rules`] allows.
    pub async fn create_firewall_rule(
        &self,
        session: &Session,
        agent: AgentId,
        request: &CreateFirewallRuleRequest,
    ) -> Result<CreatedFirewallRule> {
        let agent = self.agent_of(session, agent).await?;
        let spec = FirewallSpec::new(&FirewallFields {
            chain: request.chain,
            protocol: request.protocol,
            port_start: request.port_start,
            port_end: request.port_end,
            action: Some(request.action),
            limit_rate: request.limit_rate,
            limit_unit: request.limit_unit,
            conntrack: request.conntrack.as_deref(),
        })?;
        let rule = self.insert_firewall_rule(&agent, &request.name, spec).await?;
        Ok(CreatedFirewallRule::from(&rule))
    }

    async fn insert_firewall_rule(&self, agent: &Agent, name: &str, spec: FirewallSpec) -> Result<FirewallRule> {
        let rule = FirewallRule::user(agent.id, name, spec, self.clock.now())?;
        self.store.create_firewall_rule(&rule, self.quotas.firewall_rules).await.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound { what: Entity::Agent },
            other => quota_or_internal(other),
        })?;
        self.changed(agent.id);
        Ok(rule)
    }

    /// `DELETE /agents/:id/firewall/:rule_id`. System rules answer 422.
    pub async fn delete_firewall_rule(&self, session: &Session, agent: AgentId, rule: FirewallRuleId) -> Result<()> {
        let agent = self.agent_of(session, agent).await?;
        let rules = self.store.list_firewall_rules(agent.id).await.map_err(internal)?;
        let found = rules.iter().find(|r| r.id == rule).ok_or(Error::NotFound { what: Entity::FirewallRule })?;
        if found.is_system() {
            return Err(Error::SystemRule);
        }
        match self.store.delete_firewall_rule(agent.id, rule).await {
            Ok(_) => {
                self.changed(agent.id);
                Ok(())
            }
            Err(StoreError::NotFound) => Err(Error::NotFound { what: Entity::FirewallRule }),
            Err(e) => Err(internal(e)),
        }
    }

    // ----- operator commands ----------------------------------------------------

    /// `keys create --account NAME`: creates the account if needed and a key
    /// on it. The secret is returned once and never stored. 422 when the
    /// account holds all the keys [`Quotas::api_keys`] allows.
    pub async fn create_api_key(&self, account: &AccountName) -> Result<(ApiKeyRecord, ApiKey)> {
        let account = self.ensure_account(account).await?;
        let key = ApiKey::generate();
        let record = ApiKeyRecord {
            id: ApiKeyId::generate(),
            account_id: account.id,
            hash: key.hash(),
            created_at: self.clock.now(),
        };
        self.store.insert_api_key(&record, self.quotas.api_keys).await.map_err(quota_or_internal)?;
        Ok((record, key))
    }

    /// The caller's account's keys, oldest first (IDs and creation times;
    /// the secrets are never stored).
    pub async fn list_account_keys(&self, session: &Session) -> Result<Vec<ApiKeyRecord>> {
        self.store.list_api_keys(session.account.id).await.map_err(internal)
    }

    /// A new key on the caller's account. The secret is returned once and
    /// never stored. 422 when the account holds all the keys
    /// [`Quotas::api_keys`] allows.
    pub async fn create_account_key(&self, session: &Session) -> Result<(ApiKeyRecord, ApiKey)> {
        let key = ApiKey::generate();
        let record = ApiKeyRecord {
            id: ApiKeyId::generate(),
            account_id: session.account.id,
            hash: key.hash(),
            created_at: self.clock.now(),
        };
        self.store.insert_api_key(&record, self.quotas.api_keys).await.map_err(quota_or_internal)?;
        Ok((record, key))
    }

    /// Revokes one of the caller's account's keys (the one in use too).
    /// Another account's key is not found.
    pub async fn revoke_account_key(&self, session: &Session, id: ApiKeyId) -> Result<()> {
        let keys = self.store.list_api_keys(session.account.id).await.map_err(internal)?;
        if !keys.iter().any(|k| k.id == id) {
            return Err(Error::NotFound { what: Entity::ApiKey });
        }
        self.revoke_api_key(id).await
    }

    /// Makes `raw` the only key of account `default` (creating it), as
    /// `PAKKT_BOOTSTRAP_API_KEY` asks. A malformed key is refused.
    pub async fn bootstrap_api_key(&self, raw: &str) -> Result<ApiKeyRecord> {
        let key: ApiKey = raw.parse()?;
        let name: AccountName = DEFAULT_ACCOUNT.parse()?;
        let account = self.ensure_account(&name).await?;
        let record = match self.store.key_by_hash(&key.hash()).await.map_err(internal)? {
            Some((existing, owner)) if owner.id == account.id => existing,
            Some(_) => {
                return Err(Error::Conflict { what: "this key on another account", existing: "bootstrap key".into() });
            }
            None => ApiKeyRecord {
                id: ApiKeyId::generate(),
                account_id: account.id,
                hash: key.hash(),
                created_at: self.clock.now(),
            },
        };
        self.store.replace_api_keys(&record).await.map_err(internal)?;
        Ok(record)
    }

    async fn ensure_account(&self, name: &AccountName) -> Result<crate::account::Account> {
        if let Some(account) = self.store.account_by_name(name).await.map_err(internal)? {
            return Ok(account);
        }
        match self.store.create_account(name, self.clock.now()).await {
            Ok(account) => Ok(account),
            // Created concurrently: take the winner's.
            Err(StoreError::Duplicate { .. }) => self
                .store
                .account_by_name(name)
                .await
                .map_err(internal)?
                .ok_or(Error::NotFound { what: Entity::Account }),
            Err(e) => Err(internal(e)),
        }
    }

    /// `keys revoke KEY_ID`.
    pub async fn revoke_api_key(&self, id: ApiKeyId) -> Result<()> {
        self.store.revoke_api_key(id).await.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound { what: Entity::ApiKey },
            other => internal(other),
        })
    }

    /// `accounts suspend NAME` / `accounts resume NAME`.
    pub async fn set_suspended(&self, account: &AccountName, suspended: bool) -> Result<()> {
        self.store.set_suspended(account, suspended).await.map(|_| ()).map_err(|e| match e {
            StoreError::NotFound => Error::NotFound { what: Entity::Account },
            other => internal(other),
        })
    }

    // ----- the agent's side ---------------------------------------------------------

    /// The agent behind a bearer token (401 otherwise). API keys never
    /// authenticate here.
    pub async fn authenticate_agent(&self, token: Option<&str>) -> Result<Agent> {
        let token: AgentToken = token.and_then(|t| t.trim().parse().ok()).ok_or(Error::Unauthenticated)?;
        self.store.agent_by_token(&token.hash()).await.map_err(internal)?.ok_or(Error::Unauthenticated)
    }

    /// One sync: records the report, then answers the desired state as soon
    /// as its revision differs from the one the agent applied, or after
    /// `max_wait` (capped at [`MAX_POLL`]) with the same revision.
    /// Expiring blacklist entries leave the desired state on time: the wait
    /// ends at the next expiry.
    pub async fn agent_sync(
        &self,
        token: Option<&str>,
        report: SyncReport,
        max_wait: Duration,
    ) -> Result<DesiredState> {
        let agent = self.authenticate_agent(token).await?;
        let now = self.clock.now();
        let report = sanitise_report(report)?;
        self.record_sync_coarsely(agent.id, &report.host, now).await?;
        self.apply_report_once(agent.id, &report, now).await?;
        let deadline = tokio::time::Instant::now() + max_wait.min(MAX_POLL);
        let hold = self.held.hold(agent.id);
        let mut released = false;
        loop {
            let mut changes = self.feed.subscribe(agent.id);
            let now = self.clock.now();
            if self.store.purge_expired(agent.id, now).await.map_err(internal)? > 0 {
                self.changed(agent.id);
            }
            let gone = |e| match e {
                StoreError::NotFound => Error::Unauthenticated,
                other => internal(other),
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // The revision alone decides whether to wait; the whole state
            // is read only to answer.
            if released || left.is_zero() || self.store.revision(agent.id).await.map_err(gone)? != report.revision {
                return self.store.desired_state(agent.id, now).await.map_err(gone);
            }
            let until_expiry = self
                .store
                .next_expiry(agent.id, now)
                .await
                .map_err(internal)?
                .and_then(|at| (at - now).to_std().ok())
                .unwrap_or(left);
            // Either a change, the next expiry or the deadline ends the wait;
            // all three lead to a fresh read above.
            // A newer poll of the agent, or shutdown, releases this one: it
            // answers at once with the current state.
            let mut wait = std::pin::pin!(tokio::time::timeout(left.min(until_expiry), changes.changed()));
            let mut kick = std::pin::pin!(hold.released());
            released = std::future::poll_fn(|cx| {
                if kick.as_mut().poll(cx).is_ready() {
                    std::task::Poll::Ready(true)
                } else if wait.as_mut().poll(cx).is_ready() {
                    std::task::Poll::Ready(false)
                } else {
                    std::task::Poll::Pending
                }
            })
            .await;
        }
    }

    /// Stores an agent's metrics report; `false` if it was a retry of one
    /// already stored.
    pub async fn agent_report_metrics(&self, token: Option<&str>, report: &MetricsReport) -> Result<bool> {
        let agent = self.authenticate_agent(token).await?;
        report.validate()?;
        self.store.ingest_metrics(agent.id, report, self.clock.now()).await.map_err(internal)
    }

    /// Authenticates an agent's `call` and counts it against the agent's
    /// limit for that kind of call ([`AgentLimits`]), before anything the
    /// agent sent is read: a refused call costs no parsing and no write.
    /// The server's gate calls it for every agent request.
    pub async fn authenticate_agent_call(&self, token: Option<&str>, call: AgentCall) -> Result<Agent> {
        let agent = self.authenticate_agent(token).await?;
        let (buckets, what) = match call {
            AgentCall::Sync => (&self.agent_limits.syncs, "syncs"),
            AgentCall::Report => (&self.agent_limits.reports, "metrics reports"),
            AgentCall::Other => return Ok(agent),
        };
        buckets.take(agent.id, self.clock.now()).map_err(|retry_after| Error::AgentRateLimited {
            what,
            per_second: buckets.rate(),
            retry_after,
        })?;
        Ok(agent)
    }
}

/// The kinds of agent calls the per-agent limits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCall {
    /// `POST /agent/sync`.
    Sync,
    /// `POST /agent/metrics`.
    Report,
    /// Anything else on the agent's routes (not limited).
    Other,
}

impl<S: Store, C: Clock> Pakkt<S, C> {
    /// Applies `report` unless it is the one this process applied last for
    /// `agent`. Every change to an agent's desired state bumps its
    /// revision, which the agent's next report carries, so a repeated
    /// report can only repeat transitions already made. Firewall counters
    /// do not count as a difference: metrics reports keep them fresh.
    async fn apply_report_once(&self, agent: AgentId, report: &SyncReport, now: DateTime<Utc>) -> Result<()> {
        let fingerprint = fingerprint(&(&report.host, report.revision, &report.applied, &report.failures));
        if self.lock_applied().get(&agent) == Some(&fingerprint) {
            return Ok(());
        }
        self.store.apply_report(agent, report, now).await.map_err(internal)?;
        self.lock_applied().insert(agent, fingerprint);
        Ok(())
    }

    /// Records a sync unless this process recorded the same host details
    /// for `agent` less than [`LAST_SEEN_RESOLUTION`] ago.
    async fn record_sync_coarsely(&self, agent: AgentId, host: &HostInfo, now: DateTime<Utc>) -> Result<()> {
        let fingerprint = fingerprint(host);
        let recent = |at: DateTime<Utc>| at <= now && now - at < LAST_SEEN_RESOLUTION;
        if self.lock_recorded().get(&agent).is_some_and(|(at, fp)| *fp == fingerprint && recent(*at)) {
            return Ok(());
        }
        self.store.record_sync(agent, host, now).await.map_err(internal)?;
        let mut recorded = self.lock_recorded();
        if recorded.len() >= RECORDED_SYNCS_SWEEP_AT {
            recorded.retain(|_, (at, _)| recent(*at));
        }
        recorded.insert(agent, (now, fingerprint));
        Ok(())
    }

    fn lock_recorded(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, (DateTime<Utc>, u64)>> {
        // Only whole inserts happen under this lock: a poisoned map is intact.
        self.recorded_syncs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_applied(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, u64>> {
        // Only whole inserts happen under this lock: a poisoned map is intact.
        self.applied_reports.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A 64-bit digest of `value`, to tell whether it changed since last time
/// (this process only: not stable across builds).
fn fingerprint(value: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn sanitise_report(mut report: SyncReport) -> Result<SyncReport> {
    let items = report.applied.engine_rules.len()
        + report.applied.ip_entries.len()
        + report.applied.firewall_rules.len()
        + report.failures.len()
        + report.firewall_counters.len();
    if items > MAX_REPORT_ITEMS {
        return Err(Invalid::new("applied", format!("a report may name at most {MAX_REPORT_ITEMS} items")).into());
    }
    report.host = report.host.sanitised();
    for failure in &mut report.failures {
        failure.message = failure.message.chars().filter(|c| !c.is_control()).take(MAX_STATUS_MESSAGE).collect();
        if failure.message.trim().is_empty() {
            "failed without a message".clone_into(&mut failure.message);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
