//! What the agent needs to know about its host: the interface to protect,
//! and which parts of a desired state the host dataplane can enforce.

use std::net::IpAddr;

use async_trait::async_trait;
use pakkt_core::agent::DataplaneMode;
use pakkt_core::dataplane::{Dataplane, DataplaneCounters, DataplaneError};
use pakkt_core::sync::{AppliedState, Op};

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

/// A dataplane that enforces engine rules and IP lists, and refuses
/// firewall rules with a message saying why, so that users see them
/// `failed` instead of believing them enforced.
#[derive(Debug)]
pub struct WithoutFirewall<D> {
    inner: D,
}

impl<D> WithoutFirewall<D> {
    /// Wraps `inner`.
    pub fn new(inner: D) -> Self {
        Self { inner }
    }
}

/// What firewall rules answer on a host without the nftables backend.
pub const NO_FIREWALL: &str =
    "this agent enforces engine rules and IP lists only: its nftables firewall backend is not available";

#[async_trait]
impl<D: Dataplane> Dataplane for WithoutFirewall<D> {
    fn mode(&self) -> DataplaneMode {
        self.inner.mode()
    }

    async fn applied(&self) -> Result<AppliedState, DataplaneError> {
        let mut applied = self.inner.applied().await?;
        applied.firewall_rules.clear();
        Ok(applied)
    }

    async fn set_trusted(&self, addrs: &[IpAddr]) -> Result<(), DataplaneError> {
        self.inner.set_trusted(addrs).await
    }

    async fn apply(&self, ops: &[Op]) -> Vec<Result<(), DataplaneError>> {
        let passed: Vec<Op> = ops
            .iter()
            .filter(|op| !matches!(op, Op::AddFirewallRule(_) | Op::RemoveFirewallRule(_)))
            .cloned()
            .collect();
        let mut results = self.inner.apply(&passed).await.into_iter();
        ops.iter()
            .map(|op| match op {
                Op::AddFirewallRule(_) => Err(DataplaneError::Rejected(NO_FIREWALL.to_owned())),
                Op::RemoveFirewallRule(_) => Ok(()),
                _ => results
                    .next()
                    .unwrap_or_else(|| Err(DataplaneError::Rejected("the dataplane did not answer".into()))),
            })
            .collect()
    }

    async fn counters(&self) -> Result<DataplaneCounters, DataplaneError> {
        let mut counters = self.inner.counters().await?;
        counters.firewall.clear();
        Ok(counters)
    }
}

#[cfg(test)]
mod tests {
    use pakkt_core::memory::MemoryDataplane;
    use pakkt_core::sync::{DesiredState, ItemRef};

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

    #[tokio::test]
    async fn firewall_rules_fail_with_a_reason_and_the_rest_applies() {
        let dataplane = WithoutFirewall::new(MemoryDataplane::new());
        let desired = DesiredState {
            revision: 2,
            firewall_rules: pakkt_core::firewall::SystemRole::ALL
                .iter()
                .map(|role| pakkt_core::sync::DesiredFirewallRule {
                    id: pakkt_core::id::FirewallRuleId::generate(),
                    system: Some(*role),
                    spec: role.spec(),
                })
                .collect(),
            ip_entries: vec![pakkt_core::sync::DesiredEntry {
                id: pakkt_core::id::IpEntryId::generate(),
                list_type: pakkt_core::ip_list::ListType::Whitelist,
                cidr: "192.0.2.0/24".parse().expect("cidr"),
                expires_at: None,
            }],
            ..DesiredState::default()
        };
        let mut applied = AppliedState::default();
        let failures = pakkt_core::dataplane::reconcile(&dataplane, &desired, &mut applied).await;
        assert_eq!(failures.len(), 3);
        assert!(failures.iter().all(|f| matches!(f.item, ItemRef::FirewallRule(_)) && f.message == NO_FIREWALL));
        assert_eq!(applied.ip_entries.len(), 1);
        assert_eq!(dataplane.applied().await.expect("applied"), applied);
    }
}
