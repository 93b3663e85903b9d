//! Identifiers. Accounts, keys, agents, rules and entries are ULIDs: sortable
//! by creation time, unguessable enough for URLs, and 26 characters of
//! Crockford base32 on the wire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A path or body carried something that is not a ULID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} id {value:?}: expected a 26-character ULID")]
pub struct MalformedId {
    /// Which kind of ID was expected (`agent`, `rule` …).
    pub kind: &'static str,
    /// The rejected text, shortened to 64 characters.
    pub value: String,
}

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(ulid::Ulid);

        impl $name {
            /// A fresh identifier, greater than every one this process
            /// made before (so creation order is ID order).
            pub fn generate() -> Self {
                Self(next_ulid())
            }

            /// The identifier as its 128-bit value.
            pub fn to_u128(self) -> u128 {
                self.0.0
            }

            /// Rebuilds an identifier from its 128-bit value.
            pub fn from_u128(value: u128) -> Self {
                Self(ulid::Ulid(value))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = MalformedId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                // 26 characters of 5 bits hold 130: a ULID's first one is
                // at most 7, or the value would not fit in 128 bits (and
                // the decoder would wrap it onto another ID).
                if s.len() != 26 || !s.starts_with(|c: char| ('0'..='7').contains(&c)) {
                    return Err(malformed($kind, s));
                }
                ulid::Ulid::from_string(s).map(Self).map_err(|_| malformed($kind, s))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// One generator for every kind, so IDs made in the same millisecond still
/// sort in creation order.
static GENERATOR: std::sync::Mutex<ulid::Generator> = std::sync::Mutex::new(ulid::Generator::new());

fn next_ulid() -> ulid::Ulid {
    GENERATOR
        .lock()
        .ok()
        .and_then(|mut generator| generator.generate().ok())
        .unwrap_or_else(|| ulid::Ulid::from_datetime(std::time::SystemTime::now()))
}

fn malformed(kind: &'static str, value: &str) -> MalformedId {
    MalformedId { kind, value: value.chars().take(64).collect() }
}

ulid_id!(
    /// An account: the owner of keys, agents and everything on them.
    AccountId,
    "account"
);
ulid_id!(
    /// A public API key (the ID shown in listings, never the secret).
    ApiKeyId,
    "key"
);
ulid_id!(
    /// An agent: one protected host.
    AgentId,
    "agent"
);
ulid_id!(
    /// A PAKKT Engine (XDP) rule.
    EngineRuleId,
    "rule"
);
ulid_id!(
    /// A whitelist or blacklist entry.
    IpEntryId,
    "entry"
);
ulid_id!(
    /// An nftables firewall rule.
    FirewallRuleId,
    "firewall rule"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_above_128_bits_are_malformed_not_aliases() {
        let id = AgentId::generate().to_string();
        for first in ['8', 'Z', 'z'] {
            let above: String = std::iter::once(first).chain(id.chars().skip(1)).collect();
            assert!(above.parse::<AgentId>().is_err(), "{above}");
        }
        assert!("7ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<AgentId>().is_ok(), "the largest ULID");
    }

    #[test]
    fn round_trips_through_text_and_json() {
        let id = AgentId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<AgentId>(), Ok(id));
        let json = serde_json::to_string(&id).expect("serialise");
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<AgentId>(&json).expect("parse"), id);
        assert_eq!(AgentId::from_u128(id.to_u128()), id);
    }

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<EngineRuleId> = (0..1000).map(|_| EngineRuleId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn rejects_malformed_ids_with_their_kind() {
        for bad in ["", "01J5", "not-a-ulid-at-all-not-a-ulid", "01J5ZZZZZZZZZZZZZZZZZZZZZZU", "../etc/passwd"] {
            let err = bad.parse::<EngineRuleId>().expect_err(bad);
            assert_eq!(err.kind, "rule");
        }
        assert!(serde_json::from_str::<AgentId>("\"abc\"").is_err());
        assert!(serde_json::from_str::<AgentId>("12").is_err());
    }
}
