//! The agent's two loops: sync (long poll, reconcile, report) and metrics.
//!
//! The dataplane keeps enforcing whatever was last applied while the server
//! is unreachable; the loops only change it on an answer from the server.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pakkt_core::agent::HostInfo;
use pakkt_core::dataplane::{self, Dataplane};
use pakkt_core::metrics::{CounterDelta, Counters, MAX_REPORT_FIREWALL_COUNTERS, MetricsReport, fold_ports};
use pakkt_core::sync::{AppliedState, ItemFailure, SyncReport};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::control::{ControlError, ControlPlane};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// What the agent reports about its host.
    pub host: HostInfo,
    /// How long each sync may be held by the server (at most 25 s).
    pub wait: Duration,
    /// How often metrics are reported.
    pub report_interval: Duration,
    /// First retry pause after a failed call (doubles up to `max_backoff`).
    pub min_backoff: Duration,
    /// Longest retry pause.
    pub max_backoff: Duration,
    /// Most metric reports kept while the server is unreachable (oldest
    /// dropped beyond).
    pub max_pending_reports: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            host: HostInfo::default(),
            wait: Duration::from_secs(25),
            report_interval: Duration::from_secs(10),
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_pending_reports: 360,
        }
    }
}

/// What the agent has done, for logs and the Prometheus endpoint.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Successful syncs.
    pub syncs: AtomicU64,
    /// Failed sync calls.
    pub sync_errors: AtomicU64,
    /// The revision last applied.
    pub revision: AtomicU64,
    /// Items that failed to apply, in total.
    pub item_failures: AtomicU64,
    /// Metric reports the server stored.
    pub reports_sent: AtomicU64,
    /// Metric reports dropped because the server stayed unreachable.
    pub reports_dropped: AtomicU64,
}

/// A running agent: a control plane, a dataplane and the loops between.
#[derive(Debug)]
pub struct Agent<C, D> {
    control: Arc<C>,
    dataplane: Arc<D>,
    config: AgentConfig,
    stats: Arc<AgentStats>,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The dataplane cannot tell what it has in force.
    #[error("cannot read the dataplane's state")]
    Dataplane(#[source] pakkt_core::dataplane::DataplaneError),
}

async fn sleep_or_stop(pause: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

impl<C: ControlPlane, D: Dataplane> Agent<C, D> {
    /// An agent over `control` and `dataplane`.
    pub fn new(control: Arc<C>, dataplane: Arc<D>, config: AgentConfig) -> Self {
        Self { control, dataplane, config, stats: Arc::new(AgentStats::default()) }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<AgentStats> {
        Arc::clone(&self.stats)
    }

    /// Runs both loops until `shutdown` completes. The dataplane keeps what
    /// it enforces when the agent stops.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AgentError> {
        let applied = self.dataplane.applied().await.map_err(AgentError::Dataplane)?;
        tracing::info!(
            engine_rules = applied.engine_rules.len(),
            ip_entries = applied.ip_entries.len(),
            firewall_rules = applied.firewall_rules.len(),
            "adopted what the dataplane has in force"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let sync = self.sync_loop(applied, stop_rx.clone());
        let metrics = self.metrics_loop(stop_rx);
        let stopper = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(sync, metrics, stopper);
        if let Ok(counters) = self.dataplane.counters().await {
            let mut total = Counters::default();
            for c in counters.ports.values() {
                total.add(*c);
            }
            tracing::info!(
                packets_passed = total.packets_passed,
                packets_dropped = total.packets_dropped,
                bytes_passed = total.bytes_passed,
                bytes_dropped = total.bytes_dropped,
                dropped_by_reason = ?total.dropped_by_reason,
                reports_sent = self.stats.reports_sent.load(Ordering::Relaxed),
                "final dataplane totals"
            );
        }
        Ok(())
    }

    async fn sync_loop(&self, mut applied: AppliedState, mut stop: watch::Receiver<bool>) {
        let mut revision = 0u64;
        let mut failures: Vec<ItemFailure> = Vec::new();
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.max_backoff);
        loop {
            if *stop.borrow() {
                return;
            }
            let firewall_counters = self.dataplane.counters().await.map(|c| c.firewall).unwrap_or_default();
            let report = SyncReport {
                host: self.config.host.clone(),
                revision,
                applied: applied.ids(),
                failures: failures.clone(),
                firewall_counters,
            };
            let answer = tokio::select! {
                answer = self.control.sync(&report, self.config.wait) => answer,
                _ = stop.wait_for(|s| *s) => return,
            };
            match answer {
                Ok(desired) => {
                    backoff.reset();
                    self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                    if desired.revision != revision {
                        tracing::info!(from = revision, to = desired.revision, "applying a new desired state");
                    }
                    failures = dataplane::reconcile(self.dataplane.as_ref(), &desired, &mut applied).await;
                    for failure in &failures {
                        tracing::warn!(item = ?failure.item, message = %failure.message, "could not apply an item");
                    }
                    self.stats.item_failures.fetch_add(failures.len() as u64, Ordering::Relaxed);
                    revision = desired.revision;
                    self.stats.revision.store(revision, Ordering::Relaxed);
                }
                Err(error) => {
                    self.stats.sync_errors.fetch_add(1, Ordering::Relaxed);
                    let mut pause = backoff.next_delay();
                    if let ControlError::RateLimited { retry_after, .. } = &error {
                        pause = pause.max(*retry_after);
                    }
                    if matches!(error, ControlError::Unauthorized) {
                        tracing::error!(%error, ?pause, "sync refused; retrying");
                    } else {
                        tracing::warn!(error = %pakkt_core::Report(&error), ?pause, "sync failed; enforcing the last applied state and retrying");
                    }
                    if sleep_or_stop(pause, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    async fn metrics_loop(&self, mut stop: watch::Receiver<bool>) {
        // Counters read at start are the baseline: whatever they hold was
        // counted by an earlier run (or is zero), and is not reported again.
        let mut previous: BTreeMap<u16, Counters> =
            self.dataplane.counters().await.map(|c| c.ports).unwrap_or_default();
        // Firewall counters are totals: sent whenever they moved.
        let mut previous_firewall = Vec::new();
        let mut pending: VecDeque<MetricsReport> = VecDeque::new();
        loop {
            let stopping = sleep_or_stop(self.config.report_interval, &mut stop).await;
            match self.dataplane.counters().await {
                Ok(current) => {
                    let delta = CounterDelta::per_port(&previous, &current.ports);
                    previous = current.ports;
                    let firewall_moved = current.firewall != previous_firewall;
                    if !delta.is_empty() || firewall_moved {
                        // A flood over many ports folds into port 0.
                        let mut report = MetricsReport::new(ulid::Ulid::new().to_string(), fold_ports(delta));
                        // No more than the server accepts in a report; the
                        // rest reach it with each sync, which carries them all.
                        report.firewall_counters =
                            current.firewall.iter().take(MAX_REPORT_FIREWALL_COUNTERS).copied().collect();
                        pending.push_back(report);
                        previous_firewall = current.firewall;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %pakkt_core::Report(&error), "cannot read the dataplane's counters");
                }
            }
            while pending.len() > self.config.max_pending_reports {
                pending.pop_front();
                self.stats.reports_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("the server is unreachable for too long: dropped the oldest metrics report");
            }
            self.flush(&mut pending, stopping).await;
            if stopping {
                return;
            }
        }
    }

    /// Sends pending reports in order; stops at the first failure (they are
    /// retried, under the same IDs, next round).
    async fn flush(&self, pending: &mut VecDeque<MetricsReport>, last: bool) {
        while let Some(report) = pending.front() {
            let sent = if last {
                tokio::time::timeout(Duration::from_secs(2), self.control.report_metrics(report)).await.ok()
            } else {
                Some(self.control.report_metrics(report).await)
            };
            match sent {
                Some(Ok(_)) => {
                    self.stats.reports_sent.fetch_add(1, Ordering::Relaxed);
                    pending.pop_front();
                }
                Some(Err(ControlError::Server { status, message })) if (400..500).contains(&status) => {
                    // Refused for what it holds: sending it again changes
                    // nothing, and it would hold back every later report.
                    tracing::error!(status, %message, "the server refused a metrics report; dropped");
                    self.stats.reports_dropped.fetch_add(1, Ordering::Relaxed);
                    pending.pop_front();
                }
                Some(Err(error)) => {
                    tracing::warn!(error = %pakkt_core::Report(&error), pending = pending.len(), "cannot report metrics; will retry");
                    return;
                }
                None => return,
            }
        }
    }
}
