//! What the engine's integration tests share: the kernel fixtures of
//! `pakkt_engine::testing`, and a whole host (engine + nftables) in a
//! namespace.
#![allow(dead_code)] // Each test binary uses part of this module.

pub use pakkt_engine::testing::*;

/// The control plane the host fixtures trust: `b`'s addresses, port 7443.
pub const CONTROL_PORT: u16 = 7443;

/// A HostDataplane on `pair.a_if`: the engine attached (generic mode) and
/// the table `inet pakkt` inside namespace `a`. Fields drop in order:
/// dataplane, pins, namespaces (which takes the table with them).
#[derive(Debug)]
pub struct Host {
    pub dataplane: pakkt_engine::HostDataplane,
    pub attached: Attached,
    pub pair: VethPair,
}

/// `nft` inside `ns`.
pub fn nft_in(ns: &Netns) -> pakkt_engine::NftCommand {
    pakkt_engine::NftCommand::wrapped("ip", ["netns", "exec", ns.name.as_str(), "nft"])
}

/// Opens (or adopts) the table inside `pair.a`, trusting `b`'s addresses.
pub fn firewall(pair: &VethPair) -> pakkt_engine::NftFirewall {
    pakkt_engine::NftFirewall::open(pakkt_engine::NftOptions {
        control_plane: pakkt_engine::ControlPlane {
            addrs: vec!["192.0.2.2".parse().expect("ip"), "2001:db8:1::2".parse().expect("ip")],
            port: CONTROL_PORT,
        },
        command: nft_in(&pair.a),
    })
    .expect("open the nftables table")
}

impl Host {
    pub fn new() -> Self {
        let pair = VethPair::new("192.0.2", "2001:db8:1");
        let attached = Attached::new(&pair.a_if);
        let engine = attached.attach(&pair.a, pakkt_engine::AttachMode::Generic).expect("attach");
        let dataplane = pakkt_engine::HostDataplane::new(pakkt_engine::XdpDataplane::new(engine), firewall(&pair));
        Self { dataplane, attached, pair }
    }
}
