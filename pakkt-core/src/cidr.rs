//! IP addresses and CIDR prefixes as list entries.
//!
//! A [`Cidr`] is checked once when it is built: the prefix length fits the
//! family and no host bit is set (`10.0.0.1/24` is refused rather than
//! silently widened, because the user almost certainly meant something
//! else). A single address is a full-length prefix and prints as the bare
//! address, the way the API reference shows entries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text is not an address or prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Neither an IPv4 nor an IPv6 address.
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    Address(String),
    /// The part after `/` is not a prefix length for the family.
    #[error("prefix length {len:?} is out of range for {family} (0..={max})")]
    PrefixLength {
        /// The text after the slash.
        len: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// 32 or 128.
        max: u8,
    },
    /// The address has bits set beyond the prefix.
    #[error("{text} has host bits set; did you mean {network}?")]
    HostBits {
        /// What the user wrote.
        text: String,
        /// The network the prefix denotes.
        network: String,
    },
}

/// An IPv4 or IPv6 network: an address with no bits set beyond `len`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// A network from its parts.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let max = max_len(addr);
        if len > max {
            return Err(CidrError::PrefixLength { len: len.to_string(), family: family(addr), max });
        }
        let network = mask(addr, len);
        if network != addr {
            return Err(CidrError::HostBits { text: format!("{addr}/{len}"), network: format!("{network}/{len}") });
        }
        Ok(Self { addr, len })
    }

    /// The single-address network of `addr`.
    pub fn host(addr: IpAddr) -> Self {
        Self { addr, len: max_len(addr) }
    }

    /// The network address.
    pub fn addr(self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(self) -> u8 {
        self.len
    }

    /// Whether this is `0.0.0.0/0` or `::/0`.
    pub fn is_everything(self) -> bool {
        self.len == 0
    }

    /// Whether this is IPv4.
    pub fn is_ipv4(self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `ip` lies inside this network. Families never mix.
    pub fn contains(self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => mask(ip, self.len) == self.addr,
            _ => false,
        }
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// `addr` with every bit beyond `len` cleared.
pub(crate) fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = if len == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(len.min(32)))) };
            IpAddr::V4(Ipv4Addr::from(kept))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = if len == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(len.min(128)))) };
            IpAddr::V6(Ipv6Addr::from(kept))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| CidrError::Address(text.chars().take(64).collect()))?;
        let Some(len_text) = len_text else {
            return Ok(Self::host(addr));
        };
        let max = max_len(addr);
        let len =
            len_text.parse::<u8>().ok().filter(|len| *len <= max && !len_text.starts_with('+')).ok_or_else(|| {
                CidrError::PrefixLength { len: len_text.chars().take(16).collect(), family: family(addr), max }
            })?;
        Self::new(addr, len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == max_len(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cidr({self})")
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn parses_addresses_and_prefixes() {
        assert_eq!("203.0.113.42".parse::<Cidr>().expect("v4").to_string(), "203.0.113.42");
        assert_eq!("203.0.113.42/32".parse::<Cidr>().expect("v4/32").to_string(), "203.0.113.42");
        assert_eq!("10.0.0.0/8".parse::<Cidr>().expect("v4/8").prefix_len(), 8);
        assert_eq!("2001:db8::/32".parse::<Cidr>().expect("v6").to_string(), "2001:db8::/32");
        assert_eq!("::1".parse::<Cidr>().expect("v6 host").prefix_len(), 128);
        assert!("0.0.0.0/0".parse::<Cidr>().expect("everything").is_everything());
    }

    #[test]
    fn rejects_host_bits() {
        let err = "10.0.0.1/24".parse::<Cidr>().expect_err("host bits");
        assert!(matches!(err, CidrError::HostBits { ref network, .. } if network == "10.0.0.0/24"));
        assert!(matches!("2001:db8::1/64".parse::<Cidr>(), Err(CidrError::HostBits { .. })));
    }

    #[test]
    fn rejects_garbage_and_bad_lengths() {
        for bad in [
            "",
            "banana",
            "1.2.3",
            "1.2.3.4/",
            "1.2.3.4/33",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
            "::/129",
            "1.2.3.4/8/8",
            " 1.2.3.4",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn contains_respects_family_and_prefix() {
        let net: Cidr = "198.51.100.0/24".parse().expect("net");
        assert!(net.contains(ip("198.51.100.7")));
        assert!(!net.contains(ip("198.51.101.7")));
        assert!(!net.contains(ip("::ffff:198.51.100.7")));
        let all: Cidr = "::/0".parse().expect("all v6");
        assert!(all.contains(ip("2001:db8::1")));
        assert!(!all.contains(ip("1.1.1.1")));
    }
}
