//! What the agent needs to know about its host: the interface to protect,
//! and the dataplane that enforces on it. The agent is where the adapters
//! meet: [`HostDataplane`] joins the PAKKT Engine (`pakkt-engine`) and the
//! nftables firewall (`pakkt-nft`).

mod dataplane;

use std::net::IpAddr;

use async_trait::async_trait;
use pakkt_core::agent::{DataplaneMode, EgressMode};
use pakkt_core::dataplane::{Dataplane, DataplaneCounters, DataplaneError};
use pakkt_core::sync::{AppliedState, Op};
use pakkt_engine::XdpDataplane;

pub use dataplane::{HostDataplane, HostError};

/// The interface of the default route: IPv4 first (`/proc/net/route`), then
/// IPv6 (`/proc/net/ipv6_route`).
pub fn default_route_iface() -> Option<String> {
    let v4 = std::fs::read_to_string("/proc/net/route").ok().and_then(|t| default_v4(&t));
    v4.or_else(|| std::fs::read_to_string("/proc/net/ipv6_route").ok().and_then(|t| default_v6(&t)))
}

/// The interface of the first default route in `/proc/net/route` text.
fn default_v4(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags … Mask …: a default route has
        // destination and mask 0 and the UP flag (0x1).
        let up = fields.get(3).and_then(|f| u32::from_str_radix(f, 16).ok()).is_some_and(|f| f & 1 == 1);
        (fields.get(1) == Some(&"00000000") && fields.get(7) == Some(&"00000000") && up).then(|| fields[0].to_owned())
    })
}

/// The interface of the first default route in `/proc/net/ipv6_route` text.
fn default_v6(table: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let default = fields.first().is_some_and(|d| d.chars().all(|c| c == '0')) && fields.get(1) == Some(&"00");
        let iface = fields.get(9).copied().filter(|i| *i != "lo")?;
        default.then(|| iface.to_owned())
    })
}

/// The host's dataplane: the engine with the nftables firewall, or the
/// engine alone when `nft` is not installed (firewall rules then fail with
/// a message saying so, and engine rules and lists are still enforced).
#[derive(Debug)]
pub enum HostPlane {
    /// Engine and nftables.
    Full(HostDataplane),
    /// The engine alone.
    EngineOnly(XdpDataplane),
}

impl HostPlane {
    fn inner(&self) -> &dyn Dataplane {
        match self {
            Self::Full(host) => host,
            Self::EngineOnly(xdp) => xdp,
        }
    }
}

#[async_trait]
impl Dataplane for HostPlane {
    fn mode(&self) -> DataplaneMode {
        self.inner().mode()
    }

    fn egress_mode(&self) -> Option<EgressMode> {
        self.inner().egress_mode()
    }

    async fn applied(&self) -> Result<AppliedState, DataplaneError> {
        self.inner().applied().await
    }

    async fn set_trusted(&self, addrs: &[IpAddr]) -> Result<(), DataplaneError> {
        self.inner().set_trusted(addrs).await
    }

    async fn apply(&self, ops: &[Op]) -> Vec<Result<(), DataplaneError>> {
        self.inner().apply(ops).await
    }

    async fn counters(&self) -> Result<DataplaneCounters, DataplaneError> {
        self.inner().counters().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_default_route() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  ens3\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  ens4\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
        assert_eq!(default_v4(v4).as_deref(), Some("ens4"));
        assert_eq!(default_v4("Iface\tDestination\n"), None);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 ens5\n";
        assert_eq!(default_v6(v6).as_deref(), Some("ens5"));
    }
}
