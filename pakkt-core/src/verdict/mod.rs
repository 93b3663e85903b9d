//! The verdict model: what the PAKKT Engine does with any packet.
//!
//! [`decide`] is the specification of the XDP program. The BPF program is
//! tested against it byte for byte (same frame, same tables, same clock →
//! same verdict, same counters) through `BPF_PROG_TEST_RUN`, and the agent's
//! in-memory dataplane runs it directly. So every rule below is
//! deterministic, uses integers only, and is written the way the C code
//! must do it: bounded loops, a bounds check before every read, no
//! allocation on the packet path apart from the model's own maps.
//!
//! # Order (DESIGN §2 "Verdict")
//! 1. [`packet::parse`] the frame. Not IP → pass ([`Reason::NonIp`]).
//!    Malformed IP → drop ([`Reason::Malformed`]) before any list is
//!    consulted: the kernel would discard such a packet anyway (bad
//!    version, lengths that do not add up, truncated headers), so dropping it
//!    early costs a legitimate sender nothing, and the later steps never
//!    have to reason about half-parsed packets. This includes packets from
//!    trusted sources and neighbour discovery whose headers are broken.
//!    Then `ICMPv6` neighbour discovery (types 133..=137) passes
//!    ([`Reason::NeighbourDiscovery`]), and so does a source listed in
//!    [`EngineTables::trusted`] ([`Reason::Trusted`], exact address
//!    match): no rule or list can cut a host off from its neighbours or from
//!    the server that would lift the rule. Neighbour discovery is
//!    recognised by type alone, unfragmented or in a first fragment; its
//!    hop limit is not checked (RFC 4861 requires 255 and the kernel drops
//!    the rest), so a spoofed flood of these types reaches the stack.
//! 2. A source inside an in-force blacklist entry and inside no in-force
//!    whitelist entry → drop ([`Reason::Blacklisted`]). Families never mix:
//!    an IPv4 source never matches an IPv6 prefix, v4-mapped addresses
//!    included.
//! 3. A non-first fragment has no ports, so only steps 1–2 apply → pass
//!    ([`Reason::NonFirstFragment`]), unless a `protect` rule is loaded for
//!    its transport (TCP or UDP, a rule of that protocol or of
//!    [`Protocol::Any`]): then only whitelisted and verified sources pass
//!    ([`Reason::NonFirstFragment`]) and the rest drop
//!    ([`Reason::UnverifiedFragment`], port 0, no slot). This amends
//!    DESIGN §2: an unverified source's fragments cannot get past a
//!    protect rule. Otherwise the most specific rule for
//!    (protocol, destination port) is looked up
//!    ([`EngineTables::rule_for`]): TCP and UDP by their destination port,
//!    ICMP and `ICMPv6` as protocol [`Protocol::Icmp`] with port 0. Other
//!    transports, and a missing rule, pass ([`Reason::NoRule`]).
//! 4. The rule acts: `block` drops everyone ([`Reason::Blocked`]);
//!    `allow_only` passes whitelisted sources ([`Reason::Whitelisted`]) and
//!    drops the rest ([`Reason::NotWhitelisted`]); `rate_limit` passes
//!    whitelisted sources, drops packets whose IP length is outside the
//!    size bounds ([`Reason::PacketSize`]), then asks the rule's per-source
//!    buckets ([`Reason::SourceRate`] when empty, nothing taken; a
//!    count-min sketch, see [`bucket`]), then its per-port bucket
//!    ([`Reason::PortRate`] when empty; the source's token stays taken),
//!    and passes ([`Reason::WithinLimits`]). A limit of 0 is off and its
//!    buckets are never created or looked at; a packet dropped for its
//!    source never touches the port bucket. See [`bucket`] for the buckets
//!    themselves and why per-source state is a sketch.
//! 5. `protect` (DESIGN §4), in order: a whitelisted source passes
//!    ([`Reason::Whitelisted`]); an IP length outside the size bounds drops
//!    ([`Reason::PacketSize`]); a *verified* source ([`verified`]) passes
//!    ([`Reason::Verified`]) unless `max_pps` is set and its sketch buckets
//!    are empty ([`Reason::SourceRate`]). An unverified source: TCP other
//!    than a bare SYN (`flags & (SYN|ACK|RST|FIN) != SYN`) drops
//!    ([`Reason::OutOfState`]); UDP from a [`REFLECTION_PORTS`] source port
//!    drops ([`Reason::Reflection`]); everything else (ICMP included) goes
//!    to admission ([`admission`]): passes ([`Reason::Admitted`]), drops as a
//!    first-time source when the budget is down to its reserve
//!    ([`Reason::Unverified`]), or drops as a repeat when the budget is
//!    empty ([`Reason::PortRate`]).
//!
//! # Egress
//! [`observe_egress`] is the model of the engine's egress program: a
//! packet the host sends verifies its destination when it is TCP or UDP
//! (not a non-first fragment), not a TCP RST, and sent *from* a port whose
//! deciding rule ([`EngineTables::rule_for`] at the source port) is
//! `protect`. ICMP never verifies, so no ICMP error the host sends (port
//! unreachable, say) verifies the flood that caused it; nor does a RST.
//! "Decided by" is stricter than DESIGN's "covered by": a port whose most
//! specific rule is another type verifies nobody.
//!
//! # Lists and expiry
//! An entry is in force while it has no expiry or `now_ns` is before it
//! ([`ListEntry::in_force`]); the same holds for whitelist entries. A source
//! is listed when *any* in-force entry contains it. A BPF LPM trie returns
//! only the longest matching prefix, which may be expired while a shorter
//! one is still in force; the engine can match this model by storing with each
//! prefix the latest expiry among that entry and every entry of the same
//! list that encloses it (all entries containing a source are nested, and
//! the longest one is looked up).
//!
//! # Counting
//! [`Outcome::frame_len`] is the whole frame as XDP sees it (no FCS).
//! [`Tally`] counts every packet on its destination port (0 when it has
//! none) and, when a rule matched, on the rule's slot.

pub mod admission;
pub mod bucket;
pub mod packet;
pub mod verified;

#[cfg(any(test, feature = "testing"))]
pub mod frames;
#[cfg(any(test, feature = "testing"))]
pub mod strategies;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use admission::SeenTable;
pub use bucket::{RateState, SourceKey, TokenBucket};
use packet::{Fragment, IpPacket, L4, Parsed, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
pub use verified::{Observed, VerifiedSet};

use crate::cidr::Cidr;
use crate::metrics::Counters;
use crate::rule::{Protocol, RuleSpec, RuleType};
use crate::slot::Slot;

/// One whitelist or blacklist entry as the engine holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListEntry {
    /// The prefix listed.
    pub cidr: Cidr,
    /// When the entry stops applying, in the engine clock's nanoseconds;
    /// `None` never.
    pub expires_at_ns: Option<u64>,
}

impl ListEntry {
    /// An entry that never expires.
    pub fn permanent(cidr: Cidr) -> Self {
        Self { cidr, expires_at_ns: None }
    }

    /// Whether the entry applies at `now_ns`: no expiry, or `now_ns` is
    /// strictly before it.
    pub fn in_force(&self, now_ns: u64) -> bool {
        self.expires_at_ns.is_none_or(|expiry| now_ns < expiry)
    }

    /// Whether the entry applies at `now_ns` and contains `ip`.
    pub fn covers(&self, ip: IpAddr, now_ns: u64) -> bool {
        self.in_force(now_ns) && self.cidr.contains(ip)
    }
}

/// Everything the engine holds that decides verdicts, apart from rate state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineTables {
    /// Loaded rules by slot.
    pub rules: BTreeMap<Slot, RuleSpec>,
    /// Sources exempt from the blacklist, `allow_only` and `rate_limit`.
    pub whitelist: Vec<ListEntry>,
    /// Sources dropped unless whitelisted.
    pub blacklist: Vec<ListEntry>,
    /// The control-plane server's addresses: always pass.
    pub trusted: Vec<IpAddr>,
}

impl EngineTables {
    /// Whether an in-force whitelist entry contains `ip`.
    pub fn is_whitelisted(&self, ip: IpAddr, now_ns: u64) -> bool {
        self.whitelist.iter().any(|entry| entry.covers(ip, now_ns))
    }

    /// Whether an in-force blacklist entry contains `ip` (whitelisting not
    /// considered).
    pub fn is_blacklisted(&self, ip: IpAddr, now_ns: u64) -> bool {
        self.blacklist.iter().any(|entry| entry.covers(ip, now_ns))
    }

    /// Whether a `protect` rule for `protocol` (TCP or UDP) is loaded: one
    /// of that protocol or of [`Protocol::Any`]. Non-first fragments of that
    /// transport then need a whitelisted or verified source.
    pub fn protects(&self, protocol: Protocol) -> bool {
        self.rules.values().any(|spec| spec.rule_type == RuleType::Protect && spec.protocol.matches(protocol))
    }

    /// Whether `ip` is one of the trusted addresses.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.contains(&ip)
    }

    /// The most specific rule for a packet of `protocol` (TCP, UDP or ICMP)
    /// to `port` (0 for ICMP): among rules whose protocol
    /// [matches](Protocol::matches) and whose range contains the port, the
    /// narrowest range, then a protocol-specific rule before
    /// [`Protocol::Any`], then the lowest slot. Passing [`Protocol::Any`] as
    /// the packet's protocol finds only `Any` rules; packets never have it.
    pub fn rule_for(&self, protocol: Protocol, port: u16) -> Option<(Slot, &RuleSpec)> {
        self.rules
            .iter()
            .filter(|(_, spec)| spec.protocol.matches(protocol) && spec.ports.contains(port))
            .min_by_key(|(slot, spec)| (spec.ports.width(), spec.protocol == Protocol::Any, **slot))
            .map(|(slot, spec)| (*slot, spec))
    }
}

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// `XDP_PASS`.
    Pass,
    /// `XDP_DROP`.
    Drop,
}

/// Why a packet got its verdict. Each reason implies one verdict
/// ([`Reason::verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Pass: not IPv4 or IPv6 (ARP …), or too short to tell.
    NonIp,
    /// Pass: `ICMPv6` neighbour discovery.
    NeighbourDiscovery,
    /// Pass: from a trusted (control-plane) address.
    Trusted,
    /// Drop: a broken IP packet.
    Malformed,
    /// Drop: blacklisted and not whitelisted.
    Blacklisted,
    /// Pass: no rule for its protocol and port, or a transport rules never
    /// match.
    NoRule,
    /// Pass: a non-first fragment, past the lists.
    NonFirstFragment,
    /// Drop: a `block` rule.
    Blocked,
    /// Drop: an `allow_only` rule and the source is not whitelisted.
    NotWhitelisted,
    /// Pass: an `allow_only` or `rate_limit` rule and the source is
    /// whitelisted.
    Whitelisted,
    /// Drop: a `rate_limit` rule and the IP length is outside its bounds.
    PacketSize,
    /// Drop: a `rate_limit` rule and the source's bucket is empty.
    SourceRate,
    /// Drop: a `rate_limit` rule and the port's bucket is empty.
    PortRate,
    /// Pass: a `rate_limit` rule and the packet is within every limit.
    WithinLimits,
    /// Pass: a `protect` rule and the source is verified (within `max_pps`).
    Verified,
    /// Pass: a `protect` rule, an unverified source, and the port's budget
    /// took it.
    Admitted,
    /// Drop: a `protect` rule, a first-time unverified source, and the
    /// port's budget is down to its reserve.
    Unverified,
    /// Drop: a `protect` rule and UDP from an unverified source with a
    /// reflection source port.
    Reflection,
    /// Drop: a `protect` rule and TCP other than a bare SYN from an
    /// unverified source.
    OutOfState,
    /// Drop: a non-first TCP or UDP fragment from an unverified,
    /// unwhitelisted source while a `protect` rule of its transport is
    /// loaded.
    UnverifiedFragment,
}

/// Why a packet was dropped, as counted and reported (DESIGN §4, plus
/// `malformed` for broken packets, which §4's list leaves out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Blacklisted and not whitelisted.
    Blacklist,
    /// A `block` rule, or `allow_only` and not whitelisted.
    Rule,
    /// A per-source or per-port limit.
    Rate,
    /// Outside the size bounds.
    Size,
    /// A first-time unverified source when the budget is down to its
    /// reserve.
    Unverified,
    /// UDP from a reflection source port.
    Reflection,
    /// TCP other than a SYN from an unverified source.
    OutOfState,
    /// A non-first fragment from an unverified source.
    Fragment,
    /// A broken IP packet.
    Malformed,
}

impl DropReason {
    /// Every reason, in counter order (the engine's counter index is the
    /// position here).
    pub const ALL: [Self; 9] = [
        Self::Blacklist,
        Self::Rule,
        Self::Rate,
        Self::Size,
        Self::Unverified,
        Self::Reflection,
        Self::OutOfState,
        Self::Fragment,
        Self::Malformed,
    ];

    /// The reason's key in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blacklist => "blacklist",
            Self::Rule => "rule",
            Self::Rate => "rate",
            Self::Size => "size",
            Self::Unverified => "unverified",
            Self::Reflection => "reflection",
            Self::OutOfState => "out_of_state",
            Self::Fragment => "fragment",
            Self::Malformed => "malformed",
        }
    }

    /// The counter index: the position in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Drops counted by reason: one field per [`DropReason`] (the engine's
/// per-port and per-slot reason counters, in [`DropReason::ALL`] order).
/// Missing fields read as 0, so reports from agents that count no reasons
/// still parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[serde(default)]
pub struct DropCounts {
    /// Blacklisted and not whitelisted.
    #[cfg_attr(feature = "openapi", oai(default))]
    pub blacklist: u64,
    /// A `block` rule, or `allow_only` and not whitelisted.
    #[cfg_attr(feature = "openapi", oai(default))]
    pub rule: u64,
    /// A per-source or per-port limit.
    #[cfg_attr(feature = "openapi", oai(default))]
    pub rate: u64,
    /// Outside the size bounds.
    #[cfg_attr(feature = "openapi", oai(default))]
    pub size: u64,
    /// A first-time unverified source when the budget is down to its
    /// reserve.
    #[cfg_attr(feature = "openapi", oai(default))]
    pub unverified: u64,
    /// UDP from a reflection source port.
    #[cfg_attr(feature = "openapi", oai(default))]
    pub reflection: u64,
    /// TCP other than a SYN from an unverified source.
    #[cfg_attr(feature = "openapi", oai(default))]
    pub out_of_state: u64,
    /// A non-first fragment from an unverified source.
    #[cfg_attr(feature = "openapi", oai(default))]
    pub fragment: u64,
    /// A broken IP packet.
    #[cfg_attr(feature = "openapi", oai(default))]
    pub malformed: u64,
}

impl DropCounts {
    /// Counts in [`DropReason::ALL`] order (the engine's layout).
    pub fn from_array(counts: [u64; 9]) -> Self {
        let [blacklist, rule, rate, size, unverified, reflection, out_of_state, fragment, malformed] = counts;
        Self { blacklist, rule, rate, size, unverified, reflection, out_of_state, fragment, malformed }
    }

    /// The counts in [`DropReason::ALL`] order.
    pub fn to_array(self) -> [u64; 9] {
        [
            self.blacklist,
            self.rule,
            self.rate,
            self.size,
            self.unverified,
            self.reflection,
            self.out_of_state,
            self.fragment,
            self.malformed,
        ]
    }

    fn field(&mut self, reason: DropReason) -> &mut u64 {
        match reason {
            DropReason::Blacklist => &mut self.blacklist,
            DropReason::Rule => &mut self.rule,
            DropReason::Rate => &mut self.rate,
            DropReason::Size => &mut self.size,
            DropReason::Unverified => &mut self.unverified,
            DropReason::Reflection => &mut self.reflection,
            DropReason::OutOfState => &mut self.out_of_state,
            DropReason::Fragment => &mut self.fragment,
            DropReason::Malformed => &mut self.malformed,
        }
    }

    /// Counts one drop.
    pub fn add(&mut self, reason: DropReason) {
        let count = self.field(reason);
        *count = count.saturating_add(1);
    }

    /// Adds `other`, reason by reason, saturating.
    pub fn merge(&mut self, other: Self) {
        for (reason, n) in DropReason::ALL.into_iter().zip(other.to_array()) {
            let count = self.field(reason);
            *count = count.saturating_add(n);
        }
    }

    /// Drops of `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.to_array().get(reason.index()).copied().unwrap_or_default()
    }

    /// All drops together.
    pub fn total(&self) -> u64 {
        self.to_array().iter().fold(0, |sum, n| sum.saturating_add(*n))
    }

    /// Whether no drop is counted.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// UDP source ports of amplification services (chargen, DNS, portmap, NTP,
/// NetBIOS, SNMP, CLDAP, SSDP, ARD, WS-Discovery, mDNS, memcached): an
/// unverified source sending from one to a `protect` port is reflecting.
pub const REFLECTION_PORTS: [u16; 12] = [19, 53, 111, 123, 137, 161, 389, 1900, 3283, 3702, 5353, 11211];

/// Whether `port` is one of [`REFLECTION_PORTS`].
pub fn is_reflection_port(port: u16) -> bool {
    REFLECTION_PORTS.contains(&port)
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 20] = [
        Self::NonIp,
        Self::NeighbourDiscovery,
        Self::Trusted,
        Self::Malformed,
        Self::Blacklisted,
        Self::NoRule,
        Self::NonFirstFragment,
        Self::Blocked,
        Self::NotWhitelisted,
        Self::Whitelisted,
        Self::PacketSize,
        Self::SourceRate,
        Self::PortRate,
        Self::WithinLimits,
        Self::Verified,
        Self::Admitted,
        Self::Unverified,
        Self::Reflection,
        Self::OutOfState,
        Self::UnverifiedFragment,
    ];

    /// The verdict this reason gives: a drop exactly when it is counted
    /// under a drop reason.
    pub fn verdict(self) -> Verdict {
        if self.drop_reason().is_some() { Verdict::Drop } else { Verdict::Pass }
    }

    /// The drop reason it is counted under; `None` for the passing ones.
    pub fn drop_reason(self) -> Option<DropReason> {
        match self {
            Self::NonIp
            | Self::NeighbourDiscovery
            | Self::Trusted
            | Self::NoRule
            | Self::NonFirstFragment
            | Self::Whitelisted
            | Self::WithinLimits
            | Self::Verified
            | Self::Admitted => None,
            Self::Malformed => Some(DropReason::Malformed),
            Self::Blacklisted => Some(DropReason::Blacklist),
            Self::Blocked | Self::NotWhitelisted => Some(DropReason::Rule),
            Self::PacketSize => Some(DropReason::Size),
            Self::SourceRate | Self::PortRate => Some(DropReason::Rate),
            Self::Unverified => Some(DropReason::Unverified),
            Self::Reflection => Some(DropReason::Reflection),
            Self::OutOfState => Some(DropReason::OutOfState),
            Self::UnverifiedFragment => Some(DropReason::Fragment),
        }
    }
}

/// The verdict on one frame and what it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Outcome {
    /// Pass or drop; always `reason.verdict()`.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// TCP or UDP destination port; 0 when the packet has none (not IP,
    /// malformed, ICMP, other transports, non-first fragments).
    pub port: u16,
    /// The rule that decided, when one matched (step 4).
    pub slot: Option<Slot>,
    /// The whole frame's length in bytes (saturating at `u32::MAX`).
    pub frame_len: u32,
}

/// Everything the engine changes as packets go by: the token buckets, the
/// verified set and the seen table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Token buckets (`rate_limit`, and `protect`'s `max_pps` and budget).
    pub rate: RateState,
    /// Sources the host has answered.
    pub verified: VerifiedSet,
    /// Unverified sources seen lately.
    pub seen: SeenTable,
}

impl State {
    /// Empty state: [`RateState::new`], the default verified set and seen
    /// table, all keyed by seed 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty state with a sketch of `width` cells per row; every table is
    /// keyed by `seed` (each hash has its own salt).
    pub fn with_sketch(seed: u64, width: u32) -> Self {
        Self::with_sizes(seed, width, verified::DEFAULT_VERIFIED_SETS, admission::DEFAULT_SEEN_SETS)
    }

    /// Empty state of these sizes, every table keyed by `seed`.
    pub fn with_sizes(seed: u64, width: u32, verified_sets: u32, seen_sets: u32) -> Self {
        Self {
            rate: RateState::with_sketch(seed, width),
            verified: VerifiedSet::new(seed, verified_sets),
            seen: SeenTable::new(seed, seen_sets),
        }
    }
}

/// What a packet the host sent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EgressOutcome {
    /// It verifies nobody: not IP, malformed, not TCP or UDP, a non-first
    /// fragment, a TCP RST, or not from a port a `protect` rule decides.
    Ignored,
    /// It verified its destination (the set's answer).
    Observed(Observed),
}

/// Records a frame the host sends at `now_ns`: it verifies its destination
/// when it is TCP or UDP, not a RST, and from a port whose deciding rule is
/// `protect` (see "Egress" above). Never panics, whatever the bytes.
pub fn observe_egress(tables: &EngineTables, state: &mut State, now_ns: u64, frame: &[u8]) -> EgressOutcome {
    let Parsed::Ip(ip) = packet::parse(frame) else {
        return EgressOutcome::Ignored;
    };
    let (protocol, port) = match ip.l4 {
        L4::Tcp { flags, .. } if flags & TCP_RST != 0 => return EgressOutcome::Ignored,
        L4::Tcp { src_port, .. } => (Protocol::Tcp, src_port),
        L4::Udp { src_port, .. } => (Protocol::Udp, src_port),
        L4::Icmp { .. } | L4::Other(_) | L4::None => return EgressOutcome::Ignored,
    };
    match tables.rule_for(protocol, port) {
        Some((_, spec)) if spec.rule_type == RuleType::Protect => {
            EgressOutcome::Observed(state.verified.observe(SourceKey::of(ip.dst), now_ns))
        }
        _ => EgressOutcome::Ignored,
    }
}

/// Decides what the engine does with `frame` at `now_ns` (the engine's
/// monotonic clock), updating `state`'s token buckets and seen table.
/// Never panics, whatever the bytes.
pub fn decide(tables: &EngineTables, state: &mut State, now_ns: u64, frame: &[u8]) -> Outcome {
    let frame_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    let (reason, port, slot) = match packet::parse(frame) {
        Parsed::NonIp => (Reason::NonIp, 0, None),
        Parsed::Malformed(_) => (Reason::Malformed, 0, None),
        Parsed::Ip(ip) => {
            let port = ip.l4.dst_port();
            let (reason, slot) = decide_ip(tables, state, now_ns, &ip);
            (reason, port, slot)
        }
    };
    Outcome { verdict: reason.verdict(), reason, port, slot, frame_len }
}

/// Steps 1–5 for a well-formed IP packet.
fn decide_ip(tables: &EngineTables, state: &mut State, now_ns: u64, ip: &IpPacket) -> (Reason, Option<Slot>) {
    if ip.l4.is_neighbour_discovery() {
        return (Reason::NeighbourDiscovery, None);
    }
    if tables.is_trusted(ip.src) {
        return (Reason::Trusted, None);
    }
    let whitelisted = tables.is_whitelisted(ip.src, now_ns);
    if !whitelisted && tables.is_blacklisted(ip.src, now_ns) {
        return (Reason::Blacklisted, None);
    }
    if ip.fragment == Fragment::NonFirst {
        let guarded = match ip.l4 {
            L4::Other(packet::IPPROTO_TCP) => tables.protects(Protocol::Tcp),
            L4::Other(packet::IPPROTO_UDP) => tables.protects(Protocol::Udp),
            _ => false,
        };
        if guarded && !whitelisted && !state.verified.is_verified(SourceKey::of(ip.src), now_ns) {
            return (Reason::UnverifiedFragment, None);
        }
        return (Reason::NonFirstFragment, None);
    }
    let (protocol, port) = match ip.l4 {
        L4::Tcp { dst_port, .. } => (Protocol::Tcp, dst_port),
        L4::Udp { dst_port, .. } => (Protocol::Udp, dst_port),
        L4::Icmp { .. } => (Protocol::Icmp, 0),
        L4::Other(_) | L4::None => return (Reason::NoRule, None),
    };
    let Some((slot, spec)) = tables.rule_for(protocol, port) else {
        return (Reason::NoRule, None);
    };
    let reason = match spec.rule_type {
        RuleType::Block => Reason::Blocked,
        RuleType::AllowOnly | RuleType::RateLimit | RuleType::Protect if whitelisted => Reason::Whitelisted,
        RuleType::AllowOnly => Reason::NotWhitelisted,
        RuleType::RateLimit => {
            let limits = spec.limits;
            if !limits.size_fits(ip.ip_total_len) {
                Reason::PacketSize
            } else if limits.max_pps != 0
                && !state.rate.take_source(slot, SourceKey::of(ip.src), limits.max_pps, now_ns)
            {
                Reason::SourceRate
            } else if limits.max_port_pps != 0
                && !state.rate.take_port(slot, spec.protocol, port, limits.max_port_pps, now_ns)
            {
                Reason::PortRate
            } else {
                Reason::WithinLimits
            }
        }
        RuleType::Protect => protect(state, now_ns, ip, slot, spec, port),
    };
    (reason, Some(slot))
}

/// Step 5: a `protect` rule on a packet from a source that is not
/// whitelisted.
fn protect(state: &mut State, now_ns: u64, ip: &IpPacket, slot: Slot, spec: &RuleSpec, port: u16) -> Reason {
    let limits = spec.limits;
    if !limits.size_fits(ip.ip_total_len) {
        return Reason::PacketSize;
    }
    let key = SourceKey::of(ip.src);
    if state.verified.is_verified(key, now_ns) {
        if limits.max_pps != 0 && !state.rate.take_source(slot, key, limits.max_pps, now_ns) {
            return Reason::SourceRate;
        }
        return Reason::Verified;
    }
    match ip.l4 {
        L4::Tcp { flags, .. } if flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) != TCP_SYN => {
            return Reason::OutOfState;
        }
        L4::Udp { src_port, .. } if is_reflection_port(src_port) => return Reason::Reflection,
        _ => {}
    }
    let repeat = state.seen.touch(key, now_ns);
    let floor = if repeat { 0 } else { admission::reserve_units(limits.max_port_pps) };
    if state.rate.take_port_above(slot, spec.protocol, port, limits.max_port_pps, floor, now_ns) {
        Reason::Admitted
    } else if repeat {
        Reason::PortRate
    } else {
        Reason::Unverified
    }
}

/// Per-port and per-slot counters over decided packets, as the engine's
/// counter maps hold them, each drop also counted under its
/// [`DropReason`] (in [`Counters::dropped_by_reason`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// By destination port (0 for packets without one).
    pub per_port: BTreeMap<u16, Counters>,
    /// By the slot of the rule that decided, for packets a rule decided.
    pub per_slot: BTreeMap<Slot, Counters>,
}

impl Tally {
    /// Counts one outcome: on its port always, on its slot when a rule
    /// matched; bytes are the whole frame, and a drop counts under its
    /// reason's [`DropReason`].
    pub fn record(&mut self, outcome: &Outcome) {
        let bytes = u64::from(outcome.frame_len);
        let dropped = outcome.reason.drop_reason();
        let count = |counters: &mut Counters| match dropped {
            Some(reason) => counters.count_drop(reason, bytes),
            None => counters.count_pass(bytes),
        };
        count(self.per_port.entry(outcome.port).or_default());
        if let Some(slot) = outcome.slot {
            count(self.per_slot.entry(slot).or_default());
        }
    }

    /// All ports together.
    pub fn total(&self) -> Counters {
        let mut total = Counters::default();
        for counters in self.per_port.values() {
            total.add(*counters);
        }
        total
    }
}
