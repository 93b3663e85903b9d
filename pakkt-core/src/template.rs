//! The marketplace: protection templates PAKKT has validated, each a ready
//! engine rule (`xdp`) or firewall rule (`nftables`) for a common service.
//!
//! Limits are chosen to leave honest traffic untouched with room to spare
//! (a FiveM client sends well under 100 packets a second; a Minecraft
//! player under 50) while cutting a single-source flood by orders of
//! magnitude. `allow_only` templates lock a service to the whitelist and
//! carry risk `high`: applied before the whitelist is filled, they cut every
//! client off.
//!
//! # `protect` templates (`tpl_<game>_protect`)
//! A game's shield limits each source, which stops one flooding address but
//! not a flood from millions of spoofed ones. Its `protect` variant (rule
//! type 3, DESIGN §4) covers the same ports and splits the traffic in two:
//! - players the server has answered in the last 10 minutes are *verified*
//!   and pass up to `max_pps` packets a second each, six (voice) to twenty
//!   times what the client sends, so a busy player is never cut;
//! - everyone else shares `max_port_pps`, a budget per destination port
//!   sized for players joining and server-browser queries (a few packets
//!   each), well below what the port's players send together. Under a
//!   spoofed flood half of it is kept for a source's second packet within
//!   5 s, which a real player sends and a one-off spoofed address does not;
//!   the server's answer then verifies the player.
//!
//! What a port's players send together is players × a client's rate: FiveM
//! clients send under 100 packets a second, CS2 clients 64 to 128 (the
//! server's tick rate), a TeamSpeak talker 50 (one voice frame each 20 ms);
//! a 64-player CS2 server takes about 8,000 against a budget of 1,000.
//!
//! A shield and its protect variant cover the same ports, so an agent holds
//! one or the other (the second is a 409). Players are verified by the
//! replies the engine sees leaving the protected interface: a host that
//! answers through another interface verifies nobody, and its players then
//! share the budget.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::firewall::{Action, Chain, Conntrack, FirewallSpec, FwProtocol, Limit, LimitUnit};
use crate::rule::{Protocol, RateLimits, RuleSpec, RuleType};

/// A marketplace category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
pub enum Category {
    /// Game servers.
    Gaming,
    /// Web servers.
    Web,
    /// Host services: SSH, DNS, NTP, ICMP.
    Infrastructure,
    /// Databases and caches.
    Database,
}

impl Category {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gaming => "Gaming",
            Self::Web => "Web",
            Self::Infrastructure => "Infrastructure",
            Self::Database => "Database",
        }
    }
}

impl FromStr for Category {
    type Err = crate::metrics::BadQueryValue;

    /// Case-insensitive: `gaming` and `Gaming` both name Gaming.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Gaming, Self::Web, Self::Infrastructure, Self::Database]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| crate::metrics::BadQueryValue {
                field: "category",
                expected: "Gaming, Web, Infrastructure, Database",
                got: s.chars().take(32).collect(),
            })
    }
}

/// How likely a template is to hurt honest traffic if misapplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum Risk {
    /// Generous limits; safe to apply blind.
    Low,
    /// Tight limits or a blocked port some hosts use.
    Medium,
    /// Locks a service to the whitelist.
    High,
}

/// What applying a template creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateRule {
    /// A PAKKT Engine rule.
    Engine(RuleSpec),
    /// An nftables firewall rule.
    Firewall(FirewallSpec),
}

/// A marketplace template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Slug ID (`tpl_fivem_shield`).
    pub id: &'static str,
    /// Title, also the name of the rule it creates.
    pub title: &'static str,
    /// One sentence on what it protects.
    pub description: &'static str,
    /// Category.
    pub category: Category,
    /// Risk.
    pub risk: Risk,
    /// The rule it creates.
    pub rule: TemplateRule,
}

struct Xdp {
    id: &'static str,
    title: &'static str,
    description: &'static str,
    category: Category,
    risk: Risk,
    protocol: Protocol,
    ports: (u16, u16),
    rule_type: RuleType,
    limits: RateLimits,
}

const fn pps(max_pps: u32) -> RateLimits {
    RateLimits { max_pps, max_port_pps: 0, min_pkt_size: 0, max_pkt_size: 0 }
}

const NO_LIMITS: RateLimits = pps(0);

/// A `protect` rule's limits: `per_player` packets a second for each
/// verified source, `new_players` a second per port for the others.
const fn protect(per_player: u32, new_players: u32) -> RateLimits {
    RateLimits { max_pps: per_player, max_port_pps: new_players, min_pkt_size: 0, max_pkt_size: 0 }
}

#[allow(clippy::too_many_lines)] // one entry per template reads best as data
fn xdp_templates() -> Vec<Xdp> {
    use Category::{Database, Gaming, Infrastructure, Web};
    use Protocol::{Icmp, Tcp, Udp};
    use RuleType::{AllowOnly, Block, Protect, RateLimit};
    vec![
        Xdp {
            id: "tpl_fivem_shield",
            title: "FiveM Shield",
            description: "UDP anti-flood protection for FiveM",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (30120, 30130),
            rule_type: RateLimit,
            limits: pps(5000),
        },
        Xdp {
            id: "tpl_fivem_tcp",
            title: "FiveM TCP Guard",
            description: "Rate-limits FiveM's TCP (HTTP and connection) endpoint per source",
            category: Gaming,
            risk: Risk::Low,
            protocol: Tcp,
            ports: (30120, 30120),
            rule_type: RateLimit,
            limits: pps(500),
        },
        Xdp {
            id: "tpl_minecraft_java",
            title: "Minecraft Java Shield",
            description: "Per-source TCP rate limit for Minecraft Java Edition",
            category: Gaming,
            risk: Risk::Low,
            protocol: Tcp,
            ports: (25565, 25565),
            rule_type: RateLimit,
            limits: pps(1000),
        },
        Xdp {
            id: "tpl_minecraft_bedrock",
            title: "Minecraft Bedrock Shield",
            description: "UDP anti-flood protection for Minecraft Bedrock Edition (RakNet)",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (19132, 19133),
            rule_type: RateLimit,
            limits: RateLimits { max_pps: 2000, max_port_pps: 0, min_pkt_size: 0, max_pkt_size: 1500 },
        },
        Xdp {
            id: "tpl_cs2_shield",
            title: "CS2 Shield",
            description: "UDP anti-flood protection for Counter-Strike 2 dedicated servers",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (27015, 27015),
            rule_type: RateLimit,
            limits: pps(1500),
        },
        Xdp {
            id: "tpl_rust_shield",
            title: "Rust Shield",
            description: "UDP anti-flood protection for Rust game servers",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (28015, 28016),
            rule_type: RateLimit,
            limits: pps(1500),
        },
        Xdp {
            id: "tpl_ark_shield",
            title: "ARK Shield",
            description: "UDP anti-flood protection for ARK: Survival game and raw UDP ports",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (7777, 7778),
            rule_type: RateLimit,
            limits: pps(2000),
        },
        Xdp {
            id: "tpl_teamspeak_voice",
            title: "TeamSpeak Voice Guard",
            description: "Per-source UDP limit for TeamSpeak 3 voice",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (9987, 9987),
            rule_type: RateLimit,
            limits: pps(300),
        },
        Xdp {
            id: "tpl_fivem_protect",
            title: "FiveM Protect",
            description: "Keeps FiveM (UDP 30120–30130) reachable in a spoofed flood: players the server answered pass \
                          up to 2,000 packets/s each (a client sends under 100); new players share 5,000 packets/s per \
                          port to get in",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (30120, 30130),
            rule_type: Protect,
            limits: protect(2000, 5000),
        },
        Xdp {
            id: "tpl_minecraft_bedrock_protect",
            title: "Minecraft Bedrock Protect",
            description: "Keeps Minecraft Bedrock (UDP 19132–19133) reachable in a spoofed flood: players the server \
                          answered pass up to 1,000 packets/s each; new players and server-list pings share 2,000 \
                          packets/s per port; packets over 1500 bytes drop",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (19132, 19133),
            rule_type: Protect,
            limits: RateLimits { max_pps: 1000, max_port_pps: 2000, min_pkt_size: 0, max_pkt_size: 1500 },
        },
        Xdp {
            id: "tpl_cs2_protect",
            title: "CS2 Protect",
            description: "Keeps a Counter-Strike 2 server (UDP 27015) reachable in a spoofed flood: players the server \
                          answered pass up to 1,500 packets/s each (a client sends 64 to 128); new players and server \
                          browser queries share 1,000 packets/s",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (27015, 27015),
            rule_type: Protect,
            limits: protect(1500, 1000),
        },
        Xdp {
            id: "tpl_rust_protect",
            title: "Rust Protect",
            description: "Keeps a Rust server (UDP 28015–28016) reachable in a spoofed flood: players the server \
                          answered pass up to 1,500 packets/s each; new players and server browser queries share \
                          2,000 packets/s per port, enough for a wipe-day rush",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (28015, 28016),
            rule_type: Protect,
            limits: protect(1500, 2000),
        },
        Xdp {
            id: "tpl_ark_protect",
            title: "ARK Protect",
            description: "Keeps an ARK: Survival server (UDP 7777–7778) reachable in a spoofed flood: players the \
                          server answered pass up to 2,000 packets/s each; new players share 1,000 packets/s per port",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (7777, 7778),
            rule_type: Protect,
            limits: protect(2000, 1000),
        },
        Xdp {
            id: "tpl_valheim_protect",
            title: "Valheim Protect",
            description: "Keeps a Valheim server (UDP 2456–2458) reachable in a spoofed flood: players the server \
                          answered pass up to 1,000 packets/s each; new players and Steam queries share 300 \
                          packets/s per port, plenty for a 10-player world",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (2456, 2458),
            rule_type: Protect,
            limits: protect(1000, 300),
        },
        Xdp {
            id: "tpl_palworld_protect",
            title: "Palworld Protect",
            description: "Keeps a Palworld server (UDP 8211) reachable in a spoofed flood: players the server answered \
                          pass up to 1,000 packets/s each; new players share 500 packets/s, a fraction of what 32 \
                          players send together",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (8211, 8211),
            rule_type: Protect,
            limits: protect(1000, 500),
        },
        Xdp {
            id: "tpl_dayz_protect",
            title: "DayZ Protect",
            description: "Keeps a DayZ server (UDP 2302–2305) reachable in a spoofed flood: players the server \
                          answered pass up to 1,000 packets/s each; new players and server browser queries share \
                          1,000 packets/s per port",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (2302, 2305),
            rule_type: Protect,
            limits: protect(1000, 1000),
        },
        Xdp {
            id: "tpl_teamspeak_protect",
            title: "TeamSpeak Voice Protect",
            description: "Keeps TeamSpeak 3 voice (UDP 9987) reachable in a spoofed flood: users the server answered \
                          pass up to 300 packets/s each (a talker sends 50); new users share 500 packets/s to connect",
            category: Gaming,
            risk: Risk::Low,
            protocol: Udp,
            ports: (9987, 9987),
            rule_type: Protect,
            limits: protect(300, 500),
        },
        Xdp {
            id: "tpl_http_flood",
            title: "HTTP Flood Guard",
            description: "Per-source TCP rate limit on port 80",
            category: Web,
            risk: Risk::Low,
            protocol: Tcp,
            ports: (80, 80),
            rule_type: RateLimit,
            limits: pps(1000),
        },
        Xdp {
            id: "tpl_https_flood",
            title: "HTTPS Flood Guard",
            description: "Per-source TCP rate limit on port 443",
            category: Web,
            risk: Risk::Low,
            protocol: Tcp,
            ports: (443, 443),
            rule_type: RateLimit,
            limits: pps(1000),
        },
        Xdp {
            id: "tpl_http3_quic",
            title: "HTTP/3 QUIC Guard",
            description: "Per-source UDP rate limit on port 443 for QUIC",
            category: Web,
            risk: Risk::Medium,
            protocol: Udp,
            ports: (443, 443),
            rule_type: RateLimit,
            limits: RateLimits { max_pps: 1000, max_port_pps: 0, min_pkt_size: 0, max_pkt_size: 1500 },
        },
        Xdp {
            id: "tpl_ssh_rate_limit",
            title: "SSH Rate Limit",
            description: "Per-source packet limit on SSH, far above an interactive session",
            category: Infrastructure,
            risk: Risk::Low,
            protocol: Tcp,
            ports: (22, 22),
            rule_type: RateLimit,
            limits: pps(500),
        },
        Xdp {
            id: "tpl_dns_guard",
            title: "DNS Guard",
            description: "Caps query size and rate per source on an authoritative DNS server",
            category: Infrastructure,
            risk: Risk::Medium,
            protocol: Udp,
            ports: (53, 53),
            rule_type: RateLimit,
            limits: RateLimits { max_pps: 200, max_port_pps: 0, min_pkt_size: 0, max_pkt_size: 512 },
        },
        Xdp {
            id: "tpl_ntp_guard",
            title: "NTP Guard",
            description: "Lets plain NTP requests through and drops oversized (monlist-style) packets",
            category: Infrastructure,
            risk: Risk::Low,
            protocol: Udp,
            ports: (123, 123),
            rule_type: RateLimit,
            limits: RateLimits { max_pps: 20, max_port_pps: 0, min_pkt_size: 0, max_pkt_size: 256 },
        },
        Xdp {
            id: "tpl_icmp_flood",
            title: "ICMP Flood Guard",
            description: "Limits ping and other ICMP to 20 packets a second per source",
            category: Infrastructure,
            risk: Risk::Low,
            protocol: Icmp,
            ports: (0, 0),
            rule_type: RateLimit,
            limits: pps(20),
        },
        Xdp {
            id: "tpl_memcached_block",
            title: "Memcached UDP Block",
            description: "Drops UDP to memcached, an amplification vector no client needs",
            category: Database,
            risk: Risk::Low,
            protocol: Udp,
            ports: (11211, 11211),
            rule_type: Block,
            limits: NO_LIMITS,
        },
        Xdp {
            id: "tpl_mysql_lockdown",
            title: "MySQL Lockdown",
            description: "Only whitelisted sources reach MySQL/MariaDB",
            category: Database,
            risk: Risk::High,
            protocol: Tcp,
            ports: (3306, 3306),
            rule_type: AllowOnly,
            limits: NO_LIMITS,
        },
        Xdp {
            id: "tpl_postgresql_lockdown",
            title: "PostgreSQL Lockdown",
            description: "Only whitelisted sources reach PostgreSQL",
            category: Database,
            risk: Risk::High,
            protocol: Tcp,
            ports: (5432, 5432),
            rule_type: AllowOnly,
            limits: NO_LIMITS,
        },
        Xdp {
            id: "tpl_mongodb_lockdown",
            title: "MongoDB Lockdown",
            description: "Only whitelisted sources reach MongoDB",
            category: Database,
            risk: Risk::High,
            protocol: Tcp,
            ports: (27017, 27017),
            rule_type: AllowOnly,
            limits: NO_LIMITS,
        },
    ]
}

fn nft_templates() -> Vec<Template> {
    let spec = |protocol, port: u16, action, limit: Option<Limit>, conntrack: Option<&str>, chain| FirewallSpec {
        chain,
        protocol,
        ports: Some((port, port)),
        action,
        limit,
        conntrack: conntrack.and_then(|c| c.parse::<Conntrack>().ok()),
    };
    vec![
        Template {
            id: "tpl_nft_ssh_bruteforce",
            title: "Anti brute-force SSH",
            description: "Accepts 5 new SSH connections a minute per source and drops the rest",
            category: Category::Infrastructure,
            risk: Risk::Low,
            rule: TemplateRule::Firewall(spec(
                FwProtocol::Tcp,
                22,
                Action::Limit,
                Some(Limit { rate: 5, unit: LimitUnit::Minute }),
                Some("new"),
                Chain::Input,
            )),
        },
        Template {
            id: "tpl_nft_redis_block",
            title: "Block Redis",
            description: "Drops outside connections to Redis, which must never face the Internet",
            category: Category::Database,
            risk: Risk::Medium,
            rule: TemplateRule::Firewall(spec(FwProtocol::Tcp, 6379, Action::Drop, None, None, Chain::Input)),
        },
        Template {
            id: "tpl_nft_http_conn_limit",
            title: "HTTP Connection Limit",
            description: "Accepts 50 new HTTP connections a second per source and drops the rest",
            category: Category::Web,
            risk: Risk::Low,
            rule: TemplateRule::Firewall(spec(
                FwProtocol::Tcp,
                80,
                Action::Limit,
                Some(Limit { rate: 50, unit: LimitUnit::Second }),
                Some("new"),
                Chain::Input,
            )),
        },
        Template {
            id: "tpl_nft_smtp_out_block",
            title: "Block Outbound SMTP",
            description: "Rejects outgoing SMTP so a compromised service cannot send spam",
            category: Category::Infrastructure,
            risk: Risk::Medium,
            rule: TemplateRule::Firewall(spec(FwProtocol::Tcp, 25, Action::Reject, None, None, Chain::Output)),
        },
    ]
}

/// Every template, xdp first, in catalogue order.
pub fn catalog() -> Vec<Template> {
    let xdp = xdp_templates().into_iter().filter_map(|t| {
        RuleSpec::new(t.protocol, t.ports.0, t.ports.1, t.rule_type, t.limits).ok().map(|spec| Template {
            id: t.id,
            title: t.title,
            description: t.description,
            category: t.category,
            risk: t.risk,
            rule: TemplateRule::Engine(spec),
        })
    });
    xdp.chain(nft_templates()).collect()
}

/// The template with that ID.
pub fn find(id: &str) -> Option<Template> {
    catalog().into_iter().find(|t| t.id == id)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_template_is_valid_and_unique() {
        assert_eq!(catalog().len(), xdp_templates().len() + nft_templates().len(), "an xdp template failed validation");
        assert!(catalog().len() >= 20);
        let ids: HashSet<&str> = catalog().iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), catalog().len());
        for t in catalog() {
            assert!(
                t.id.starts_with("tpl_")
                    && t.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                t.id
            );
            assert!(crate::validation::name("name", t.title).is_ok());
            if let TemplateRule::Firewall(spec) = &t.rule
                && let Some(ct) = &spec.conntrack
            {
                assert!(ct.states().count() > 0);
            }
        }
    }

    #[test]
    fn every_category_is_covered() {
        for category in [Category::Gaming, Category::Web, Category::Infrastructure, Category::Database] {
            assert!(catalog().iter().any(|t| t.category == category), "{category:?}");
        }
        assert!(catalog().iter().any(|t| matches!(t.rule, TemplateRule::Firewall(_))));
    }

    #[test]
    fn the_reference_example_is_in_the_catalogue() {
        let fivem = find("tpl_fivem_shield").expect("FiveM Shield");
        let TemplateRule::Engine(spec) = fivem.rule else { panic!("xdp") };
        assert_eq!((spec.ports.start(), spec.ports.end()), (30120, 30130));
        assert_eq!(spec.limits.max_pps, 5000);
        assert_eq!(fivem.category, Category::Gaming);
        assert!(find("tpl_nope").is_none());
    }

    /// The `protect` templates, one per game.
    const PROTECT_IDS: [&str; 9] = [
        "tpl_fivem_protect",
        "tpl_minecraft_bedrock_protect",
        "tpl_cs2_protect",
        "tpl_rust_protect",
        "tpl_ark_protect",
        "tpl_valheim_protect",
        "tpl_palworld_protect",
        "tpl_dayz_protect",
        "tpl_teamspeak_protect",
    ];

    /// `n` as the descriptions write it: `2,000`, `300`.
    fn grouped(n: u32) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }

    #[test]
    fn the_protect_templates_are_the_listed_games_each_with_a_budget_for_new_players() {
        let protect: Vec<Template> = catalog()
            .into_iter()
            .filter(|t| matches!(&t.rule, TemplateRule::Engine(spec) if spec.rule_type == RuleType::Protect))
            .collect();
        let ids: HashSet<&str> = protect.iter().map(|t| t.id).collect();
        assert_eq!(ids, PROTECT_IDS.into_iter().collect::<HashSet<_>>());
        let named: HashSet<&str> = catalog().iter().map(|t| t.id).filter(|id| id.ends_with("_protect")).collect();
        assert_eq!(named, ids, "every _protect template is a protect rule");
        for t in &protect {
            let TemplateRule::Engine(spec) = &t.rule else { unreachable!("filtered on engine rules") };
            assert_eq!(t.category, Category::Gaming, "{}", t.id);
            assert!(spec.limits.max_port_pps >= 1, "{}: a protect rule needs a budget", t.id);
            assert!(spec.limits.max_pps > 0, "{}: verified players are held to a per-source limit", t.id);
            for n in [spec.limits.max_pps, spec.limits.max_port_pps] {
                assert!(t.description.contains(&format!("{} packets/s", grouped(n))), "{}: says {n}", t.id);
            }
        }
    }

    #[test]
    fn a_game_s_protect_template_covers_its_shield_s_ports() {
        for (shield, protect) in [
            ("tpl_fivem_shield", "tpl_fivem_protect"),
            ("tpl_minecraft_bedrock", "tpl_minecraft_bedrock_protect"),
            ("tpl_cs2_shield", "tpl_cs2_protect"),
            ("tpl_rust_shield", "tpl_rust_protect"),
            ("tpl_ark_shield", "tpl_ark_protect"),
            ("tpl_teamspeak_voice", "tpl_teamspeak_protect"),
        ] {
            let spec = |id: &str| match find(id).map(|t| t.rule) {
                Some(TemplateRule::Engine(spec)) => spec,
                other => panic!("{id}: {other:?}"),
            };
            let (shield, protect) = (spec(shield), spec(protect));
            assert_eq!((shield.protocol, shield.ports), (protect.protocol, protect.ports));
            assert!(shield.duplicates(&protect), "an agent holds one or the other");
        }
        assert_eq!([grouped(300), grouped(2000), grouped(1_234_567)], ["300", "2,000", "1,234,567"]);
    }

    #[test]
    fn categories_parse_case_insensitively() {
        assert_eq!("gaming".parse::<Category>(), Ok(Category::Gaming));
        assert_eq!("Database".parse::<Category>(), Ok(Category::Database));
        assert_eq!("Games".parse::<Category>().expect_err("unknown").field, "category");
    }
}
