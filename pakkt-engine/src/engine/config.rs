//! What the engine keeps in its config map besides rules and lists: the
//! trusted addresses and the time override.

use std::mem::offset_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Engine;
use crate::abi::{Config, MAX_TRUSTED};
use crate::error::TrustedError;

impl Engine {
    /// Sets the addresses that always pass (at most [`MAX_TRUSTED`] per
    /// family), replacing the previous set.
    pub fn set_trusted(&mut self, addrs: &[IpAddr]) -> Result<(), TrustedError> {
        let mut v4: Vec<Ipv4Addr> =
            addrs.iter().filter_map(|a| if let IpAddr::V4(v) = a { Some(*v) } else { None }).collect();
        let mut v6: Vec<Ipv6Addr> =
            addrs.iter().filter_map(|a| if let IpAddr::V6(v) = a { Some(*v) } else { None }).collect();
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        if v4.len() > MAX_TRUSTED {
            return Err(TrustedError::TooMany { family: "IPv4", got: v4.len(), max: MAX_TRUSTED });
        }
        if v6.len() > MAX_TRUSTED {
            return Err(TrustedError::TooMany { family: "IPv6", got: v6.len(), max: MAX_TRUSTED });
        }
        // Addresses first, then the counts: the program never compares with
        // a slot that is being written beyond the count in force.
        let base4 = offset_of!(Config, trusted_v4);
        let base6 = offset_of!(Config, trusted_v6);
        let c4 = offset_of!(Config, trusted_v4_count);
        let c6 = offset_of!(Config, trusted_v6_count);
        self.config.store_u32(0, c4, 0);
        self.config.store_u32(0, c6, 0);
        for (i, addr) in v4.iter().enumerate() {
            self.config.store_u32(0, base4 + 4 * i, u32::from_ne_bytes(addr.octets()));
        }
        for (i, addr) in v6.iter().enumerate() {
            let octets = addr.octets();
            let (high, low) = octets.split_at(8);
            self.config.store_u64(0, base6 + 16 * i, u64::from_ne_bytes(high.try_into().unwrap_or_default()));
            self.config.store_u64(0, base6 + 16 * i + 8, u64::from_ne_bytes(low.try_into().unwrap_or_default()));
        }
        self.config.store_u32(0, c4, v4.len() as u32);
        self.config.store_u32(0, c6, v6.len() as u32);
        Ok(())
    }

    /// Fixes the engine clock at `now_ns` (tests), or gives it back to the
    /// real clock (`None`: the kernel's coarse monotonic clock,
    /// `bpf_ktime_get_coarse_ns`). 0 is not a valid fixed time.
    pub fn set_time_override(&self, now_ns: Option<u64>) {
        self.config.store_u64(0, offset_of!(Config, time_override_ns), now_ns.unwrap_or(0));
    }
}
