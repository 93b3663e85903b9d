//! A host's whole dataplane (`HostDataplane`: the engine attached to a veth
//! in a test namespace, the table `inet pakkt` inside that namespace) holds
//! to the Dataplane port: core's conformance suite, run as root.

use std::net::IpAddr;

use async_trait::async_trait;
use pakkt_agent::host::HostDataplane;
use pakkt_core::agent::DataplaneMode;
use pakkt_core::dataplane::{Dataplane, DataplaneCounters, DataplaneError};
use pakkt_core::sync::{AppliedState, Op};
use pakkt_engine::testing::{Attached, VethPair, can_run_nft};
use pakkt_engine::{AttachMode, XdpDataplane};

/// A HostDataplane on `pair.a_if` that cleans up its pins and namespaces
/// when dropped. Fields drop in order: dataplane, pins, namespaces (which
/// take the table with them).
struct TestDataplane {
    dataplane: HostDataplane,
    _attached: Attached,
    _pair: VethPair,
}

impl TestDataplane {
    fn new() -> Self {
        let pair = VethPair::new("192.0.2", "2001:db8:1");
        let attached = Attached::new(&pair.a_if);
        let engine = attached.attach(&pair.a, AttachMode::Generic).expect("attach");
        let dataplane = HostDataplane::new(XdpDataplane::new(engine), pakkt_nft::testing::firewall(&pair));
        Self { dataplane, _attached: attached, _pair: pair }
    }
}

#[async_trait]
impl Dataplane for TestDataplane {
    fn mode(&self) -> DataplaneMode {
        self.dataplane.mode()
    }
    async fn applied(&self) -> Result<AppliedState, DataplaneError> {
        self.dataplane.applied().await
    }
    async fn set_trusted(&self, addrs: &[IpAddr]) -> Result<(), DataplaneError> {
        self.dataplane.set_trusted(addrs).await
    }
    async fn apply(&self, ops: &[Op]) -> Vec<Result<(), DataplaneError>> {
        self.dataplane.apply(ops).await
    }
    async fn counters(&self) -> Result<DataplaneCounters, DataplaneError> {
        self.dataplane.counters().await
    }
}

/// The host dataplane keeps every check of the dataplane port, each on a
/// host of its own.
mod the_host_dataplane_conforms {
    use super::{TestDataplane, can_run_nft};

    pakkt_core::dataplane_conformance_tests!(|| async {
        can_run_nft("the host dataplane's conformance").then(TestDataplane::new)
    });
}
