//! nftables firewall rules: the stateful layer behind the engine.
//!
//! The agent owns one table, `inet pakkt`. System rules (loopback,
//! established/related, the agent's link to its server) come first in every
//! chain and cannot be deleted through the API; user rules follow in
//! creation order. Chains keep policy accept: PAKKT only ever adds
//! restrictions a user asked for.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{AgentId, FirewallRuleId};
use crate::ip_list::EntryStatus;
use crate::validation::{self, Invalid};

/// The hook a rule sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum Chain {
    /// Traffic to this host (the default).
    #[default]
    Input,
    /// Traffic routed through this host.
    Forward,
    /// Traffic from this host.
    Output,
}

impl Chain {
    /// The API's (and the nftables chain's) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Forward => "forward",
            Self::Output => "output",
        }
    }
}

/// The transport a firewall rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum FwProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP and ICMPv6 (no ports).
    Icmp,
    /// Any protocol (no ports).
    Any,
}

impl FwProtocol {
    /// Whether rules of this protocol may name ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp)
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::Any => "any",
        }
    }
}

/// What a firewall rule does with matched packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum Action {
    /// Drop silently.
    Drop,
    /// Accept (and stop evaluating PAKKT's chain).
    Accept,
    /// Drop with an ICMP/TCP reset answer.
    Reject,
    /// Accept up to `limit_rate` per `limit_unit` per source, drop the rest.
    Limit,
}

impl Action {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Limit => "limit",
        }
    }
}

/// The time unit of a `limit` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum LimitUnit {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
}

impl LimitUnit {
    /// The API's (and nftables') spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
        }
    }
}

/// A connection-tracking state a rule can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CtState {
    /// The first packet of a connection.
    New,
    /// A packet of a known connection.
    Established,
    /// A packet related to a known connection (ICMP errors, FTP data).
    Related,
}

impl CtState {
    /// The API's (and nftables') spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Established => "established",
            Self::Related => "related",
        }
    }
}

/// A non-empty set of conntrack states, written as CSV (`new`,
/// `established,related`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Conntrack(BTreeSet<CtState>);

impl Conntrack {
    /// The states, in a fixed order.
    pub fn states(&self) -> impl Iterator<Item = CtState> + '_ {
        self.0.iter().copied()
    }
}

impl FromStr for Conntrack {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut states = BTreeSet::new();
        for part in s.split(',').map(str::trim) {
            let state = match part {
                "new" => CtState::New,
                "established" => CtState::Established,
                "related" => CtState::Related,
                other => {
                    return Err(Invalid::new(
                        "conntrack",
                        format!(
                            "unknown state {:?}: use new, established, related or a comma-separated combination",
                            other.chars().take(32).collect::<String>()
                        ),
                    ));
                }
            };
            states.insert(state);
        }
        Ok(Self(states))
    }
}

impl fmt::Display for Conntrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self.0.iter().map(|s| s.as_str()).collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for Conntrack {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Conntrack {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The rate of a `limit` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limit {
    /// Packets accepted per unit per source, at least 1.
    pub rate: u32,
    /// Per second or per minute.
    pub unit: LimitUnit,
}

/// The validated, enforceable content of a firewall rule (also when read
/// from JSON: deserialising checks it like [`FirewallSpec::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "FirewallSpecFields")]
pub struct FirewallSpec {
    /// The hook.
    pub chain: Chain,
    /// The transport.
    pub protocol: FwProtocol,
    /// Destination ports (inclusive), TCP and UDP only; `None` is all ports.
    pub ports: Option<(u16, u16)>,
    /// What to do.
    pub action: Action,
    /// The rate, exactly when `action` is `Limit`.
    pub limit: Option<Limit>,
    /// Conntrack states matched; `None` matches every state.
    pub conntrack: Option<Conntrack>,
}

/// The raw fields of a firewall-rule request, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallFields<'a> {
    /// `chain`, default input.
    pub chain: Option<Chain>,
    /// `protocol`.
    pub protocol: Option<FwProtocol>,
    /// `port_start`.
    pub port_start: Option<u16>,
    /// `port_end`, default `port_start`.
    pub port_end: Option<u16>,
    /// `action`.
    pub action: Option<Action>,
    /// `limit_rate`.
    pub limit_rate: Option<u32>,
    /// `limit_unit`.
    pub limit_unit: Option<LimitUnit>,
    /// `conntrack`, CSV.
    pub conntrack: Option<&'a str>,
}

/// The JSON shape of a [`FirewallSpec`], before its checks.
#[derive(Deserialize)]
struct FirewallSpecFields {
    chain: Chain,
    protocol: FwProtocol,
    ports: Option<(u16, u16)>,
    action: Action,
    limit: Option<Limit>,
    conntrack: Option<String>,
}

impl TryFrom<FirewallSpecFields> for FirewallSpec {
    type Error = Invalid;

    fn try_from(f: FirewallSpecFields) -> Result<Self, Self::Error> {
        Self::new(&FirewallFields {
            chain: Some(f.chain),
            protocol: Some(f.protocol),
            port_start: f.ports.map(|p| p.0),
            port_end: f.ports.map(|p| p.1),
            action: Some(f.action),
            limit_rate: f.limit.map(|l| l.rate),
            limit_unit: f.limit.map(|l| l.unit),
            conntrack: f.conntrack.as_deref(),
        })
    }
}

impl FirewallSpec {
    /// Checks the firewall rules of the reference and DESIGN §2.
    pub fn new(fields: &FirewallFields<'_>) -> Result<Self, Invalid> {
        let protocol = fields.protocol.unwrap_or(FwProtocol::Any);
        let action =
            fields.action.ok_or_else(|| Invalid::new("action", "is required: drop, accept, reject or limit"))?;
        let ports = match (fields.port_start, fields.port_end) {
            (None, None) => None,
            (None, Some(_)) => return Err(Invalid::new("port_start", "is required when port_end is given")),
            (Some(start), end) => {
                if !protocol.has_ports() {
                    return Err(Invalid::new(
                        "port_start",
                        format!("{} rules have no ports; use tcp or udp to match ports", protocol.as_str()),
                    ));
                }
                let end = end.unwrap_or(start);
                if start == 0 {
                    return Err(Invalid::new("port_start", "must be between 1 and 65535"));
                }
                if end == 0 {
                    return Err(Invalid::new("port_end", "must be between 1 and 65535"));
                }
                if end < start {
                    return Err(Invalid::new("port_end", format!("must not be below port_start ({start})")));
                }
                Some((start, end))
            }
        };
        let limit = match (action, fields.limit_rate, fields.limit_unit) {
            (Action::Limit, Some(rate), Some(unit)) => {
                if rate == 0 {
                    return Err(Invalid::new("limit_rate", "must be at least 1"));
                }
                Some(Limit { rate, unit })
            }
            (Action::Limit, None, _) => return Err(Invalid::new("limit_rate", "is required for action limit")),
            (Action::Limit, Some(_), None) => {
                return Err(Invalid::new("limit_unit", "is required for action limit: second or minute"));
            }
            (_, None, None) => None,
            (_, Some(_), _) => return Err(Invalid::new("limit_rate", "applies only to action limit")),
            (_, None, Some(_)) => return Err(Invalid::new("limit_unit", "applies only to action limit")),
        };
        let conntrack = match fields.conntrack.map(str::trim) {
            None | Some("") => None,
            Some(csv) => Some(csv.parse()?),
        };
        Ok(Self { chain: fields.chain.unwrap_or_default(), protocol, ports, action, limit, conntrack })
    }
}

/// What a system rule is for. The agent expands each role into the
/// nftables statements it needs (the control-plane role needs the server's
/// address, which only the agent knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum SystemRole {
    /// Accept everything on the loopback interface.
    Loopback,
    /// Accept packets of established and related connections.
    EstablishedRelated,
    /// Accept the agent's own connection to its control-plane server.
    ControlPlane,
}

impl SystemRole {
    /// Every role, in the order the rules are installed.
    pub const ALL: [Self; 3] = [Self::Loopback, Self::EstablishedRelated, Self::ControlPlane];

    /// The system rule's display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loopback => "System: allow loopback",
            Self::EstablishedRelated => "System: allow established and related",
            Self::ControlPlane => "System: allow the PAKKT control plane",
        }
    }

    /// How the rule shows in the API.
    pub fn spec(self) -> FirewallSpec {
        let base = FirewallSpec {
            chain: Chain::Input,
            protocol: FwProtocol::Any,
            ports: None,
            action: Action::Accept,
            limit: None,
            conntrack: None,
        };
        match self {
            Self::Loopback => base,
            Self::EstablishedRelated => FirewallSpec {
                conntrack: Some(Conntrack(BTreeSet::from([CtState::Established, CtState::Related]))),
                ..base
            },
            Self::ControlPlane => FirewallSpec { protocol: FwProtocol::Tcp, ..base },
        }
    }
}

/// A firewall rule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallRule {
    /// Its ID.
    pub id: FirewallRuleId,
    /// The agent it belongs to.
    pub agent_id: AgentId,
    /// Display name.
    pub name: String,
    /// What it enforces.
    pub spec: FirewallSpec,
    /// Set on the rules the server creates for every agent.
    pub system: Option<SystemRole>,
    /// Life-cycle status.
    pub status: EntryStatus,
    /// Why it failed, when it did.
    pub status_message: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Packets matched, as last reported by the agent.
    pub packets_total: u64,
    /// Bytes matched, as last reported by the agent.
    pub bytes_total: u64,
}

impl FirewallRule {
    /// A new user rule after validating its name.
    pub fn user(agent_id: AgentId, name: &str, spec: FirewallSpec, now: DateTime<Utc>) -> Result<Self, Invalid> {
        Ok(Self {
            id: FirewallRuleId::generate(),
            agent_id,
            name: validation::name("name", name)?,
            spec,
            system: None,
            status: EntryStatus::PendingAdd,
            status_message: None,
            created_at: now,
            packets_total: 0,
            bytes_total: 0,
        })
    }

    /// Where the rule sorts in its agent's list: system rules first, in
    /// install order, then the users' (DESIGN §2). Stores that sort in
    /// SQL store it with the rule.
    pub fn list_position(&self) -> u8 {
        self.system
            .and_then(|r| SystemRole::ALL.iter().position(|x| *x == r))
            .map_or(SystemRole::ALL.len() as u8, |p| p as u8)
    }

    /// Sorts rules into list order: by [`Self::list_position`], then
    /// creation, then ID.
    pub fn list_order(rules: &mut [Self]) {
        rules.sort_by_key(|r| (r.list_position(), r.created_at, r.id));
    }

    /// The system rule of `role` for a new agent.
    pub fn system(agent_id: AgentId, role: SystemRole, now: DateTime<Utc>) -> Self {
        Self {
            id: FirewallRuleId::generate(),
            agent_id,
            name: role.name().to_owned(),
            spec: role.spec(),
            system: Some(role),
            status: EntryStatus::PendingAdd,
            status_message: None,
            created_at: now,
            packets_total: 0,
            bytes_total: 0,
        }
    }

    /// Whether this is a system rule.
    pub fn is_system(&self) -> bool {
        self.system.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> FirewallFields<'static> {
        FirewallFields {
            protocol: Some(FwProtocol::Tcp),
            port_start: Some(6379),
            port_end: Some(6379),
            action: Some(Action::Drop),
            ..FirewallFields::default()
        }
    }

    #[test]
    fn the_reference_example_is_valid() {
        let spec = FirewallSpec::new(&fields()).expect("Block Redis");
        assert_eq!(spec.chain, Chain::Input);
        assert_eq!(spec.ports, Some((6379, 6379)));
    }

    #[test]
    fn port_end_defaults_to_start_and_must_follow_it() {
        let single = FirewallSpec::new(&FirewallFields { port_end: None, ..fields() }).expect("single");
        assert_eq!(single.ports, Some((6379, 6379)));
        let err = FirewallSpec::new(&FirewallFields { port_end: Some(10), ..fields() }).expect_err("reversed");
        assert_eq!(err.field, "port_end");
        let err = FirewallSpec::new(&FirewallFields { port_start: Some(0), ..fields() }).expect_err("zero");
        assert_eq!(err.field, "port_start");
        let err = FirewallSpec::new(&FirewallFields { port_start: None, ..fields() }).expect_err("end only");
        assert_eq!(err.field, "port_start");
    }

    #[test]
    fn ports_only_for_tcp_and_udp() {
        for protocol in [FwProtocol::Icmp, FwProtocol::Any] {
            let err = FirewallSpec::new(&FirewallFields { protocol: Some(protocol), ..fields() }).expect_err("ports");
            assert_eq!(err.field, "port_start");
        }
        let all = FirewallFields { protocol: Some(FwProtocol::Any), port_start: None, port_end: None, ..fields() };
        assert!(FirewallSpec::new(&all).is_ok());
    }

    #[test]
    fn action_is_required() {
        assert_eq!(FirewallSpec::new(&FirewallFields { action: None, ..fields() }).expect_err("none").field, "action");
    }

    #[test]
    fn limit_needs_rate_and_unit_and_nothing_else_takes_them() {
        let limit = FirewallFields {
            action: Some(Action::Limit),
            limit_rate: Some(5),
            limit_unit: Some(LimitUnit::Minute),
            conntrack: Some("new"),
            ..fields()
        };
        let spec = FirewallSpec::new(&limit).expect("limit");
        assert_eq!(spec.limit, Some(Limit { rate: 5, unit: LimitUnit::Minute }));
        assert_eq!(
            FirewallSpec::new(&FirewallFields { limit_rate: None, ..limit.clone() }).expect_err("no rate").field,
            "limit_rate"
        );
        assert_eq!(
            FirewallSpec::new(&FirewallFields { limit_unit: None, ..limit.clone() }).expect_err("no unit").field,
            "limit_unit"
        );
        assert_eq!(
            FirewallSpec::new(&FirewallFields { limit_rate: Some(0), ..limit.clone() }).expect_err("zero").field,
            "limit_rate"
        );
        assert_eq!(
            FirewallSpec::new(&FirewallFields { limit_rate: Some(5), ..fields() }).expect_err("drop with rate").field,
            "limit_rate"
        );
        assert_eq!(
            FirewallSpec::new(&FirewallFields { limit_unit: Some(LimitUnit::Second), ..fields() })
                .expect_err("drop with unit")
                .field,
            "limit_unit"
        );
    }

    #[test]
    fn conntrack_is_csv_of_known_states() {
        let ct: Conntrack = "established, related,new".parse().expect("csv");
        assert_eq!(ct.to_string(), "new,established,related");
        assert_eq!("invalid".parse::<Conntrack>().expect_err("unknown").field, "conntrack");
        assert!("new,".parse::<Conntrack>().is_err());
        let spec = FirewallSpec::new(&FirewallFields { conntrack: Some(" "), ..fields() }).expect("blank");
        assert_eq!(spec.conntrack, None);
    }

    #[test]
    fn specs_read_from_json_are_checked() {
        let spec = FirewallSpec::new(&fields()).expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(serde_json::from_value::<FirewallSpec>(json.clone()).expect("round trip"), spec);
        let mut bad = json;
        bad["limit"] = serde_json::json!({"rate": 5, "unit": "minute"});
        assert!(serde_json::from_value::<FirewallSpec>(bad).is_err(), "a limit on a drop rule is refused");
        for role in SystemRole::ALL {
            let json = serde_json::to_value(role.spec()).expect("json");
            assert_eq!(serde_json::from_value::<FirewallSpec>(json).expect("system spec"), role.spec());
        }
    }

    #[test]
    fn system_rules_accept() {
        for role in SystemRole::ALL {
            let rule = FirewallRule::system(AgentId::generate(), role, Utc::now());
            assert!(rule.is_system());
            assert_eq!(rule.spec.action, Action::Accept);
        }
        assert_eq!(serde_json::to_string(&Chain::Forward).expect("json"), "\"forward\"");
        assert!(serde_json::from_str::<Action>("\"log\"").is_err());
    }
}
