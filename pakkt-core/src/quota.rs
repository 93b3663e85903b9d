//! Per-account quotas: how many agents, API keys, IP list entries, firewall
//! rules and webhooks one customer may hold.
//!
//! A rate limit bounds how fast a key may act; a quota bounds what an
//! account may keep. Without one, a single customer could fill the database
//! (and every agent's maps) at 60 requests a minute for as long as it
//! liked. Each figure is the operator's to change ([`Quotas`], held by
//! [`crate::service::Pakkt`] and set with
//! [`Pakkt::with_quotas`](crate::service::Pakkt::with_quotas)); the server
//! reads them from its `--max-…` flags.
//!
//! **Where the check happens.** Counting and then inserting in two steps
//! would let two concurrent creates both see room for one. So the use case
//! hands the figure to the store, and the store counts inside the
//! transaction that inserts, under the lock it already takes for admission
//! (the agent's row for entries and firewall rules, the account's row for
//! agents and keys): concurrent creates can never exceed a quota. Stores
//! decide nothing themselves: [`Quota::admit`] is the one rule
//! (`held + adding <= limit`, all or nothing for several items at once),
//! and [`charges_entry`] and [`charges_firewall_rule`] say which items
//! count.
//!
//! **What counts.** Only what the account still holds: revoked keys and
//! deleted agents are gone; an entry or firewall rule that was deleted
//! (waiting for its agent to remove it) or has expired no longer counts. A
//! failed item does count until it is deleted (deleting a failed item
//! removes it at once). System firewall rules are the server's, not the
//! customer's, and never count.
//!
//! A refused create is a 422 (`validation_failed`) whose message names the
//! quota and the operator flag that sets it ([`QuotaExceeded`]).

use chrono::{DateTime, Utc};

use crate::firewall::FirewallRule;
use crate::ip_list::IpEntry;
use crate::lifecycle::{Phase, Tracked};

/// Agents per account unless the operator says otherwise.
pub const DEFAULT_MAX_AGENTS: u32 = 1_000;

/// API keys per account unless the operator says otherwise.
pub const DEFAULT_MAX_API_KEYS: u32 = 100;

/// IP list entries per agent unless the operator says otherwise: the
/// engine's capacity, `PAKKT_MAX_LIST_ENTRIES` in `bpf/pakkt_common.h`
/// (`pakkt_engine::abi::MAX_LIST_ENTRIES`; a test in `pakkt-engine` checks
/// that the two agree). Both lists share it. An agent asked to hold more
/// than its engine can fails the extra entries.
pub const DEFAULT_MAX_IP_ENTRIES: u32 = 131_072;

/// Firewall rules per agent (system rules aside) unless the operator says
/// otherwise.
pub const DEFAULT_MAX_FIREWALL_RULES: u32 = 1_000;

/// Webhooks per account unless the operator says otherwise (applies once
/// webhooks exist).
pub const DEFAULT_MAX_WEBHOOKS: u32 = 20;

/// One of the quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quota {
    /// Agents per account.
    Agents,
    /// API keys per account (the bootstrap key, which replaces all the
    /// others, is always admitted).
    ApiKeys,
    /// IP list entries per agent, both lists together.
    IpEntries,
    /// Firewall rules per agent, system rules aside.
    FirewallRules,
    /// Webhooks per account. Nothing creates webhooks yet; the figure is
    /// configured now so that it applies as soon as they exist.
    Webhooks,
}

impl Quota {
    /// Every quota.
    pub const ALL: [Self; 5] = [Self::Agents, Self::ApiKeys, Self::IpEntries, Self::FirewallRules, Self::Webhooks];

    /// What it counts, in the plural.
    pub fn items(self) -> &'static str {
        match self {
            Self::Agents => "agents",
            Self::ApiKeys => "API keys",
            Self::IpEntries => "IP list entries",
            Self::FirewallRules => "firewall rules",
            Self::Webhooks => "webhooks",
        }
    }

    /// What it counts, for `n` of them ("1 agent", "2 agents").
    pub fn noun(self, n: u32) -> &'static str {
        if n != 1 {
            return self.items();
        }
        match self {
            Self::Agents => "agent",
            Self::ApiKeys => "API key",
            Self::IpEntries => "IP list entry",
            Self::FirewallRules => "firewall rule",
            Self::Webhooks => "webhook",
        }
    }

    /// What it counts per: `account` or `agent`.
    pub fn per(self) -> &'static str {
        match self {
            Self::Agents | Self::ApiKeys | Self::Webhooks => "account",
            Self::IpEntries | Self::FirewallRules => "agent",
        }
    }

    /// The `pakkt-server` flag that sets it (its environment variable is
    /// the same name in capitals, `PAKKT_` first: `--max-agents` is
    /// `PAKKT_MAX_AGENTS`). Error messages name it, so that whoever runs
    /// into a quota knows what the operator would change.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Agents => "--max-agents",
            Self::ApiKeys => "--max-keys",
            Self::IpEntries => "--max-ip-entries",
            Self::FirewallRules => "--max-firewall-rules",
            Self::Webhooks => "--max-webhooks",
        }
    }

    /// Admits `adding` new items beside `held` ones under `limit`: all of
    /// them, or none ([`QuotaExceeded`]) when the total would exceed it.
    /// Adding nothing is always admitted, even where an operator lowered
    /// the figure below what is held. The one rule every store applies,
    /// inside its transaction.
    pub fn admit(self, limit: u32, held: u64, adding: u64) -> Result<(), QuotaExceeded> {
        if adding == 0 || held.saturating_add(adding) <= u64::from(limit) {
            Ok(())
        } else {
            Err(QuotaExceeded { quota: self, limit })
        }
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} per {}", self.items(), self.per())
    }
}

/// A create refused because the account (or agent) holds all that its
/// quota allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quota exceeded: at most {limit} {noun} per {per} ({flag})", noun = quota.noun(*limit), per = quota.per(), flag = quota.flag())]
pub struct QuotaExceeded {
    /// The quota.
    pub quota: Quota,
    /// Its figure.
    pub limit: u32,
}

/// The figures of every quota. The default is the documented one of each
/// (`DEFAULT_MAX_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quotas {
    /// Agents per account.
    pub agents: u32,
    /// API keys per account.
    pub api_keys: u32,
    /// IP list entries per agent.
    pub ip_entries: u32,
    /// Firewall rules per agent, system rules aside.
    pub firewall_rules: u32,
    /// Webhooks per account, once webhooks exist.
    pub webhooks: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            agents: DEFAULT_MAX_AGENTS,
            api_keys: DEFAULT_MAX_API_KEYS,
            ip_entries: DEFAULT_MAX_IP_ENTRIES,
            firewall_rules: DEFAULT_MAX_FIREWALL_RULES,
            webhooks: DEFAULT_MAX_WEBHOOKS,
        }
    }
}

impl Quotas {
    /// No quota at all (every figure `u32::MAX`): for tools and tests that
    /// load data rather than serve customers.
    pub const UNLIMITED: Self = Self {
        agents: u32::MAX,
        api_keys: u32::MAX,
        ip_entries: u32::MAX,
        firewall_rules: u32::MAX,
        webhooks: u32::MAX,
    };

    /// The figure of `quota`.
    pub fn limit(&self, quota: Quota) -> u32 {
        match quota {
            Quota::Agents => self.agents,
            Quota::ApiKeys => self.api_keys,
            Quota::IpEntries => self.ip_entries,
            Quota::FirewallRules => self.firewall_rules,
            Quota::Webhooks => self.webhooks,
        }
    }
}

/// Whether an item in `phase` still counts: everything but what was
/// deleted and waits for its agent to remove it.
pub fn charges(phase: Phase) -> bool {
    phase != Phase::Removing
}

/// Whether `entry` counts against its agent's [`Quota::IpEntries`] at
/// `now`: it is not being removed and has not expired.
pub fn charges_entry(entry: &IpEntry, now: DateTime<Utc>) -> bool {
    charges(entry.phase()) && !entry.is_expired(now)
}

/// Whether `rule` counts against its agent's [`Quota::FirewallRules`]: a
/// customer's rule that is not being removed.
pub fn charges_firewall_rule(rule: &FirewallRule) -> bool {
    !rule.is_system() && charges(rule.phase())
}

/// How many of `entries` (one agent's) count against its
/// [`Quota::IpEntries`] at `now`. Stores that keep whole items count with
/// this; SQL stores count the same rows with [`charges_entry`]'s
/// conditions.
pub fn entries_held<'a>(entries: impl IntoIterator<Item = &'a IpEntry>, now: DateTime<Utc>) -> u64 {
    count(entries.into_iter().filter(|e| charges_entry(e, now)))
}

/// How many of `rules` (one agent's) count against its
/// [`Quota::FirewallRules`].
pub fn firewall_rules_held<'a>(rules: impl IntoIterator<Item = &'a FirewallRule>) -> u64 {
    count(rules.into_iter().filter(|r| charges_firewall_rule(r)))
}

/// How many items an iterator yields, as the `u64` quotas compare.
pub fn count<T>(items: impl Iterator<Item = T>) -> u64 {
    items.fold(0, |n, _| n + 1)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::firewall::{Action, FirewallFields, FirewallSpec, SystemRole};
    use crate::id::{AgentId, IpEntryId};
    use crate::ip_list::{EntrySpec, EntryStatus, ListType};
    use crate::testing::t0;

    #[test]
    fn the_defaults_are_the_documented_figures() {
        let q = Quotas::default();
        assert_eq!(
            (q.agents, q.api_keys, q.ip_entries, q.firewall_rules, q.webhooks),
            (1_000, 100, 131_072, 1_000, 20)
        );
        for quota in Quota::ALL {
            assert_eq!(Quotas::UNLIMITED.limit(quota), u32::MAX);
        }
        assert_eq!(q.limit(Quota::IpEntries), DEFAULT_MAX_IP_ENTRIES);
    }

    #[test]
    fn admission_is_all_or_nothing_up_to_the_limit() {
        assert_eq!(Quota::Agents.admit(2, 1, 1), Ok(()));
        assert_eq!(Quota::Agents.admit(2, 2, 1), Err(QuotaExceeded { quota: Quota::Agents, limit: 2 }));
        assert_eq!(Quota::IpEntries.admit(10, 5, 5), Ok(()), "a batch that just fits");
        assert!(Quota::IpEntries.admit(10, 5, 6).is_err(), "one too many refuses the whole batch");
        assert!(Quota::ApiKeys.admit(0, 0, 1).is_err(), "0 allows none");
        assert_eq!(Quota::ApiKeys.admit(0, 0, 0), Ok(()));
        assert!(Quota::FirewallRules.admit(u32::MAX, u64::MAX, 1).is_err(), "no overflow");
        assert_eq!(Quota::FirewallRules.admit(3, 7, 0), Ok(()), "adding nothing is always fine");
    }

    #[test]
    fn the_message_names_the_quota_and_its_flag() {
        let e = QuotaExceeded { quota: Quota::Agents, limit: 1000 };
        assert_eq!(e.to_string(), "quota exceeded: at most 1000 agents per account (--max-agents)");
        let e = QuotaExceeded { quota: Quota::IpEntries, limit: 5 };
        assert!(e.to_string().contains("at most 5 IP list entries per agent (--max-ip-entries)"), "{e}");
        let e = QuotaExceeded { quota: Quota::ApiKeys, limit: 1 };
        assert_eq!(e.to_string(), "quota exceeded: at most 1 API key per account (--max-keys)");
        assert_eq!(Quota::Webhooks.to_string(), "webhooks per account");
        let flags: std::collections::HashSet<&str> = Quota::ALL.iter().map(|q| q.flag()).collect();
        assert_eq!(flags.len(), Quota::ALL.len(), "one flag per quota");
    }

    fn entry(status: EntryStatus, expires_in: Option<i64>) -> IpEntry {
        IpEntry {
            id: IpEntryId::generate(),
            agent_id: AgentId::generate(),
            spec: EntrySpec {
                list_type: ListType::Blacklist,
                cidr: "198.51.100.0/24".parse().expect("cidr"),
                reason: None,
                expires_at: expires_in.map(|s| t0() + Duration::seconds(s)),
            },
            status,
            status_message: None,
            created_at: t0(),
        }
    }

    #[test]
    fn deleted_and_expired_entries_do_not_count() {
        let entries = [
            entry(EntryStatus::PendingAdd, None),
            entry(EntryStatus::Active, Some(60)),
            entry(EntryStatus::Failed, None),
            entry(EntryStatus::PendingRemove, None),
            entry(EntryStatus::Active, Some(0)),
        ];
        assert_eq!(entries_held(&entries, t0()), 3, "adding, in force and failed count");
        assert_eq!(entries_held(&entries, t0() + Duration::seconds(60)), 2, "expiry frees room");
    }

    #[test]
    fn system_and_deleted_firewall_rules_do_not_count() {
        let agent = AgentId::generate();
        let spec = FirewallSpec::new(&FirewallFields { action: Some(Action::Drop), ..FirewallFields::default() })
            .expect("spec");
        let user = FirewallRule::user(agent, "drop all", spec, t0()).expect("rule");
        let mut deleted = user.clone();
        deleted.status = EntryStatus::PendingRemove;
        let mut failed = user.clone();
        failed.status = EntryStatus::Failed;
        let system = FirewallRule::system(agent, SystemRole::Loopback, t0());
        assert_eq!(firewall_rules_held([&user, &deleted, &failed, &system]), 2);
    }
}
