//! poem-openapi schemas for the core's types (feature `openapi`).
//!
//! The server documents the wire types with poem-openapi's derives
//! (`#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]` on each)
//! and this module covers the types a derive cannot describe: IDs (ULID
//! strings), protocol and rule-type numbers, decimal-string counters,
//! prefixes, and the validated specs and item references of the agent
//! protocol.
//!
//! Every type here reads and writes JSON through its serde implementation,
//! so the schema describes exactly the bytes serde produces and parsing
//! runs the same checks as everywhere else (a `RuleSpec` read through
//! poem-openapi is as valid as one read through serde).
//!
//! Off by default: the core's default features pull in no HTTP crate.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type};
use serde_json::Value;

use crate::cidr::Cidr;
use crate::firewall::{Action, Chain, Conntrack, FirewallSpec, FwProtocol, LimitUnit};
use crate::id::{AccountId, AgentId, ApiKeyId, EngineRuleId, FirewallRuleId, IpEntryId};
use crate::rule::{Protocol, RuleSpec, RuleType};
use crate::slot::Slot;
use crate::sync::ItemRef;
use crate::wire::DecimalU64;

/// A ULID: 26 characters of Crockford base32, the first at most `7`.
const ULID_PATTERN: &str = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$";

/// Implements `Type`, `ParseFromJSON` and `ToJSON` through serde, with the
/// schema `$schema` (a `MetaSchema`), inline or under a name of its own.
macro_rules! serde_type {
    ($ty:ty, inline $name:literal, $schema:expr) => {
        impl Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }
        serde_type!(@json $ty);
    };
    ($ty:ty, named $name:literal, |$registry:ident| $schema:expr) => {
        impl Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Reference($name.to_owned())
            }

            fn register(registry: &mut Registry) {
                registry.create_schema::<Self, _>($name.to_owned(), |$registry| $schema);
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }
        serde_type!(@json $ty);
    };
    (@json $ty:ty) => {
        impl ParseFromJSON for $ty {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                serde_json::from_value(value.unwrap_or_default()).map_err(ParseError::custom)
            }
        }

        impl ToJSON for $ty {
            fn to_json(&self) -> Option<Value> {
                serde_json::to_value(self).ok()
            }
        }
    };
}

/// A string schema with a format, pattern and description.
fn string(format: Option<&'static str>, pattern: Option<&str>, description: &'static str) -> MetaSchema {
    MetaSchema {
        format,
        pattern: pattern.map(str::to_owned),
        description: Some(description),
        ..MetaSchema::new("string")
    }
}

/// An integer schema limited to `values`.
fn integer_enum(format: &'static str, values: &[u8], description: &'static str) -> MetaSchema {
    MetaSchema {
        description: Some(description),
        enum_items: values.iter().map(|v| Value::from(*v)).collect(),
        ..MetaSchema::new_with_format("integer", format)
    }
}

/// An integer schema within `min..=max`.
fn integer_range(format: &'static str, min: f64, max: f64) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        minimum: Some(min),
        maximum: Some(max),
        ..MetaSchema::new_with_format("integer", format)
    }))
}

macro_rules! ulid_type {
    ($($ty:ty, $description:literal;)*) => {$(
        serde_type!($ty, inline "string_ulid", string(Some("ulid"), Some(ULID_PATTERN), $description));

        impl ParseFromParameter for $ty {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                value.parse().map_err(ParseError::custom)
            }
        }
    )*};
}

ulid_type! {
    AccountId, "An account ID (ULID).";
    ApiKeyId, "An API key ID (ULID).";
    AgentId, "An agent ID (ULID).";
    EngineRuleId, "An engine rule ID (ULID).";
    IpEntryId, "An IP list entry ID (ULID).";
    FirewallRuleId, "A firewall rule ID (ULID).";
}

serde_type!(
    Protocol,
    inline "integer_protocol",
    integer_enum("uint8", &[0, 1, 6, 17], "0 (TCP or UDP), 1 (ICMP and ICMPv6), 6 (TCP), 17 (UDP).")
);

serde_type!(
    RuleType,
    inline "integer_rule_type",
    integer_enum("uint8", &[0, 1, 2, 3], "0 (block), 1 (rate_limit), 2 (allow_only), 3 (protect).")
);

serde_type!(
    DecimalU64,
    inline "string_decimal",
    MetaSchema {
        max_length: Some(20),
        ..string(Some("uint64"), Some("^[0-9]+$"), "A 64-bit counter as a decimal string.")
    }
);

serde_type!(
    Cidr,
    inline "string_cidr",
    string(None, None, "An IPv4 or IPv6 address, or a prefix in CIDR notation with no host bits set.")
);

serde_type!(
    Slot,
    inline "integer_slot",
    MetaSchema {
        description: Some("The rule's slot in the engine (0-255)."),
        ..integer_range("uint8", 0.0, 255.0).unwrap_inline().clone()
    }
);

serde_type!(Conntrack, inline "string_conntrack", string(None, None, "Conntrack states, comma-separated: new, established, related."));

/// `{"start": u16, "end": u16}`.
struct PortRangeSchema;

impl PortRangeSchema {
    fn schema() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some("Inclusive destination-port range (0..0 for ICMP)."),
            required: vec!["start", "end"],
            properties: vec![
                ("start", integer_range("uint16", 0.0, 65535.0)),
                ("end", integer_range("uint16", 0.0, 65535.0)),
            ],
            ..MetaSchema::new("object")
        }))
    }
}

serde_type!(RuleSpec, named "RuleSpec", |registry| {
    Protocol::register(registry);
    crate::rule::RateLimits::register(registry);
    MetaSchema {
        description: Some("What an engine rule enforces, as the verdict model reads it."),
        required: vec!["protocol", "ports", "rule_type", "limits"],
        properties: vec![
            ("protocol", Protocol::schema_ref()),
            ("ports", PortRangeSchema::schema()),
            ("rule_type", RuleType::schema_ref()),
            ("limits", crate::rule::RateLimits::schema_ref()),
        ],
        ..MetaSchema::new("object")
    }
});

serde_type!(FirewallSpec, named "FirewallSpec", |registry| {
    Chain::register(registry);
    FwProtocol::register(registry);
    Action::register(registry);
    LimitUnit::register(registry);
    let limit = MetaSchema {
        description: Some("The rate of a `limit` rule, null otherwise."),
        nullable: true,
        required: vec!["rate", "unit"],
        properties: vec![("rate", integer_range("uint32", 1.0, f64::from(u32::MAX))), ("unit", LimitUnit::schema_ref())],
        ..MetaSchema::new("object")
    };
    let ports = MetaSchema {
        description: Some("[first, last] destination port (tcp and udp only); null for all ports."),
        nullable: true,
        items: Some(Box::new(integer_range("uint16", 1.0, 65535.0))),
        min_items: Some(2),
        max_items: Some(2),
        ..MetaSchema::new("array")
    };
    let conntrack = MetaSchema { nullable: true, ..string(None, None, "Conntrack states matched, comma-separated; null for every state.") };
    MetaSchema {
        description: Some("What a firewall rule enforces."),
        required: vec!["chain", "protocol", "ports", "action", "limit", "conntrack"],
        properties: vec![
            ("chain", Chain::schema_ref()),
            ("protocol", FwProtocol::schema_ref()),
            ("ports", MetaSchemaRef::Inline(Box::new(ports))),
            ("action", Action::schema_ref()),
            ("limit", MetaSchemaRef::Inline(Box::new(limit))),
            ("conntrack", MetaSchemaRef::Inline(Box::new(conntrack))),
        ],
        ..MetaSchema::new("object")
    }
});

serde_type!(ItemRef, named "ItemRef", |_registry| {
    MetaSchema {
        description: Some("A desired-state item: its kind and ID."),
        required: vec!["kind", "id"],
        properties: vec![
            (
                "kind",
                MetaSchemaRef::Inline(Box::new(MetaSchema {
                    enum_items: vec!["engine_rule".into(), "ip_entry".into(), "firewall_rule".into()],
                    ..MetaSchema::new("string")
                })),
            ),
            ("id", MetaSchemaRef::Inline(Box::new(string(Some("ulid"), Some(ULID_PATTERN), "The item's ID (ULID).")))),
        ],
        ..MetaSchema::new("object")
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_from_paths_and_json() {
        let id = AgentId::generate();
        assert_eq!(AgentId::parse_from_parameter(&id.to_string()).ok(), Some(id));
        assert!(AgentId::parse_from_parameter("not-a-ulid").is_err());
        assert_eq!(AgentId::parse_from_json(Some(Value::String(id.to_string()))).ok(), Some(id));
        assert_eq!(id.to_json(), Some(Value::String(id.to_string())));
    }

    #[test]
    fn specs_are_validated_when_read_through_poem() {
        let bad = serde_json::json!({"protocol": 6, "ports": {"start": 9, "end": 1}, "rule_type": 0,
            "limits": {"max_pps": 0, "max_port_pps": 0, "min_pkt_size": 0, "max_pkt_size": 0}});
        assert!(RuleSpec::parse_from_json(Some(bad)).is_err());
        assert_eq!(DecimalU64(7).to_json(), Some(Value::String("7".into())));
    }
}
