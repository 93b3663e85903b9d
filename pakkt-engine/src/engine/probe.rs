//! What tests and benchmarks look at or drive: the rate state (sketch and
//! per-port cells), the verified set and the seen table, and
//! `BPF_PROG_TEST_RUN` of both programs.

use std::time::Duration;

use aya::maps::{MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use pakkt_core::slot::Slot;

use super::{EGRESS_PROGRAM, Engine, MAP_EGRESS_COUNTERS, PROGRAM, map_data};
use crate::abi::{Bucket, EgressCounters, PORTS, PortCell, SUMMARY_SETS, VerifiedSummary, Way, WaySet};
use crate::error::{MapAccessError, RunError};

/// What the egress program's packets did to the verified set, summed over
/// CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EgressCounts {
    /// Destinations that took a free way.
    pub claimed: u64,
    /// Destinations that were verified already.
    pub refreshed: u64,
    /// Destinations whose set was full of live entries.
    pub refused: u64,
}

/// One per-port cell as the program left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBucket {
    /// The way ([`pakkt_core::verdict::bucket::port_way`] of the rule's
    /// protocol).
    pub way: usize,
    /// The owning rule's slot.
    pub slot: Slot,
    /// The owning rule's generation.
    pub generation: u32,
    /// The destination port.
    pub port: u16,
    /// Units held.
    pub tokens: u64,
    /// Last refill, engine clock.
    pub last_ns: u64,
}

impl Engine {
    /// The per-source sketch: cells per row, and its seed.
    pub fn sketch(&self) -> (u32, u64) {
        let seed = self.config.get(0).map(|c| c.sketch_seed).unwrap_or_default();
        (self.sketch_width, seed)
    }

    /// Empties every token bucket (tests start each case from fresh rate
    /// state).
    pub fn reset_rate_state(&mut self) {
        for i in 0..self.sketch.len() {
            self.sketch.set(i, &Bucket::default());
        }
        for i in 0..self.port_cells.len() {
            self.port_cells.set(i, &PortCell::default());
        }
        for i in 0..self.verified.len() {
            self.verified.set(i, &WaySet::default());
        }
        for i in 0..self.summary.len() {
            self.summary.set(i, &VerifiedSummary::default());
        }
        for i in 0..self.seen.len() {
            self.seen.set(i, &WaySet::default());
        }
    }

    /// Sets of the verified set and of the seen table.
    pub fn table_sets(&self) -> (u32, u32) {
        self.config.get(0).map_or((1, 1), |c| (c.verified_mask.wrapping_add(1), c.seen_mask.wrapping_add(1)))
    }

    /// Set `index` of the verified set as `(tag, expires)` per way.
    pub fn verified_set(&self, index: u32) -> Option<[(u32, u32); 8]> {
        self.verified.get(index as usize).map(|set| set.way.map(|Way { tag, tick }| (tag, tick)))
    }

    /// Whether `ip` is in the verified set now (on the engine clock, or the
    /// time override when one is set), read as the program reads it.
    pub fn is_verified(&self, ip: std::net::IpAddr) -> bool {
        use pakkt_core::verdict::SourceKey;
        use pakkt_core::verdict::verified::{SALT_VERIFIED, locate, verified_tick};
        let Some(config) = self.config.get(0) else { return false };
        let now = match config.time_override_ns {
            0 => crate::sys::monotonic_ns().unwrap_or_default(),
            fixed => fixed,
        };
        let sets = config.verified_mask.wrapping_add(1);
        let (set, tag) = locate(config.sketch_seed, sets, SALT_VERIFIED, SourceKey::of(ip));
        let tick = verified_tick(now);
        self.verified_set(set).is_some_and(|ways| ways.iter().any(|(t, expires)| *t == tag && *expires > tick))
    }

    /// The summary of verified set `index`: the latest expiry of its ways.
    pub fn verified_summary(&self, index: u32) -> Option<u32> {
        let index = index as usize;
        self.summary.get(index / SUMMARY_SETS).and_then(|s| s.max_expires.get(index % SUMMARY_SETS).copied())
    }

    /// Set `index` of the seen table as `(tag, seen)` per way.
    pub fn seen_set(&self, index: u32) -> Option<[(u32, u32); 8]> {
        self.seen.get(index as usize).map(|set| set.way.map(|Way { tag, tick }| (tag, tick)))
    }

    /// The egress program's counters, summed over CPUs.
    pub fn egress_counts(&self) -> Result<EgressCounts, MapAccessError> {
        let map: PerCpuArray<&MapData, EgressCounters> =
            PerCpuArray::try_from(map_data(&self.bpf, MAP_EGRESS_COUNTERS)?)
                .map_err(|e| MapAccessError::new(MAP_EGRESS_COUNTERS, e))?;
        let values = map.get(&0, 0).map_err(|e| MapAccessError::new(MAP_EGRESS_COUNTERS, e))?;
        let mut sum = EgressCounts::default();
        for c in values.iter() {
            sum.claimed = sum.claimed.saturating_add(c.claimed);
            sum.refreshed = sum.refreshed.saturating_add(c.refreshed);
            sum.refused = sum.refused.saturating_add(c.refused);
        }
        Ok(sum)
    }

    /// The loaded egress program (benchmarks read its run-time statistics).
    pub fn egress_program(&self) -> Option<&SchedClassifier> {
        self.bpf.program(EGRESS_PROGRAM).and_then(|p| p.try_into().ok())
    }

    /// Runs one frame the host sends through the egress program with
    /// `BPF_PROG_TEST_RUN`. Returns the TC action (always `TC_ACT_UNSPEC`,
    /// -1: the program never changes a packet's fate).
    pub fn run_egress(&self, frame: &[u8]) -> Result<i32, RunError> {
        let program: &SchedClassifier =
            self.bpf.program(EGRESS_PROGRAM).and_then(|p| p.try_into().ok()).ok_or(RunError::Missing)?;
        let result = program
            .test_run(TestRunOptions { data_in: Some(frame), repeat: 1, ..TestRunOptions::default() })
            .map_err(|e| RunError::Run(Box::new(e)))?;
        Ok(result.return_value.cast_signed())
    }

    /// Sketch cell `index` as `(tokens, last_ns)` (tests compare it with the
    /// model's).
    pub fn sketch_cell(&self, index: u32) -> Option<(u64, u64)> {
        self.sketch.get(index as usize).map(|b| (b.tokens, b.last_ns))
    }

    /// Every per-port cell in use.
    pub fn port_buckets(&self) -> Vec<PortBucket> {
        (0..self.port_cells.len())
            .filter_map(|i| {
                let cell = self.port_cells.get(i).filter(|c| c.owned != 0)?;
                Some(PortBucket {
                    way: i / PORTS,
                    port: u16::try_from(i % PORTS).ok()?,
                    slot: Slot::new(cell.slot),
                    generation: cell.generation,
                    tokens: cell.bucket.tokens,
                    last_ns: cell.bucket.last_ns,
                })
            })
            .collect()
    }

    /// The loaded XDP program, for tools that drive it directly (the
    /// benchmark tail-calls it).
    pub fn program(&self) -> Option<&Xdp> {
        self.bpf.program(PROGRAM).and_then(|p| p.try_into().ok())
    }

    /// Runs one frame through the program with `BPF_PROG_TEST_RUN` (the
    /// frame must hold at least an Ethernet header). Returns the XDP action
    /// (1 drop, 2 pass). Counters and buckets change as for a real packet.
    pub fn run(&self, frame: &[u8]) -> Result<u32, RunError> {
        self.run_repeat(frame, 1).map(|(action, _)| action)
    }

    /// Runs one frame `repeat` times; returns the action and the kernel's
    /// mean time per run.
    pub fn run_repeat(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), RunError> {
        let program: &Xdp = self.bpf.program(PROGRAM).and_then(|p| p.try_into().ok()).ok_or(RunError::Missing)?;
        let result = program
            .test_run(TestRunOptions { data_in: Some(frame), repeat: repeat.max(1), ..TestRunOptions::default() })
            .map_err(|e| RunError::Run(Box::new(e)))?;
        Ok((result.return_value, result.duration))
    }
}
