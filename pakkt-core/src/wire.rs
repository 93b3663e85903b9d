//! The JSON shapes of the public API (`api-reference.txt`), defined once
//! for the server and the client.
//!
//! Field names and value spellings are the reference's. Fields the
//! reference does not show but users need (`status_message`, `slot`,
//! `created_at` …) are added, never renamed. 64-bit counters in metrics are
//! decimal strings, as the reference shows them, because JSON numbers lose
//! precision above 2^53 in many languages.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, AgentStatus, DataplaneMode, EgressMode};
use crate::firewall::{Action, Chain, FirewallRule, FwProtocol, LimitUnit};
use crate::id::{AgentId, EngineRuleId, FirewallRuleId, IpEntryId};
use crate::ip_list::{EntryStatus, IpEntry, ListType};
use crate::metrics::{Counters, MetricBucket, MetricsSummary};
use crate::rule::{ENGINE_FILENAME, EngineRule, EngineRuleStatus, Protocol, RuleType};
use crate::template::{Category, Risk, Template, TemplateRule};
use crate::verdict::DropCounts;

/// A 64-bit counter written as a decimal string (`"142857"`), as the
/// reference shows metric figures: JSON numbers lose precision above 2^53
/// in many languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DecimalU64(pub u64);

impl DecimalU64 {
    /// The value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for DecimalU64 {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

impl From<DecimalU64> for u64 {
    fn from(value: DecimalU64) -> Self {
        value.0
    }
}

impl std::fmt::Display for DecimalU64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for DecimalU64 {
    type Err = std::num::ParseIntError;

    /// Decimal digits only: no sign, no spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with('+') {
            // `u64::from_str` accepts a leading `+`; the wire format does not.
            return "-".parse::<u64>().map(Self);
        }
        s.parse().map(Self)
    }
}

impl Serialize for DecimalU64 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DecimalU64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The error body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct ErrorBody {
    /// One of `bad_request`, `unauthorized`, `account_suspended`,
    /// `not_found`, `method_not_allowed`, `validation_failed`, `conflict`,
    /// `rate_limited`, `internal`.
    pub error: String,
    /// A sentence for humans.
    pub message: String,
}

impl From<&crate::error::Error> for ErrorBody {
    fn from(e: &crate::error::Error) -> Self {
        Self { error: e.kind().code().to_owned(), message: e.to_string() }
    }
}

/// An agent (`GET /agents`, `GET /agents/:id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct AgentView {
    /// ID.
    pub id: AgentId,
    /// Display name.
    pub name: String,
    /// Host name reported by the agent.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub hostname: Option<String>,
    /// Interface the engine is attached to.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub iface: Option<String>,
    /// Agent version.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub version: Option<String>,
    /// `pending`, `online` or `offline`.
    pub status: AgentStatus,
    /// How the engine is attached (`native`, `generic`, `memory`).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub mode: Option<DataplaneMode>,
    /// How the engine's egress observer is attached: `tcx` (Linux 6.6+) or
    /// `clsact`; null before the agent's first sync or for agents without
    /// the XDP engine.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub egress_mode: Option<EgressMode>,
    /// Last sync.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl AgentView {
    /// The view of `agent` at `now`.
    pub fn new(agent: &Agent, now: DateTime<Utc>) -> Self {
        Self {
            id: agent.id,
            name: agent.name.clone(),
            hostname: agent.host.hostname.clone(),
            iface: agent.host.iface.clone(),
            version: agent.host.version.clone(),
            status: agent.status(now),
            mode: agent.host.mode,
            egress_mode: agent.host.egress,
            last_seen_at: agent.last_seen_at,
            created_at: agent.created_at,
        }
    }
}

/// `POST /agents` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CreateAgentRequest {
    /// Display name.
    pub name: String,
}

/// `POST /agents` answer: the agent and its token, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CreatedAgent {
    /// The agent.
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", oai(flatten))]
    pub agent: AgentView,
    /// `pakkt_agent_…`: give it to `pakkt-agent --token`.
    pub token: String,
}

/// An engine rule (`GET /agents/:id/programs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct EngineRuleView {
    /// ID.
    pub id: EngineRuleId,
    /// Display name.
    pub name: String,
    /// Always `pakkt_engine.bpf.o`.
    pub filename: String,
    /// The agent's interface.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub iface: Option<String>,
    /// First port.
    pub port_range_start: u16,
    /// Last port.
    pub port_range_end: u16,
    /// 0 any, 1 ICMP, 6 TCP, 17 UDP.
    pub protocol: Protocol,
    /// 0 block, 1 `rate_limit`, 2 `allow_only`, 3 `protect`.
    pub rule_type: RuleType,
    /// Packets per second per source (0 = off); for `protect`, per verified
    /// source.
    pub max_pps: u32,
    /// Packets per second per port (0 = off); for `protect`, the port's
    /// budget for unverified sources (at least 1).
    pub max_port_pps: u32,
    /// Smallest IP length that passes (0 = off).
    pub min_pkt_size: u16,
    /// Largest IP length that passes (0 = off).
    pub max_pkt_size: u16,
    /// Engine slot while one is held.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub slot: Option<u8>,
    /// Life-cycle status.
    pub status: EngineRuleStatus,
    /// Why it failed.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub status_message: Option<String>,
    /// When the agent confirmed it.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub loaded_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl EngineRuleView {
    /// The view of `rule` on an agent whose interface is `iface`.
    pub fn new(rule: &EngineRule, iface: Option<&str>) -> Self {
        Self {
            id: rule.id,
            name: rule.name.clone(),
            filename: ENGINE_FILENAME.to_owned(),
            iface: iface.map(str::to_owned),
            port_range_start: rule.spec.ports.start(),
            port_range_end: rule.spec.ports.end(),
            protocol: rule.spec.protocol,
            rule_type: rule.spec.rule_type,
            max_pps: rule.spec.limits.max_pps,
            max_port_pps: rule.spec.limits.max_port_pps,
            min_pkt_size: rule.spec.limits.min_pkt_size,
            max_pkt_size: rule.spec.limits.max_pkt_size,
            slot: rule.slot.map(crate::slot::Slot::get),
            status: rule.status,
            status_message: rule.status_message.clone(),
            loaded_at: rule.loaded_at,
            created_at: rule.created_at,
        }
    }
}

/// `POST /agents/:id/engine-rules` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CreateEngineRuleRequest {
    /// Display name.
    pub name: String,
    /// First port (0 for ICMP).
    pub port_range_start: u16,
    /// Last port (0 for ICMP).
    pub port_range_end: u16,
    /// 0 any, 1 ICMP, 6 TCP, 17 UDP.
    pub protocol: Protocol,
    /// 0 block, 1 `rate_limit`, 2 `allow_only`, 3 `protect`.
    pub rule_type: RuleType,
    /// Packets per second per source (0 = off); for `protect`, per verified
    /// source.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub max_pps: u32,
    /// Packets per second per port (0 = off); for `protect`, the port's
    /// budget for unverified sources (at least 1, else 422).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub max_port_pps: u32,
    /// Smallest IP length that passes (0 = off).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub min_pkt_size: u16,
    /// Largest IP length that passes (0 = off).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub max_pkt_size: u16,
}

/// `POST /agents/:id/engine-rules` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CreatedEngineRule {
    /// ID.
    pub id: EngineRuleId,
    /// Display name.
    pub name: String,
    /// `pending_load`.
    pub status: EngineRuleStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<&EngineRule> for CreatedEngineRule {
    fn from(rule: &EngineRule) -> Self {
        Self { id: rule.id, name: rule.name.clone(), status: rule.status, created_at: rule.created_at }
    }
}

/// An IP list entry (`GET /agents/:id/ip-list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct IpEntryView {
    /// ID.
    pub id: IpEntryId,
    /// `blacklist` or `whitelist`.
    pub list_type: ListType,
    /// Address or CIDR prefix.
    pub ip_address: String,
    /// Free-text reason.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub reason: Option<String>,
    /// Life-cycle status.
    pub status: EntryStatus,
    /// Why it failed.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub status_message: Option<String>,
    /// Expiry (blacklist only).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub expires_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<&IpEntry> for IpEntryView {
    fn from(entry: &IpEntry) -> Self {
        Self {
            id: entry.id,
            list_type: entry.spec.list_type,
            ip_address: entry.spec.cidr.to_string(),
            reason: entry.spec.reason.clone(),
            status: entry.status,
            status_message: entry.status_message.clone(),
            expires_at: entry.spec.expires_at,
            created_at: entry.created_at,
        }
    }
}

/// `POST /agents/:id/ip-list` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CreateIpEntryRequest {
    /// `blacklist` or `whitelist`.
    pub list_type: ListType,
    /// Address or CIDR prefix.
    pub ip_address: String,
    /// Free-text reason.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub reason: Option<String>,
    /// Expiry, blacklist only; null = permanent. Years 0001–9999.
    #[serde(default, deserialize_with = "crate::validation::rfc3339_opt::deserialize")]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `POST /agents/:id/ip-list` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CreatedIpEntry {
    /// ID.
    pub id: IpEntryId,
    /// `pending_add`.
    pub status: EntryStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<&IpEntry> for CreatedIpEntry {
    fn from(entry: &IpEntry) -> Self {
        Self { id: entry.id, status: entry.status, created_at: entry.created_at }
    }
}

/// Packets dropped, by why (DESIGN §4): one decimal-string counter per
/// reason, every reason present (`"0"` when none). The reasons add up to
/// the packets dropped, except for drops reported by agents that count no
/// reasons (older agents), which appear under none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[serde(default)]
pub struct DroppedByReasonView {
    /// The source is inside an in-force blacklist entry and inside no
    /// in-force whitelist entry.
    pub blacklist: DecimalU64,
    /// A `block` rule, or an `allow_only` rule and the source is not
    /// whitelisted.
    pub rule: DecimalU64,
    /// A rate limit: the source's `max_pps` (of a `rate_limit` rule, or of
    /// a `protect` rule for a verified source), or the port's
    /// `max_port_pps` (for `protect`, a repeat unverified source when the
    /// port's budget is empty).
    pub rate: DecimalU64,
    /// The packet's IP length is outside the rule's
    /// `[min_pkt_size, max_pkt_size]` (`rate_limit` and `protect`).
    pub size: DecimalU64,
    /// `protect`: a first-time unverified source while the port's budget is
    /// down to its reserve (kept for sources seen before).
    pub unverified: DecimalU64,
    /// `protect`: UDP from an unverified source with a reflection source
    /// port (19, 53, 111, 123, 137, 161, 389, 1900, 3283, 3702, 5353,
    /// 11211).
    pub reflection: DecimalU64,
    /// `protect`: TCP other than a SYN from an unverified source (out of
    /// state).
    pub out_of_state: DecimalU64,
    /// A non-first fragment from an unverified, unwhitelisted source while a
    /// `protect` rule of its transport (TCP or UDP) is loaded.
    pub fragment: DecimalU64,
    /// A broken IP packet (bad version, lengths that do not add up,
    /// truncated headers), dropped before any list or rule is consulted.
    pub malformed: DecimalU64,
}

impl From<DropCounts> for DroppedByReasonView {
    fn from(d: DropCounts) -> Self {
        Self {
            blacklist: d.blacklist.into(),
            rule: d.rule.into(),
            rate: d.rate.into(),
            size: d.size.into(),
            unverified: d.unverified.into(),
            reflection: d.reflection.into(),
            out_of_state: d.out_of_state.into(),
            fragment: d.fragment.into(),
            malformed: d.malformed.into(),
        }
    }
}

impl From<DroppedByReasonView> for DropCounts {
    fn from(v: DroppedByReasonView) -> Self {
        Self {
            blacklist: v.blacklist.get(),
            rule: v.rule.get(),
            rate: v.rate.get(),
            size: v.size.get(),
            unverified: v.unverified.get(),
            reflection: v.reflection.get(),
            out_of_state: v.out_of_state.get(),
            fragment: v.fragment.get(),
            malformed: v.malformed.get(),
        }
    }
}

/// One port's figures (in a summary's `top_ports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct PortMetricsView {
    /// Destination port (0 for traffic without ports).
    pub port: u16,
    /// Packets passed.
    pub packets_passed: DecimalU64,
    /// Packets dropped.
    pub packets_dropped: DecimalU64,
    /// Bytes passed.
    pub bytes_passed: DecimalU64,
    /// Bytes dropped.
    pub bytes_dropped: DecimalU64,
    /// Packets dropped on this port, by reason.
    #[serde(default)]
    pub dropped_by_reason: DroppedByReasonView,
}

impl PortMetricsView {
    fn new(port: u16, c: Counters) -> Self {
        Self {
            port,
            packets_passed: c.packets_passed.into(),
            packets_dropped: c.packets_dropped.into(),
            bytes_passed: c.bytes_passed.into(),
            bytes_dropped: c.bytes_dropped.into(),
            dropped_by_reason: c.dropped_by_reason.into(),
        }
    }
}

/// `GET /metrics/:agent_id/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct MetricsSummaryView {
    /// Packets passed.
    pub total_passed: DecimalU64,
    /// Packets dropped.
    pub total_dropped: DecimalU64,
    /// Bytes passed.
    pub total_bytes_passed: DecimalU64,
    /// Bytes dropped.
    pub total_bytes_dropped: DecimalU64,
    /// Packets dropped, by reason, all ports together.
    #[serde(default)]
    pub dropped_by_reason: DroppedByReasonView,
    /// The ten busiest ports.
    pub top_ports: Vec<PortMetricsView>,
}

impl From<&MetricsSummary> for MetricsSummaryView {
    fn from(s: &MetricsSummary) -> Self {
        Self {
            total_passed: s.totals.packets_passed.into(),
            total_dropped: s.totals.packets_dropped.into(),
            total_bytes_passed: s.totals.bytes_passed.into(),
            total_bytes_dropped: s.totals.bytes_dropped.into(),
            dropped_by_reason: s.totals.dropped_by_reason.into(),
            top_ports: s.top_ports.iter().map(|(p, c)| PortMetricsView::new(*p, *c)).collect(),
        }
    }
}

/// One row of `GET /metrics/:agent_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct MetricBucketView {
    /// Bucket start.
    pub bucket: DateTime<Utc>,
    /// Destination port.
    pub port: u16,
    /// Packets passed.
    pub packets_passed: DecimalU64,
    /// Packets dropped.
    pub packets_dropped: DecimalU64,
    /// Bytes passed.
    pub bytes_passed: DecimalU64,
    /// Bytes dropped.
    pub bytes_dropped: DecimalU64,
    /// Packets dropped on this port in this bucket, by reason.
    #[serde(default)]
    pub dropped_by_reason: DroppedByReasonView,
}

impl From<&MetricBucket> for MetricBucketView {
    fn from(b: &MetricBucket) -> Self {
        Self {
            bucket: b.bucket,
            port: b.port,
            packets_passed: b.counters.packets_passed.into(),
            packets_dropped: b.counters.packets_dropped.into(),
            bytes_passed: b.counters.bytes_passed.into(),
            bytes_dropped: b.counters.bytes_dropped.into(),
            dropped_by_reason: b.counters.dropped_by_reason.into(),
        }
    }
}

/// The `nft` field of an nftables template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct NftTemplateView {
    /// Chain.
    pub chain: Chain,
    /// Protocol.
    pub protocol: FwProtocol,
    /// First port.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub port_start: Option<u16>,
    /// Last port.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub port_end: Option<u16>,
    /// Action.
    pub action: Action,
    /// Rate for `limit`.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub limit_rate: Option<u32>,
    /// Unit for `limit`.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub limit_unit: Option<LimitUnit>,
    /// Conntrack states, CSV.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub conntrack: Option<String>,
}

/// A marketplace template (`GET /marketplace/templates`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct TemplateView {
    /// Slug ID.
    pub id: String,
    /// Title.
    pub title: String,
    /// What it protects.
    pub description: String,
    /// `xdp` or `nftables`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", oai(rename = "type"))]
    pub kind: String,
    /// Category.
    pub category: Category,
    /// `pakkt_engine.bpf.o` for xdp templates.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub filename: Option<String>,
    /// Engine protocol (xdp).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub protocol: Option<Protocol>,
    /// Engine rule type (xdp).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub rule_type: Option<RuleType>,
    /// First port (xdp).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub port_range_start: Option<u16>,
    /// Last port (xdp).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub port_range_end: Option<u16>,
    /// Per-source limit (xdp).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub max_pps: Option<u32>,
    /// Per-port limit (xdp).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub max_port_pps: Option<u32>,
    /// Smallest IP length (xdp).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub min_pkt_size: Option<u16>,
    /// Largest IP length (xdp).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub max_pkt_size: Option<u16>,
    /// `low`, `medium` or `high`.
    pub risk: Risk,
    /// The firewall rule (nftables).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub nft: Option<NftTemplateView>,
}

impl From<&Template> for TemplateView {
    fn from(t: &Template) -> Self {
        let mut view = Self {
            id: t.id.to_owned(),
            title: t.title.to_owned(),
            description: t.description.to_owned(),
            kind: String::new(),
            category: t.category,
            filename: None,
            protocol: None,
            rule_type: None,
            port_range_start: None,
            port_range_end: None,
            max_pps: None,
            max_port_pps: None,
            min_pkt_size: None,
            max_pkt_size: None,
            risk: t.risk,
            nft: None,
        };
        match &t.rule {
            TemplateRule::Engine(spec) => {
                view.kind = "xdp".into();
                view.filename = Some(ENGINE_FILENAME.into());
                view.protocol = Some(spec.protocol);
                view.rule_type = Some(spec.rule_type);
                view.port_range_start = Some(spec.ports.start());
                view.port_range_end = Some(spec.ports.end());
                view.max_pps = Some(spec.limits.max_pps);
                view.max_port_pps = Some(spec.limits.max_port_pps);
                view.min_pkt_size = Some(spec.limits.min_pkt_size);
                view.max_pkt_size = Some(spec.limits.max_pkt_size);
            }
            TemplateRule::Firewall(spec) => {
                view.kind = "nftables".into();
                view.nft = Some(NftTemplateView {
                    chain: spec.chain,
                    protocol: spec.protocol,
                    port_start: spec.ports.map(|p| p.0),
                    port_end: spec.ports.map(|p| p.1),
                    action: spec.action,
                    limit_rate: spec.limit.map(|l| l.rate),
                    limit_unit: spec.limit.map(|l| l.unit),
                    conntrack: spec.conntrack.as_ref().map(ToString::to_string),
                });
            }
        }
        view
    }
}

/// A firewall rule (`GET /agents/:id/firewall`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct FirewallRuleView {
    /// ID.
    pub id: FirewallRuleId,
    /// Display name.
    pub name: String,
    /// Chain.
    pub chain: Chain,
    /// Protocol.
    pub protocol: FwProtocol,
    /// First port.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub port_start: Option<u16>,
    /// Last port.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub port_end: Option<u16>,
    /// Action.
    pub action: Action,
    /// Rate for `limit`.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub limit_rate: Option<u32>,
    /// Unit for `limit`.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub limit_unit: Option<LimitUnit>,
    /// Conntrack states, CSV.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub conntrack: Option<String>,
    /// Life-cycle status.
    pub status: EntryStatus,
    /// Why it failed.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub status_message: Option<String>,
    /// Created by PAKKT for every agent; cannot be deleted.
    pub is_system: bool,
    /// Packets matched.
    pub packets_total: u64,
    /// Bytes matched.
    pub bytes_total: u64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<&FirewallRule> for FirewallRuleView {
    fn from(rule: &FirewallRule) -> Self {
        Self {
            id: rule.id,
            name: rule.name.clone(),
            chain: rule.spec.chain,
            protocol: rule.spec.protocol,
            port_start: rule.spec.ports.map(|p| p.0),
            port_end: rule.spec.ports.map(|p| p.1),
            action: rule.spec.action,
            limit_rate: rule.spec.limit.map(|l| l.rate),
            limit_unit: rule.spec.limit.map(|l| l.unit),
            conntrack: rule.spec.conntrack.as_ref().map(ToString::to_string),
            status: rule.status,
            status_message: rule.status_message.clone(),
            is_system: rule.is_system(),
            packets_total: rule.packets_total,
            bytes_total: rule.bytes_total,
            created_at: rule.created_at,
        }
    }
}

/// `POST /agents/:id/firewall` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CreateFirewallRuleRequest {
    /// Display name.
    pub name: String,
    /// `input` (default), `forward` or `output`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub chain: Option<Chain>,
    /// `tcp`, `udp`, `icmp` or `any` (default).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub protocol: Option<FwProtocol>,
    /// First port (tcp/udp).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub port_start: Option<u16>,
    /// Last port, default `port_start`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub port_end: Option<u16>,
    /// `drop`, `accept`, `reject` or `limit`.
    pub action: Action,
    /// Rate for `limit`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub limit_rate: Option<u32>,
    /// Unit for `limit`: `second` or `minute`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub limit_unit: Option<LimitUnit>,
    /// `new`, `established`, `related` or a CSV combination.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub conntrack: Option<String>,
}

/// `POST /agents/:id/firewall` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct CreatedFirewallRule {
    /// ID.
    pub id: FirewallRuleId,
    /// Display name.
    pub name: String,
    /// `pending_add`.
    pub status: EntryStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<&FirewallRule> for CreatedFirewallRule {
    fn from(rule: &FirewallRule) -> Self {
        Self { id: rule.id, name: rule.name.clone(), status: rule.status, created_at: rule.created_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::DropReason;

    #[test]
    fn reference_bodies_parse() {
        let rule: CreateEngineRuleRequest = serde_json::from_str(
            r#"{"name":"Rate Limit SSH","port_range_start":22,"port_range_end":22,"protocol":6,"rule_type":1,"max_pps":500,"max_port_pps":0,"min_pkt_size":0,"max_pkt_size":0}"#,
        )
        .expect("engine rule");
        assert_eq!(rule.protocol, Protocol::Tcp);
        let entry: CreateIpEntryRequest = serde_json::from_str(
            r#"{"list_type":"blacklist","ip_address":"203.0.113.42","reason":"UDP flood detected","expires_at":"2026-03-17T12:00:00Z","unknown":1}"#,
        )
        .expect("ip entry");
        assert_eq!(entry.list_type, ListType::Blacklist);
        let fw: CreateFirewallRuleRequest = serde_json::from_str(
            r#"{"name":"Block Redis","chain":"input","protocol":"tcp","port_start":6379,"port_end":6379,"action":"drop"}"#,
        )
        .expect("firewall");
        assert_eq!(fw.action, Action::Drop);
        assert!(
            serde_json::from_str::<CreateEngineRuleRequest>(
                r#"{"name":"x","port_range_start":70000,"port_range_end":1,"protocol":6,"rule_type":1}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<CreateEngineRuleRequest>(
                r#"{"name":"x","port_range_start":1,"port_range_end":1,"protocol":"6","rule_type":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn counters_are_decimal_strings() {
        let summary = MetricsSummary {
            totals: Counters {
                packets_passed: 142_857,
                packets_dropped: 4821,
                bytes_passed: 89_421_300,
                bytes_dropped: u64::MAX,
                dropped_by_reason: DropCounts { rate: 4800, out_of_state: 21, ..DropCounts::default() },
            },
            top_ports: vec![(30120, Counters::default())],
        };
        let json = serde_json::to_value(MetricsSummaryView::from(&summary)).expect("json");
        assert_eq!(json["total_passed"], "142857");
        assert_eq!(json["total_bytes_dropped"], "18446744073709551615");
        assert_eq!(json["top_ports"][0]["port"], 30120);
        assert_eq!(json["top_ports"][0]["packets_passed"], "0");
        assert_eq!(json["top_ports"][0]["dropped_by_reason"]["rate"], "0");
        let reasons = &json["dropped_by_reason"];
        assert_eq!(reasons["rate"], "4800");
        assert_eq!(reasons["out_of_state"], "21");
        assert_eq!(reasons["blacklist"], "0");
        let mut keys: Vec<&str> = reasons.as_object().expect("object").keys().map(String::as_str).collect();
        let mut want: Vec<&str> = DropReason::ALL.into_iter().map(DropReason::as_str).collect();
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want, "every reason, under its API key");
        let back: MetricsSummaryView = serde_json::from_value(json).expect("parse");
        assert_eq!(back.total_bytes_dropped, DecimalU64(u64::MAX));
        assert_eq!(DropCounts::from(back.dropped_by_reason), summary.totals.dropped_by_reason);
        assert!(serde_json::from_str::<DecimalU64>("\"+1\"").is_err());
        assert!(serde_json::from_str::<DecimalU64>("1").is_err());
    }

    #[test]
    fn template_views_carry_type_and_nft() {
        let views: Vec<TemplateView> = crate::template::catalog().iter().map(TemplateView::from).collect();
        let fivem = views.iter().find(|v| v.id == "tpl_fivem_shield").expect("fivem");
        let json = serde_json::to_value(fivem).expect("json");
        assert_eq!(json["type"], "xdp");
        assert_eq!(json["filename"], "pakkt_engine.bpf.o");
        assert_eq!(json["protocol"], 17);
        assert_eq!(json["risk"], "low");
        assert_eq!(json["category"], "Gaming");
        let nft = views.iter().find(|v| v.kind == "nftables").expect("an nftables template");
        assert!(nft.nft.is_some() && nft.filename.is_none());
    }
}
