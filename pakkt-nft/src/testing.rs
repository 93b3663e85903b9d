//! Fixtures for tests on a real kernel (feature `testing`): the table
//! `inet pakkt` inside a test namespace, for this crate's tests and the
//! agent's tests of a whole host. The namespaces come from `pakkt-netns`.
//!
//! Everything here panics on failure: it is for tests only.
#![allow(clippy::missing_panics_doc)]

use pakkt_netns::{Netns, VethPair};

use crate::{ControlPlane, NftCommand, NftFirewall, NftOptions};

/// The control plane the fixtures trust: `b`'s addresses, port 7443.
pub const CONTROL_PORT: u16 = 7443;

/// `nft` inside `ns`.
pub fn nft_in(ns: &Netns) -> NftCommand {
    NftCommand::wrapped("ip", ["netns", "exec", ns.name.as_str(), "nft"])
}

/// Opens (or adopts) the table inside `pair.a`, trusting `b`'s addresses
/// (`192.0.2.2`, `2001:db8:1::2`, as [`VethPair::new`] gives them for
/// `"192.0.2"` and `"2001:db8:1"`).
pub fn firewall(pair: &VethPair) -> NftFirewall {
    NftFirewall::open(NftOptions {
        control_plane: ControlPlane {
            addrs: vec!["192.0.2.2".parse().expect("ip"), "2001:db8:1::2".parse().expect("ip")],
            port: CONTROL_PORT,
        },
        command: nft_in(&pair.a),
    })
    .expect("open the nftables table")
}
