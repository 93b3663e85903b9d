//! What tests and benchmarks look at or drive: the rate state (sketch and
//! per-port cells) and `BPF_PROG_TEST_RUN`.

use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use pakkt_core::slot::Slot;

use super::{Engine, PROGRAM};
use crate::abi::{Bucket, PORTS, PortCell};
use crate::error::RunError;

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
