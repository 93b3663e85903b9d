//! PAKKT Engine (XDP) rules: what a rule matches and what it does.
//!
//! A [`RuleSpec`] is the validated, enforceable part of a rule — protocol,
//! port range, type and limits — and is all the engine and the verdict model
//! ever see. [`EngineRule`] adds the bookkeeping the API shows (name, slot,
//! status, timestamps).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{AgentId, EngineRuleId};
use crate::slot::Slot;
use crate::validation::Invalid;

/// The transport a rule applies to, numbered as in the IP header
/// (the API sends the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Protocol {
    /// `0`: TCP or UDP.
    Any,
    /// `1`: ICMP and ICMPv6 (no ports: the range is `0..=0`).
    Icmp,
    /// `6`: TCP.
    Tcp,
    /// `17`: UDP.
    Udp,
}

impl Protocol {
    /// The number the API uses.
    pub fn number(self) -> u8 {
        match self {
            Self::Any => 0,
            Self::Icmp => 1,
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }

    /// Whether two rules' protocols can match the same packet: equal, or
    /// either is [`Protocol::Any`] (DESIGN §2 dedup).
    pub fn overlaps(self, other: Self) -> bool {
        self == other || self == Self::Any || other == Self::Any
    }

    /// Whether this protocol matches a packet of `packet` (a [`Protocol`]
    /// other than `Any`). `Any` matches TCP and UDP, never ICMP.
    pub fn matches(self, packet: Self) -> bool {
        self == packet || (self == Self::Any && matches!(packet, Self::Tcp | Self::Udp))
    }

    /// Whether rules of this protocol carry ports.
    pub fn has_ports(self) -> bool {
        self != Self::Icmp
    }
}

/// A protocol number the API does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0}: expected 0 (any), 1 (ICMP), 6 (TCP) or 17 (UDP)")]
pub struct UnknownProtocol(pub u8);

impl TryFrom<u8> for Protocol {
    type Error = UnknownProtocol;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::Any),
            1 => Ok(Self::Icmp),
            6 => Ok(Self::Tcp),
            17 => Ok(Self::Udp),
            other => Err(UnknownProtocol(other)),
        }
    }
}

impl From<Protocol> for u8 {
    fn from(value: Protocol) -> Self {
        value.number()
    }
}

/// What a rule does with the packets it matches (the API sends the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum RuleType {
    /// `0`: drop everything, whitelisted sources included.
    Block,
    /// `1`: whitelisted sources pass; others are held to the limits.
    RateLimit,
    /// `2`: only whitelisted sources pass.
    AllowOnly,
    /// `3`: whitelisted sources pass; sources the host has answered
    /// (verified) pass up to `max_pps` each; unverified sources share the
    /// port's `max_port_pps` budget for new sources (DESIGN §4).
    Protect,
}

/// A rule type number the API does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rule_type {0}: expected 0 (block), 1 (rate_limit), 2 (allow_only) or 3 (protect)")]
pub struct UnknownRuleType(pub u8);

impl TryFrom<u8> for RuleType {
    type Error = UnknownRuleType;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::Block),
            1 => Ok(Self::RateLimit),
            2 => Ok(Self::AllowOnly),
            3 => Ok(Self::Protect),
            other => Err(UnknownRuleType(other)),
        }
    }
}

impl From<RuleType> for u8 {
    fn from(value: RuleType) -> Self {
        match value {
            RuleType::Block => 0,
            RuleType::RateLimit => 1,
            RuleType::AllowOnly => 2,
            RuleType::Protect => 3,
        }
    }
}

/// An inclusive destination-port range, checked against its protocol (so it
/// is only ever read back as part of a [`RuleSpec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// A range for `protocol`: `1..=65535` with `start <= end` for TCP, UDP
    /// and any; exactly `0..=0` for ICMP.
    pub fn new(protocol: Protocol, start: u16, end: u16) -> Result<Self, Invalid> {
        if protocol.has_ports() {
            if start == 0 {
                return Err(Invalid::new("port_range_start", "must be between 1 and 65535"));
            }
            if end == 0 {
                return Err(Invalid::new("port_range_end", "must be between 1 and 65535"));
            }
            if start > end {
                return Err(Invalid::new("port_range_end", format!("must not be below port_range_start ({start})")));
            }
        } else if start != 0 || end != 0 {
            return Err(Invalid::new(
                "port_range_start",
                "ICMP rules have no ports: send port_range_start and port_range_end as 0",
            ));
        }
        Ok(Self { start, end })
    }

    /// First port.
    pub fn start(self) -> u16 {
        self.start
    }

    /// Last port (inclusive).
    pub fn end(self) -> u16 {
        self.end
    }

    /// How many ports the range spans minus one: the "narrowness" used to
    /// pick the most specific rule.
    pub fn width(self) -> u16 {
        self.end - self.start
    }

    /// Whether `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

/// The limits of a `rate_limit` or `protect` rule. Zero disables a limit,
/// except a `protect` rule's `max_port_pps`, which must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct RateLimits {
    /// Packets per second per source address (IPv6 by /64); for `protect`,
    /// per verified source.
    pub max_pps: u32,
    /// Packets per second per destination port, all sources together; for
    /// `protect`, the port's budget for unverified sources.
    pub max_port_pps: u32,
    /// Smallest IP total length that passes.
    pub min_pkt_size: u16,
    /// Largest IP total length that passes.
    pub max_pkt_size: u16,
}

impl RateLimits {
    /// Whether every limit is disabled.
    pub fn is_empty(self) -> bool {
        self == Self::default()
    }

    /// Whether an IP total length lies within the size bounds.
    pub fn size_fits(self, ip_len: u16) -> bool {
        (self.min_pkt_size == 0 || ip_len >= self.min_pkt_size)
            && (self.max_pkt_size == 0 || ip_len <= self.max_pkt_size)
    }
}

/// The enforceable content of an engine rule, valid by construction (also
/// when read from JSON: deserialising checks it like [`RuleSpec::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RuleSpecFields")]
pub struct RuleSpec {
    /// Transport matched.
    pub protocol: Protocol,
    /// Destination ports matched.
    pub ports: PortRange,
    /// What happens to matched packets.
    pub rule_type: RuleType,
    /// Limits; all zero unless `rule_type` is `RateLimit` or `Protect`.
    pub limits: RateLimits,
}

/// The JSON shape of a [`RuleSpec`], before its checks.
#[derive(Deserialize)]
struct RuleSpecFields {
    protocol: Protocol,
    ports: PortFields,
    rule_type: RuleType,
    limits: RateLimits,
}

#[derive(Deserialize)]
struct PortFields {
    start: u16,
    end: u16,
}

impl TryFrom<RuleSpecFields> for RuleSpec {
    type Error = Invalid;

    fn try_from(f: RuleSpecFields) -> Result<Self, Self::Error> {
        Self::new(f.protocol, f.ports.start, f.ports.end, f.rule_type, f.limits)
    }
}

impl RuleSpec {
    /// Checks every engine-rule rule of DESIGN §2.
    pub fn new(
        protocol: Protocol,
        port_range_start: u16,
        port_range_end: u16,
        rule_type: RuleType,
        limits: RateLimits,
    ) -> Result<Self, Invalid> {
        let ports = PortRange::new(protocol, port_range_start, port_range_end)?;
        match rule_type {
            RuleType::RateLimit => {
                if limits.is_empty() {
                    return Err(Invalid::new(
                        "max_pps",
                        "a rate_limit rule needs at least one of max_pps, max_port_pps, min_pkt_size or max_pkt_size",
                    ));
                }
                check_size_bounds(limits)?;
            }
            RuleType::Protect => {
                if limits.max_port_pps == 0 {
                    return Err(Invalid::new(
                        "max_port_pps",
                        "a protect rule needs max_port_pps of at least 1: the port's budget for new sources",
                    ));
                }
                check_size_bounds(limits)?;
            }
            RuleType::Block | RuleType::AllowOnly => {
                if !limits.is_empty() {
                    return Err(Invalid::new(
                        "rule_type",
                        "max_pps, max_port_pps, min_pkt_size and max_pkt_size apply only to rate_limit (rule_type 1) \
                         and protect (rule_type 3) rules",
                    ));
                }
            }
        }
        Ok(Self { protocol, ports, rule_type, limits })
    }

    /// Whether two specs would be duplicates (DESIGN §2): exactly the same
    /// port range and overlapping protocols.
    pub fn duplicates(&self, other: &Self) -> bool {
        self.ports == other.ports && self.protocol.overlaps(other.protocol)
    }
}

/// `min_pkt_size ≤ max_pkt_size` when both are set.
fn check_size_bounds(limits: RateLimits) -> Result<(), Invalid> {
    if limits.min_pkt_size != 0 && limits.max_pkt_size != 0 && limits.min_pkt_size > limits.max_pkt_size {
        return Err(Invalid::new("max_pkt_size", format!("must not be below min_pkt_size ({})", limits.min_pkt_size)));
    }
    Ok(())
}

/// Where an engine rule is in its life (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum EngineRuleStatus {
    /// Created; the agent has not confirmed it yet. Holds its slot.
    PendingLoad,
    /// In force on the agent. Holds its slot.
    Loaded,
    /// The agent could not load it. Holds no slot.
    Failed,
    /// Deleted; the agent has not confirmed the unload yet. Holds its slot.
    PendingUnload,
}

impl EngineRuleStatus {
    /// Whether a rule in this status keeps its slot.
    pub fn holds_slot(self) -> bool {
        !matches!(self, Self::Failed)
    }

    /// Whether a rule in this status counts for dedup.
    pub fn is_active(self) -> bool {
        matches!(self, Self::PendingLoad | Self::Loaded)
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingLoad => "pending_load",
            Self::Loaded => "loaded",
            Self::Failed => "failed",
            Self::PendingUnload => "pending_unload",
        }
    }
}

/// The engine's object file, as the API reports it.
pub const ENGINE_FILENAME: &str = "pakkt_engine.bpf.o";

/// An engine rule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineRule {
    /// Its ID.
    pub id: EngineRuleId,
    /// The agent it belongs to.
    pub agent_id: AgentId,
    /// Display name.
    pub name: String,
    /// What it enforces.
    pub spec: RuleSpec,
    /// Its slot, while its status holds one.
    pub slot: Option<Slot>,
    /// Life-cycle status.
    pub status: EngineRuleStatus,
    /// Why it failed, when it did.
    pub status_message: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When the agent first confirmed it.
    pub loaded_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_pps: u32) -> RateLimits {
        RateLimits { max_pps, ..RateLimits::default() }
    }

    #[test]
    fn protocol_and_rule_type_numbers_round_trip() {
        for n in [0u8, 1, 6, 17] {
            assert_eq!(u8::from(Protocol::try_from(n).expect("known")), n);
        }
        for n in [2u8, 4, 41, 58, 255] {
            assert_eq!(Protocol::try_from(n), Err(UnknownProtocol(n)));
        }
        for n in 0u8..4 {
            assert_eq!(u8::from(RuleType::try_from(n).expect("known")), n);
        }
        assert_eq!(RuleType::try_from(3), Ok(RuleType::Protect));
        assert!(RuleType::try_from(4).is_err());
        assert_eq!(serde_json::to_string(&Protocol::Udp).expect("json"), "17");
        assert!(serde_json::from_str::<Protocol>("3").is_err());
        assert!(serde_json::from_str::<RuleType>("\"block\"").is_err());
    }

    #[test]
    fn status_spelling_matches_the_reference() {
        let json = serde_json::to_string(&EngineRuleStatus::PendingLoad).expect("json");
        assert_eq!(json, "\"pending_load\"");
        for s in [
            EngineRuleStatus::PendingLoad,
            EngineRuleStatus::Loaded,
            EngineRuleStatus::Failed,
            EngineRuleStatus::PendingUnload,
        ] {
            assert_eq!(serde_json::to_string(&s).expect("json"), format!("\"{}\"", s.as_str()));
        }
        assert!(!EngineRuleStatus::Failed.holds_slot());
        assert!(EngineRuleStatus::PendingUnload.holds_slot());
        assert!(!EngineRuleStatus::PendingUnload.is_active());
    }

    #[test]
    fn ports_must_be_1_to_65535_and_ordered() {
        assert!(PortRange::new(Protocol::Udp, 30120, 30120).is_ok());
        assert!(PortRange::new(Protocol::Tcp, 1, 65535).is_ok());
        assert_eq!(PortRange::new(Protocol::Any, 0, 10).expect_err("zero start").field, "port_range_start");
        assert_eq!(PortRange::new(Protocol::Tcp, 10, 0).expect_err("zero end").field, "port_range_end");
        assert_eq!(PortRange::new(Protocol::Udp, 20, 10).expect_err("reversed").field, "port_range_end");
    }

    #[test]
    fn icmp_rules_have_no_ports() {
        assert!(PortRange::new(Protocol::Icmp, 0, 0).is_ok());
        assert!(PortRange::new(Protocol::Icmp, 0, 1).is_err());
        assert!(PortRange::new(Protocol::Icmp, 22, 22).is_err());
    }

    #[test]
    fn rate_limit_needs_a_limit() {
        let err =
            RuleSpec::new(Protocol::Tcp, 22, 22, RuleType::RateLimit, RateLimits::default()).expect_err("all zero");
        assert_eq!(err.field, "max_pps");
        assert!(RuleSpec::new(Protocol::Tcp, 22, 22, RuleType::RateLimit, limits(500)).is_ok());
        let size_only = RateLimits { max_pkt_size: 1200, ..RateLimits::default() };
        assert!(RuleSpec::new(Protocol::Udp, 53, 53, RuleType::RateLimit, size_only).is_ok());
    }

    #[test]
    fn size_bounds_must_be_ordered() {
        let bad = RateLimits { min_pkt_size: 500, max_pkt_size: 100, ..RateLimits::default() };
        let err = RuleSpec::new(Protocol::Udp, 53, 53, RuleType::RateLimit, bad).expect_err("reversed");
        assert_eq!(err.field, "max_pkt_size");
        let min_only = RateLimits { min_pkt_size: 500, ..RateLimits::default() };
        assert!(min_only.size_fits(500) && min_only.size_fits(65535) && !min_only.size_fits(499));
    }

    #[test]
    fn specs_read_from_json_are_checked() {
        let spec = RuleSpec::new(Protocol::Udp, 30120, 30130, RuleType::RateLimit, limits(5000)).expect("spec");
        let json = serde_json::to_value(spec).expect("json");
        assert_eq!(json["ports"]["start"], 30120);
        assert_eq!(serde_json::from_value::<RuleSpec>(json.clone()).expect("round trip"), spec);
        let mut reversed = json;
        reversed["ports"]["start"] = 40000.into();
        assert!(serde_json::from_value::<RuleSpec>(reversed).is_err(), "a reversed range is refused");
    }

    #[test]
    fn protect_needs_a_port_budget_of_at_least_one() {
        let err = RuleSpec::new(Protocol::Udp, 27015, 27015, RuleType::Protect, limits(100)).expect_err("no budget");
        assert_eq!(err.field, "max_port_pps");
        let budget = RateLimits { max_port_pps: 1, ..RateLimits::default() };
        let spec = RuleSpec::new(Protocol::Udp, 27015, 27015, RuleType::Protect, budget).expect("budget only");
        assert_eq!(spec.limits.max_pps, 0, "max_pps 0 leaves verified sources unlimited");
        assert!(RuleSpec::new(Protocol::Any, 1, 65535, RuleType::Protect, budget).is_ok());
        assert!(RuleSpec::new(Protocol::Icmp, 0, 0, RuleType::Protect, budget).is_ok());
    }

    #[test]
    fn protect_size_bounds_are_checked_as_for_rate_limit() {
        let bad = RateLimits { max_port_pps: 1000, min_pkt_size: 500, max_pkt_size: 100, ..RateLimits::default() };
        let err = RuleSpec::new(Protocol::Udp, 27015, 27015, RuleType::Protect, bad).expect_err("reversed");
        assert_eq!(err.field, "max_pkt_size");
        let good = RateLimits { max_pps: 100, max_port_pps: 1000, min_pkt_size: 28, max_pkt_size: 1400 };
        let spec = RuleSpec::new(Protocol::Udp, 27015, 27015, RuleType::Protect, good).expect("ordered");
        let json = serde_json::to_value(spec).expect("json");
        assert_eq!(json["rule_type"], 3);
        assert_eq!(serde_json::from_value::<RuleSpec>(json).expect("round trip"), spec);
    }

    #[test]
    fn limits_only_on_rate_limit_rules() {
        assert!(RuleSpec::new(Protocol::Tcp, 22, 22, RuleType::Block, limits(5)).is_err());
        assert!(RuleSpec::new(Protocol::Tcp, 22, 22, RuleType::AllowOnly, limits(5)).is_err());
        assert!(RuleSpec::new(Protocol::Tcp, 22, 22, RuleType::Block, RateLimits::default()).is_ok());
    }

    #[test]
    fn protocol_zero_overlaps_tcp_and_udp_but_they_coexist() {
        let udp = RuleSpec::new(Protocol::Udp, 30120, 30120, RuleType::Block, RateLimits::default()).expect("udp");
        let tcp = RuleSpec::new(Protocol::Tcp, 30120, 30120, RuleType::Block, RateLimits::default()).expect("tcp");
        let any = RuleSpec::new(Protocol::Any, 30120, 30120, RuleType::Block, RateLimits::default()).expect("any");
        let wider = RuleSpec::new(Protocol::Udp, 30120, 30121, RuleType::Block, RateLimits::default()).expect("wider");
        assert!(!udp.duplicates(&tcp));
        assert!(udp.duplicates(&any) && any.duplicates(&tcp));
        assert!(!udp.duplicates(&wider));
        assert!(Protocol::Any.matches(Protocol::Tcp) && !Protocol::Any.matches(Protocol::Icmp));
    }
}
