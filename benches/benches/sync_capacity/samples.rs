//! What the simulated agents and the API client measure, and its report.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use pakkt_benches::latency::percentile;
use pakkt_core::id::AgentId;
use tokio::sync::Mutex;

use crate::failures::Errors;

/// What is measured while [`Shared::measuring`] is set.
#[derive(Default)]
pub struct Samples {
    pub immediate: Vec<Duration>,
    pub metrics: Vec<Duration>,
    /// Wakes of polls held by the replica the change went through.
    pub wake_same: Vec<Duration>,
    /// Wakes of polls held by another replica.
    pub wake_cross: Vec<Duration>,
    /// Syncs answered (held or not) while measuring.
    pub syncs: u64,
    pub errors: Errors,
}

/// A change made through the API, not yet seen by its agent.
#[derive(Clone, Copy)]
pub struct Change {
    pub at: Instant,
    pub replica: usize,
}

/// What the agents and the API client share.
#[derive(Default)]
pub struct Shared {
    pub samples: Mutex<Samples>,
    pub measuring: AtomicBool,
    pub stop: AtomicBool,
    pub pending: Mutex<HashMap<AgentId, Change>>,
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
pub fn per_second(count: u64, window: Duration) -> f64 {
    count as f64 / window.as_secs_f64()
}

/// Prints the latencies and rates measured over `window` with `replicas`
/// replicas.
pub fn report(s: &mut Samples, replicas: usize, window: Duration) {
    let mut wake: Vec<Duration> = s.wake_same.iter().chain(&s.wake_cross).copied().collect();
    wake.sort();
    s.immediate.sort();
    s.metrics.sort();
    s.wake_same.sort();
    s.wake_cross.sort();
    let mut figures =
        vec![("immediate syncs", &s.immediate), ("metrics reports", &s.metrics), ("change → held poll answers", &wake)];
    if replicas > 1 {
        figures.push(("  of which the same replica", &s.wake_same));
        figures.push(("  of which across replicas", &s.wake_cross));
    }
    for (name, list) in figures {
        println!(
            "{name}: {} samples, p50 {:.1?}, p99 {:.1?}, max {:.1?}",
            list.len(),
            percentile(list, 50),
            percentile(list, 99),
            list.last().copied().unwrap_or_default()
        );
    }
    println!(
        "throughput: {:.0} syncs/s, {:.0} metrics reports/s",
        per_second(s.syncs, window),
        per_second(s.metrics.len() as u64, window)
    );
}
