//! [`HostDataplane`]: a real host's whole dataplane, the PAKKT Engine for
//! engine rules and IP lists and nftables for firewall rules, behind one
//! [`Dataplane`].

use std::net::IpAddr;

use async_trait::async_trait;
use pakkt_core::agent::{DataplaneMode, EgressMode};
use pakkt_core::dataplane::{Dataplane, DataplaneCounters, DataplaneError};
use pakkt_core::sync::{AppliedState, Op};
use pakkt_engine::{AttachOptions, Engine, OpenError, TrustedError, XdpDataplane};
use pakkt_nft::{FirewallOp, NftError, NftFirewall, NftOptions};

/// Why a [`HostDataplane`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The engine could not be attached or adopted.
    #[error(transparent)]
    Engine(#[from] OpenError),
    /// The control plane's addresses are more than the engine takes.
    #[error(transparent)]
    Trusted(#[from] TrustedError),
    /// The nftables table could not be created or adopted.
    #[error("setting up the nftables table inet pakkt")]
    Firewall(#[from] NftError),
}

/// The engine and the nftables firewall of one host.
///
/// `apply` sends engine and list ops to the engine (staged and switched in
/// together, see [`XdpDataplane`]) and all firewall ops of the batch to
/// nftables as one transaction; results come back one per op, in order.
#[derive(Debug)]
pub struct HostDataplane {
    xdp: XdpDataplane,
    firewall: NftFirewall,
}

impl HostDataplane {
    /// Composes an engine dataplane and a firewall.
    pub fn new(xdp: XdpDataplane, firewall: NftFirewall) -> Self {
        Self { xdp, firewall }
    }

    /// Attaches (or adopts) the engine on `iface` and opens (or adopts) the
    /// table `inet pakkt`, then trusts the control plane's addresses in
    /// both.
    pub fn attach(iface: &str, attach: &AttachOptions, firewall: NftOptions) -> Result<Self, HostError> {
        let trusted = firewall.control_plane.addrs.clone();
        let engine = Engine::attach(iface, attach)?;
        let firewall = NftFirewall::open(firewall)?;
        let xdp = XdpDataplane::new(engine);
        xdp.engine().set_trusted(&trusted)?;
        Ok(Self::new(xdp, firewall))
    }

    /// The engine half.
    pub fn xdp(&self) -> &XdpDataplane {
        &self.xdp
    }

    /// The firewall half.
    pub fn firewall(&self) -> &NftFirewall {
        &self.firewall
    }
}

#[async_trait]
impl Dataplane for HostDataplane {
    fn mode(&self) -> DataplaneMode {
        self.xdp.mode()
    }

    fn egress_mode(&self) -> Option<EgressMode> {
        self.xdp.egress_mode()
    }

    async fn applied(&self) -> Result<AppliedState, DataplaneError> {
        let mut applied = self.xdp.applied().await?;
        applied.firewall_rules = self.firewall.applied()?;
        Ok(applied)
    }

    async fn set_trusted(&self, addrs: &[IpAddr]) -> Result<(), DataplaneError> {
        self.xdp.set_trusted(addrs).await?;
        self.firewall.set_control_plane(addrs)?;
        Ok(())
    }

    async fn apply(&self, ops: &[Op]) -> Vec<Result<(), DataplaneError>> {
        let engine_ops: Vec<Op> = ops.iter().filter(|op| FirewallOp::from_op(op).is_none()).cloned().collect();
        let firewall_ops: Vec<FirewallOp<'_>> = ops.iter().filter_map(FirewallOp::from_op).collect();
        let mut engine_results =
            if engine_ops.is_empty() { Vec::new() } else { self.xdp.apply(&engine_ops).await }.into_iter();
        let mut firewall_results =
            if firewall_ops.is_empty() { Vec::new() } else { self.firewall.apply(&firewall_ops) }.into_iter();
        let missing = || Err(DataplaneError::Rejected("the dataplane did not answer for this item".into()));
        ops.iter()
            .map(|op| {
                if FirewallOp::from_op(op).is_some() {
                    firewall_results.next().map_or_else(missing, |r| r.map_err(DataplaneError::from))
                } else {
                    engine_results.next().unwrap_or_else(missing)
                }
            })
            .collect()
    }

    async fn counters(&self) -> Result<DataplaneCounters, DataplaneError> {
        let mut counters = self.xdp.counters().await?;
        counters.firewall = self.firewall.counters()?;
        Ok(counters)
    }
}
