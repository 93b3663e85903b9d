//! How a firewall rule becomes nftables rules, and how it is read back.
//!
//! Pure: no `nft` runs here. Every nftables rule PAKKT writes carries a
//! comment (at most 128 bytes, nftables' limit) that names the API rule it
//! belongs to and restates its spec, so a restarted agent rebuilds exactly
//! the [`DesiredFirewallRule`]s in force from `nft -j list table`:
//!
//! ```text
//! pakkt <ID> #<seq> <chain> <protocol> <ports|*> <action>[/<rate>/<unit>] <conntrack|*> [sys:<role>]
//! ```
//!
//! `seq` grows with every rule added, so sorting by it gives the API order
//! even across chains. All nftables rules of one API rule share its comment.

use std::borrow::Cow;

use nftables::expr::{CT, Elem, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Range};
use nftables::schema::Rule;
use nftables::stmt::{AnonymousCounter, Counter, Limit, Match, Meter, Operator, Reject, RejectType, Statement};
use nftables::types::{NfFamily, RejectCode};
use pakkt_core::firewall::{Action, Chain, FirewallFields, FirewallSpec, FwProtocol, LimitUnit, SystemRole};
use pakkt_core::id::FirewallRuleId;
use pakkt_core::sync::DesiredFirewallRule;

/// The table PAKKT owns (family `inet`).
pub const TABLE: &str = "pakkt";
/// The priority of PAKKT's base chains: `filter - 10`, after conntrack
/// (-200) and before the usual `filter` (0) tables of other firewalls.
pub const PRIORITY: i32 = -10;
/// The named set holding the control plane's IPv4 addresses.
pub const CONTROL_PLANE_V4: &str = "control_plane_v4";
/// The named set holding the control plane's IPv6 addresses.
pub const CONTROL_PLANE_V6: &str = "control_plane_v6";
/// nftables' limit on a rule comment.
pub const MAX_COMMENT: usize = 128;
/// How long a `limit` rule remembers an idle source, in seconds.
const METER_TIMEOUT: u32 = 120;

/// What PAKKT's comment on an nftables rule says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Its place in the API order.
    pub seq: u32,
    /// The API rule.
    pub rule: DesiredFirewallRule,
}

/// The comment PAKKT writes on every nftables rule of `rule`.
pub fn comment(rule: &DesiredFirewallRule, seq: u32) -> String {
    let spec = &rule.spec;
    let ports = spec.ports.map_or_else(|| "*".to_owned(), |(a, b)| format!("{a}-{b}"));
    let action = match spec.limit {
        Some(limit) if spec.action == Action::Limit => {
            format!("limit/{}/{}", limit.rate, limit.unit.as_str())
        }
        _ => spec.action.as_str().to_owned(),
    };
    let conntrack = spec.conntrack.as_ref().map_or_else(|| "*".to_owned(), ToString::to_string);
    let mut text = format!(
        "pakkt {} #{seq} {} {} {ports} {action} {conntrack}",
        rule.id,
        spec.chain.as_str(),
        spec.protocol.as_str()
    );
    if let Some(role) = rule.system {
        text.push_str(" sys:");
        text.push_str(role_name(role));
    }
    text
}

fn role_name(role: SystemRole) -> &'static str {
    match role {
        SystemRole::Loopback => "loopback",
        SystemRole::EstablishedRelated => "established_related",
        SystemRole::ControlPlane => "control_plane",
    }
}

/// Reads a comment [`comment`] wrote; `None` for anything else.
pub fn parse_comment(text: &str) -> Option<Tag> {
    let mut words = text.split(' ');
    if words.next()? != "pakkt" {
        return None;
    }
    let id: FirewallRuleId = words.next()?.parse().ok()?;
    let seq: u32 = words.next()?.strip_prefix('#')?.parse().ok()?;
    let chain = match words.next()? {
        "input" => Chain::Input,
        "forward" => Chain::Forward,
        "output" => Chain::Output,
        _ => return None,
    };
    let protocol = match words.next()? {
        "tcp" => FwProtocol::Tcp,
        "udp" => FwProtocol::Udp,
        "icmp" => FwProtocol::Icmp,
        "any" => FwProtocol::Any,
        _ => return None,
    };
    let (port_start, port_end) = match words.next()? {
        "*" => (None, None),
        range => {
            let (a, b) = range.split_once('-')?;
            (Some(a.parse().ok()?), Some(b.parse().ok()?))
        }
    };
    let mut action_words = words.next()?.split('/');
    let (action, limit_rate, limit_unit) = match (action_words.next()?, action_words.next(), action_words.next()) {
        ("drop", None, None) => (Action::Drop, None, None),
        ("accept", None, None) => (Action::Accept, None, None),
        ("reject", None, None) => (Action::Reject, None, None),
        ("limit", Some(rate), Some(unit)) => {
            let unit = match unit {
                "second" => LimitUnit::Second,
                "minute" => LimitUnit::Minute,
                _ => return None,
            };
            (Action::Limit, Some(rate.parse().ok()?), Some(unit))
        }
        _ => return None,
    };
    let conntrack = match words.next()? {
        "*" => None,
        csv => Some(csv),
    };
    let system = match words.next() {
        None => None,
        Some(word) => Some(match word.strip_prefix("sys:")? {
            "loopback" => SystemRole::Loopback,
            "established_related" => SystemRole::EstablishedRelated,
            "control_plane" => SystemRole::ControlPlane,
            _ => return None,
        }),
    };
    if words.next().is_some() {
        return None;
    }
    let spec = FirewallSpec::new(&FirewallFields {
        chain: Some(chain),
        protocol: Some(protocol),
        port_start,
        port_end,
        action: Some(action),
        limit_rate,
        limit_unit,
        conntrack,
    })
    .ok()?;
    Some(Tag { seq, rule: DesiredFirewallRule { id, system, spec } })
}

fn string(text: &'static str) -> Expression<'static> {
    Expression::String(Cow::Borrowed(text))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: Cow::Borrowed(protocol),
        field: Cow::Borrowed(field),
    })))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn matches(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    matches(left, Operator::EQ, right)
}

fn set_ref(name: &'static str) -> Expression<'static> {
    Expression::String(Cow::Owned(format!("@{name}")))
}

fn counter(packets: u64, bytes: u64) -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(Some(AnonymousCounter {
        packets: Some(usize::try_from(packets).unwrap_or(usize::MAX)),
        bytes: Some(usize::try_from(bytes).unwrap_or(usize::MAX)),
    })))
}

fn ports(range: (u16, u16)) -> Expression<'static> {
    if range.0 == range.1 {
        Expression::Number(u32::from(range.0))
    } else {
        Expression::Range(Box::new(Range {
            range: [Expression::Number(range.0.into()), Expression::Number(range.1.into())],
        }))
    }
}

/// The matches of a user rule: protocol, ports, conntrack states.
fn user_matches(spec: &FirewallSpec) -> Vec<Statement<'static>> {
    let mut out = Vec::new();
    match spec.protocol {
        FwProtocol::Tcp => out.push(eq(meta(MetaKey::L4proto), string("tcp"))),
        FwProtocol::Udp => out.push(eq(meta(MetaKey::L4proto), string("udp"))),
        FwProtocol::Icmp => out.push(eq(
            meta(MetaKey::L4proto),
            Expression::Named(NamedExpression::Set(vec![
                nftables::expr::SetItem::Element(string("icmp")),
                nftables::expr::SetItem::Element(string("ipv6-icmp")),
            ])),
        )),
        FwProtocol::Any => {}
    }
    if let Some(range) = spec.ports {
        let proto = if spec.protocol == FwProtocol::Udp { "udp" } else { "tcp" };
        out.push(eq(payload(proto, "dport"), ports(range)));
    }
    if let Some(conntrack) = &spec.conntrack {
        let states = conntrack.states().map(|s| string(s.as_str())).collect();
        out.push(matches(
            Expression::Named(NamedExpression::CT(CT { key: Cow::Borrowed("state"), family: None, dir: None })),
            Operator::IN,
            Expression::List(states),
        ));
    }
    out
}

/// One nftables rule: which chain, and its statements.
pub type Body = (Chain, Vec<Statement<'static>>);

/// The statements of `rule`, each list one nftables rule in chain order,
/// without the counter and comment that [`rules`] adds.
///
/// - `drop`/`accept`: one rule, `<matches> drop|accept`.
/// - `reject`: TCP rules answer with a TCP reset, UDP and ICMP rules with
///   `icmpx port-unreachable`; an `any` rule is two rules, a TCP reset for
///   TCP and the ICMP error for the rest.
/// - `limit`: three rules, a meter per address family dropping what a
///   source sends over the rate, then `<matches> accept` for the rest.
/// - `limit` uses a burst of one unit's worth (`rate` packets), so a
///   source gets exactly its rate per unit.
/// - System rules expand by role (see `docs/engine.md`); the control-plane
///   role includes IPv6 neighbour discovery, which the link needs.
pub fn bodies(rule: &DesiredFirewallRule, seq: u32, control_plane_port: u16) -> Vec<Body> {
    if let Some(role) = rule.system {
        return system_bodies(role, control_plane_port);
    }
    let spec = &rule.spec;
    let chain = spec.chain;
    let base = user_matches(spec);
    let with = |extra: Vec<Statement<'static>>| -> Vec<Statement<'static>> {
        let mut all = base.clone();
        all.extend(extra);
        all
    };
    match spec.action {
        Action::Drop => vec![(chain, with(vec![Statement::Drop(None)]))],
        Action::Accept => vec![(chain, with(vec![Statement::Accept(None)]))],
        Action::Reject => {
            let icmpx = Statement::Reject(Some(Reject::new(Some(RejectType::ICMPX), Some(RejectCode::PortUnreach))));
            let reset = Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None)));
            match spec.protocol {
                FwProtocol::Tcp => vec![(chain, with(vec![reset]))],
                FwProtocol::Udp | FwProtocol::Icmp => vec![(chain, with(vec![icmpx]))],
                FwProtocol::Any => vec![
                    (chain, with(vec![eq(meta(MetaKey::L4proto), string("tcp")), reset])),
                    (chain, with(vec![icmpx])),
                ],
            }
        }
        Action::Limit => {
            let Some(limit) = spec.limit else { return vec![(chain, with(vec![Statement::Accept(None)]))] };
            let per = limit.unit.as_str();
            let meter = |family: &'static str, field: &'static str| -> Statement<'static> {
                Statement::Meter(Meter {
                    name: Cow::Owned(format!("{}_{}_{seq}", if family == "ip" { "l4" } else { "l6" }, rule.id)),
                    key: Expression::Named(NamedExpression::Elem(Elem {
                        val: Box::new(payload(family, field)),
                        timeout: Some(METER_TIMEOUT),
                        expires: None,
                        comment: None,
                        counter: None,
                    })),
                    stmt: Box::new(Statement::Limit(Limit {
                        rate: limit.rate,
                        rate_unit: None,
                        per: Some(Cow::Borrowed(per)),
                        burst: Some(limit.rate),
                        burst_unit: Some(Cow::Borrowed("packets")),
                        inv: Some(true),
                    })),
                })
            };
            vec![
                (chain, with(vec![meter("ip", "saddr"), Statement::Drop(None)])),
                (chain, with(vec![meter("ip6", "saddr"), Statement::Drop(None)])),
                (chain, with(vec![Statement::Accept(None)])),
            ]
        }
    }
}

fn system_bodies(role: SystemRole, port: u16) -> Vec<Body> {
    match role {
        SystemRole::Loopback => vec![
            (Chain::Input, vec![eq(meta(MetaKey::Iifname), string("lo")), Statement::Accept(None)]),
            (Chain::Output, vec![eq(meta(MetaKey::Oifname), string("lo")), Statement::Accept(None)]),
        ],
        SystemRole::EstablishedRelated => [Chain::Input, Chain::Forward, Chain::Output]
            .into_iter()
            .map(|chain| {
                let state =
                    Expression::Named(NamedExpression::CT(CT { key: Cow::Borrowed("state"), family: None, dir: None }));
                (
                    chain,
                    vec![
                        matches(state, Operator::IN, Expression::List(vec![string("established"), string("related")])),
                        Statement::Accept(None),
                    ],
                )
            })
            .collect(),
        SystemRole::ControlPlane => {
            let port = Expression::Number(u32::from(port));
            let nd = Expression::Named(NamedExpression::Set(
                ["nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert"]
                    .into_iter()
                    .map(|t| nftables::expr::SetItem::Element(string(t)))
                    .collect(),
            ));
            // IPv6 neighbour discovery first: without it no IPv6 packet,
            // the server's included, reaches its next hop.
            let mut out: Vec<Body> = [Chain::Input, Chain::Output]
                .into_iter()
                .map(|chain| (chain, vec![eq(payload("icmpv6", "type"), nd.clone()), Statement::Accept(None)]))
                .collect();
            for (chain, addr, tcp_port) in [(Chain::Input, "saddr", "sport"), (Chain::Output, "daddr", "dport")] {
                for (family, set) in [("ip", CONTROL_PLANE_V4), ("ip6", CONTROL_PLANE_V6)] {
                    out.push((
                        chain,
                        vec![
                            eq(meta(MetaKey::L4proto), string("tcp")),
                            eq(payload(family, addr), set_ref(set)),
                            eq(payload("tcp", tcp_port), port.clone()),
                            Statement::Accept(None),
                        ],
                    ));
                }
            }
            out
        }
    }
}

/// The nftables rules of `rule` at `seq`, each with a counter (the first
/// starting at `packets`/`bytes`, so a moved rule keeps its totals) and
/// PAKKT's comment.
pub fn rules(
    rule: &DesiredFirewallRule,
    seq: u32,
    control_plane_port: u16,
    packets: u64,
    bytes: u64,
) -> Vec<Rule<'static>> {
    let comment = comment(rule, seq);
    bodies(rule, seq, control_plane_port)
        .into_iter()
        .enumerate()
        .map(|(i, (chain, mut statements))| {
            let verdict = statements.pop();
            let start = if i == 0 { (packets, bytes) } else { (0, 0) };
            statements.push(counter(start.0, start.1));
            statements.extend(verdict);
            Rule {
                family: NfFamily::INet,
                table: Cow::Borrowed(TABLE),
                chain: Cow::Borrowed(chain.as_str()),
                expr: Cow::Owned(statements),
                handle: None,
                index: None,
                comment: Some(Cow::Owned(comment.clone())),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pakkt_core::firewall::FirewallFields;

    fn rule(fields: &FirewallFields<'_>, system: Option<SystemRole>) -> DesiredFirewallRule {
        DesiredFirewallRule { id: FirewallRuleId::generate(), system, spec: FirewallSpec::new(fields).expect("spec") }
    }

    #[test]
    fn comments_round_trip_and_fit() {
        let widest = rule(
            &FirewallFields {
                chain: Some(Chain::Forward),
                protocol: Some(FwProtocol::Icmp),
                action: Some(Action::Limit),
                limit_rate: Some(u32::MAX),
                limit_unit: Some(LimitUnit::Minute),
                conntrack: Some("new,established,related"),
                ..FirewallFields::default()
            },
            None,
        );
        let ports = rule(
            &FirewallFields {
                protocol: Some(FwProtocol::Udp),
                port_start: Some(10000),
                port_end: Some(65535),
                action: Some(Action::Limit),
                limit_rate: Some(u32::MAX),
                limit_unit: Some(LimitUnit::Second),
                conntrack: Some("new,established,related"),
                ..FirewallFields::default()
            },
            None,
        );
        let mut all = vec![widest, ports];
        for role in SystemRole::ALL {
            all.push(DesiredFirewallRule { id: FirewallRuleId::generate(), system: Some(role), spec: role.spec() });
        }
        for r in all {
            let text = comment(&r, u32::MAX);
            assert!(text.len() <= MAX_COMMENT, "{} bytes: {text}", text.len());
            assert_eq!(parse_comment(&text), Some(Tag { seq: u32::MAX, rule: r }), "{text}");
        }
    }

    #[test]
    fn foreign_comments_are_not_ours() {
        let id = FirewallRuleId::generate();
        for text in [
            "",
            "pakkt",
            "hello world",
            &format!("pakkt {id} #1 input tcp 80-79 drop *"),
            &format!("pakkt {id} #x input tcp * drop *"),
            &format!("pakkt {id} #1 input any 80-80 drop *"),
            &format!("pakkt {id} #1 input tcp 80-80 limit/0/second *"),
            &format!("pakkt {id} #1 input tcp 80-80 drop * sys:nope"),
            &format!("pakkt {id} #1 input tcp 80-80 drop * sys:loopback extra"),
        ] {
            assert_eq!(parse_comment(text), None, "{text:?}");
        }
        assert!(parse_comment(&format!("pakkt {id} #1 input tcp * drop *")).is_some(), "tcp on every port");
    }

    #[test]
    fn each_action_maps_to_its_statements() {
        let drop = rule(
            &FirewallFields {
                protocol: Some(FwProtocol::Tcp),
                port_start: Some(6379),
                action: Some(Action::Drop),
                ..FirewallFields::default()
            },
            None,
        );
        let built = rules(&drop, 4, 8080, 10, 600);
        assert_eq!(built.len(), 1);
        let json = serde_json::to_string(&built[0]).expect("json");
        assert!(json.contains(r#""right":"tcp""#) && json.contains(r#""right":6379"#), "{json}");
        assert!(json.contains(r#""packets":10"#) && json.contains(r#"{"drop":null}"#), "{json}");

        let limit = rule(
            &FirewallFields {
                action: Some(Action::Limit),
                limit_rate: Some(5),
                limit_unit: Some(LimitUnit::Second),
                ..FirewallFields::default()
            },
            None,
        );
        assert_eq!(rules(&limit, 1, 8080, 0, 0).len(), 3, "a meter per family, then accept");
        let reject_any = rule(&FirewallFields { action: Some(Action::Reject), ..FirewallFields::default() }, None);
        assert_eq!(rules(&reject_any, 1, 8080, 0, 0).len(), 2, "a TCP reset, then an ICMP error");
        let cp = DesiredFirewallRule {
            id: FirewallRuleId::generate(),
            system: Some(SystemRole::ControlPlane),
            spec: SystemRole::ControlPlane.spec(),
        };
        let built = rules(&cp, 3, 8443, 0, 0);
        assert_eq!(built.len(), 6, "neighbour discovery, then both families, both directions");
        assert!(serde_json::to_string(&built).expect("json").contains("@control_plane_v6"));
    }
}
