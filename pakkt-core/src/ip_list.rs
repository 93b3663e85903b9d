//! IP whitelist and blacklist entries.
//!
//! Whitelisted sources pass `allow_only` and `rate_limit` rules and override
//! the blacklist; blacklisted sources are dropped before any rule. A
//! blacklist entry may expire; the engine enforces the expiry itself, so it
//! holds while the agent or the server is down.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::id::{AgentId, IpEntryId};
use crate::validation::{self, Invalid};

/// Which list an entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum ListType {
    /// Sources that are dropped.
    Blacklist,
    /// Sources that are trusted.
    Whitelist,
}

impl ListType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blacklist => "blacklist",
            Self::Whitelist => "whitelist",
        }
    }
}

impl std::str::FromStr for ListType {
    type Err = crate::metrics::BadQueryValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blacklist" => Ok(Self::Blacklist),
            "whitelist" => Ok(Self::Whitelist),
            other => Err(crate::metrics::BadQueryValue {
                field: "type",
                expected: "blacklist, whitelist",
                got: other.chars().take(32).collect(),
            }),
        }
    }
}

/// Where an IP list entry or a firewall rule is in its life: both are added
/// and removed by the agent the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum EntryStatus {
    /// Created; the agent has not confirmed it yet.
    PendingAdd,
    /// In force on the agent.
    Active,
    /// The agent could not apply it.
    Failed,
    /// Deleted; the agent has not confirmed the removal yet.
    PendingRemove,
}

impl EntryStatus {
    /// Whether an item in this status belongs in the desired state (and
    /// counts for dedup).
    pub fn is_active(self) -> bool {
        matches!(self, Self::PendingAdd | Self::Active)
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingAdd => "pending_add",
            Self::Active => "active",
            Self::Failed => "failed",
            Self::PendingRemove => "pending_remove",
        }
    }
}

/// The validated content of a new entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    /// Which list.
    pub list_type: ListType,
    /// Address or prefix.
    pub cidr: Cidr,
    /// Free-text reason.
    pub reason: Option<String>,
    /// When a blacklist entry stops being enforced.
    pub expires_at: Option<DateTime<Utc>>,
}

impl EntrySpec {
    /// Checks DESIGN §2's IP-list rules: a valid address or prefix without
    /// host bits, `expires_at` only on blacklist entries and in the future.
    pub fn new(
        list_type: ListType,
        ip_address: &str,
        reason: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, Invalid> {
        let cidr: Cidr =
            ip_address.trim().parse().map_err(|e: crate::cidr::CidrError| Invalid::new("ip_address", e.to_string()))?;
        let reason = validation::free_text("reason", reason, validation::MAX_REASON_CHARS)?;
        if let Some(expiry) = expires_at {
            if list_type == ListType::Whitelist {
                return Err(Invalid::new("expires_at", "only blacklist entries can expire"));
            }
            if expiry <= now {
                return Err(Invalid::new("expires_at", "must be in the future"));
            }
        }
        Ok(Self { list_type, cidr, reason, expires_at })
    }
}

/// An IP list entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpEntry {
    /// Its ID.
    pub id: IpEntryId,
    /// The agent it belongs to.
    pub agent_id: AgentId,
    /// Its content.
    pub spec: EntrySpec,
    /// Life-cycle status.
    pub status: EntryStatus,
    /// Why it failed, when it did.
    pub status_message: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl IpEntry {
    /// Whether the entry has expired at `now` (and so is no longer shown or
    /// enforced).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.spec.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether a new entry would duplicate this one: same list, same prefix,
    /// and this one is still wanted.
    pub fn duplicates(&self, spec: &EntrySpec, now: DateTime<Utc>) -> bool {
        self.status.is_active()
            && !self.is_expired(now)
            && self.spec.list_type == spec.list_type
            && self.spec.cidr == spec.cidr
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-16T12:00:00Z".parse().expect("time")
    }

    #[test]
    fn accepts_addresses_and_prefixes_of_both_families() {
        for ok in ["203.0.113.42", "203.0.113.0/24", "2001:db8::/48", "::1"] {
            assert!(EntrySpec::new(ListType::Blacklist, ok, None, None, now()).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_host_bits_and_garbage() {
        let err = EntrySpec::new(ListType::Whitelist, "10.0.0.1/8", None, None, now()).expect_err("host bits");
        assert_eq!(err.field, "ip_address");
        assert!(err.message.contains("10.0.0.0/8"));
        assert!(EntrySpec::new(ListType::Whitelist, "example.com", None, None, now()).is_err());
    }

    #[test]
    fn expiry_only_on_blacklist_and_in_the_future() {
        let later = now() + Duration::hours(1);
        assert!(EntrySpec::new(ListType::Blacklist, "1.2.3.4", None, Some(later), now()).is_ok());
        let err = EntrySpec::new(ListType::Whitelist, "1.2.3.4", None, Some(later), now()).expect_err("whitelist");
        assert_eq!(err.field, "expires_at");
        assert!(EntrySpec::new(ListType::Blacklist, "1.2.3.4", None, Some(now()), now()).is_err());
        assert!(
            EntrySpec::new(ListType::Blacklist, "1.2.3.4", None, Some(now() - Duration::seconds(1)), now()).is_err()
        );
    }

    #[test]
    fn reason_is_bounded() {
        let long = "x".repeat(validation::MAX_REASON_CHARS + 1);
        assert_eq!(
            EntrySpec::new(ListType::Blacklist, "1.2.3.4", Some(&long), None, now()).expect_err("long").field,
            "reason"
        );
    }

    #[test]
    fn duplicates_only_while_wanted_and_unexpired() {
        let spec = EntrySpec::new(ListType::Blacklist, "1.2.3.4", None, Some(now() + Duration::seconds(5)), now())
            .expect("spec");
        let mut entry = IpEntry {
            id: IpEntryId::generate(),
            agent_id: AgentId::generate(),
            spec: spec.clone(),
            status: EntryStatus::Active,
            status_message: None,
            created_at: now(),
        };
        assert!(entry.duplicates(&spec, now()));
        let other_list = EntrySpec { list_type: ListType::Whitelist, expires_at: None, ..spec.clone() };
        assert!(!entry.duplicates(&other_list, now()));
        assert!(!entry.duplicates(&spec, now() + Duration::seconds(5)), "expired");
        entry.status = EntryStatus::PendingRemove;
        assert!(!entry.duplicates(&spec, now()));
        entry.status = EntryStatus::Failed;
        assert!(!entry.duplicates(&spec, now()));
    }

    #[test]
    fn list_type_and_status_spelling() {
        assert_eq!("whitelist".parse::<ListType>(), Ok(ListType::Whitelist));
        assert_eq!("grey".parse::<ListType>().expect_err("grey").field, "type");
        assert_eq!(serde_json::to_string(&EntryStatus::PendingRemove).expect("json"), "\"pending_remove\"");
    }
}
