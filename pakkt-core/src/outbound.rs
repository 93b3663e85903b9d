//! Where the server may connect on a user's behalf (webhooks, feeds;
//! DESIGN §4 "Outbound destinations").
//!
//! By default only public addresses: loopback, private, shared (CGNAT),
//! link-local (cloud metadata at 169.254.169.254 included), documentation,
//! benchmarking, multicast, reserved and unspecified ranges are refused,
//! and so is the IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`),
//! IPv4-compatible, NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) IPv6
//! address when it is one of those. URL parsing (WHATWG) already turns
//! `127.1`, `2130706433` and `0x7f.1` into 127.0.0.1, so the check sees
//! plain addresses. An operator's allow list (`--outbound-allow`)
//! *replaces* the rule: then only the listed prefixes pass, public ones
//! included (the test command allows loopback only, so no test ever
//! contacts another host).
//!
//! Names are checked twice: at create, names that are internal by
//! definition are refused ([`OutboundPolicy::permits_name`]); at each
//! connection, every address the name resolves to must pass
//! [`OutboundPolicy::permits`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::cidr::Cidr;

/// Where outbound connections may go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OutboundPolicy {
    /// Public addresses only (the default).
    #[default]
    PublicOnly,
    /// Only these prefixes, public or not.
    Allow(Vec<Cidr>),
}

impl OutboundPolicy {
    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        match self {
            Self::PublicOnly => is_public(ip),
            Self::Allow(prefixes) => prefixes.iter().any(|p| p.contains(ip)),
        }
    }

    /// Whether a host name may be used at all: under [`Self::PublicOnly`],
    /// names internal by definition are refused (`localhost` and its
    /// subdomains, single-label names, `.local`, `.internal`,
    /// `.home.arpa`). Under an allow list every name may be used; its
    /// addresses decide at each connection.
    pub fn permits_name(&self, host: &str) -> bool {
        if matches!(self, Self::Allow(_)) {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let internal = host == "localhost"
            || !host.contains('.')
            || [".localhost", ".local", ".internal", ".home.arpa"].iter().any(|suffix| host.ends_with(suffix));
        !internal
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const REFUSED: [(u32, u8); 16] = [
        (0x0000_0000, 8),  // "this network"
        (0x0a00_0000, 8),  // private
        (0x6440_0000, 10), // shared (CGNAT)
        (0x7f00_0000, 8),  // loopback
        (0xa9fe_0000, 16), // link-local, cloud metadata
        (0xac10_0000, 12), // private
        (0xc000_0000, 24), // IETF protocol assignments
        (0xc000_0200, 24), // TEST-NET-1
        (0xc058_6300, 24), // 6to4 relay anycast
        (0xc0a8_0000, 16), // private
        (0xc612_0000, 15), // benchmarking
        (0xc633_6400, 24), // TEST-NET-2
        (0xcb00_7100, 24), // TEST-NET-3
        (0xe000_0000, 4),  // multicast
        (0xf000_0000, 4),  // reserved, broadcast
        (0xffff_ffff, 32), // broadcast
    ];
    let bits = u32::from(ip);
    !REFUSED.iter().any(|(net, len)| bits >> (32 - u32::from(*len)) == net >> (32 - u32::from(*len)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let within = |net: u128, len: u32| bits >> (128 - len) == net >> (128 - len);
    let embedded = |shift: u32| {
        // The IPv4 address in bits [shift, shift + 32).
        #[allow(clippy::cast_possible_truncation)]
        let v4 = (bits >> shift) as u32;
        is_public_v4(Ipv4Addr::from(v4))
    };
    if within(0xffff_0000_0000, 96) || within(0, 96) || within(0x0064_ff9b << 96, 96) {
        // IPv4-mapped, IPv4-compatible (and :: and ::1), NAT64.
        return bits > 1 && embedded(0);
    }
    if within(0x2002 << 112, 16) {
        // 6to4: the IPv4 address follows the prefix.
        return embedded(80);
    }
    let refused: [(u128, u32); 6] = [
        (0xfc00 << 112, 7),      // unique local
        (0xfe80 << 112, 10),     // link-local
        (0xff00 << 112, 8),      // multicast
        (0x2001_0db8 << 96, 32), // documentation
        (0x0100 << 112, 64),     // discard
        (0x2001_0000 << 96, 23), // IETF protocol assignments
    ];
    !refused.iter().any(|(net, len)| within(*net, *len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn public_only_refuses_every_internal_form() {
        let policy = OutboundPolicy::PublicOnly;
        for refused in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "192.0.2.7",
            "198.51.100.1",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
        ] {
            assert!(!policy.permits(ip(refused)), "{refused} must be refused");
        }
        for allowed in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
            "64:ff9b::808:808",
        ] {
            assert!(policy.permits(ip(allowed)), "{allowed} is public");
        }
    }

    #[test]
    fn an_allow_list_replaces_the_rule() {
        let policy =
            OutboundPolicy::Allow(vec!["127.0.0.0/8".parse().expect("cidr"), "::1/128".parse().expect("cidr")]);
        assert!(policy.permits(ip("127.0.0.1")) && policy.permits(ip("::1")));
        assert!(!policy.permits(ip("8.8.8.8")), "public addresses are not listed");
        assert!(!policy.permits(ip("::ffff:127.0.0.1")), "only the listed forms");
        assert!(policy.permits_name("localhost"), "its addresses decide");
    }

    #[test]
    fn internal_names_are_refused_under_public_only() {
        let policy = OutboundPolicy::PublicOnly;
        for name in ["localhost", "LOCALHOST.", "api.localhost", "printer", "nas.local", "db.internal", "x.home.arpa"] {
            assert!(!policy.permits_name(name), "{name}");
        }
        for name in ["hooks.example.com", "discord.com", "example.com."] {
            assert!(policy.permits_name(name), "{name}");
        }
    }
}
