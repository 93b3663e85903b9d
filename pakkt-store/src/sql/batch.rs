//! Grouped writes: the syncs and metrics reports many agents send all the time.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pakkt_core::agent::HostInfo;
use pakkt_core::id::AgentId;
use pakkt_core::metrics::{Counters, Interval, MetricsReport};
use pakkt_core::store::StoreError;
use sqlx::AnyPool;

use super::{Result, begin_write, egress_str, mode_str};
use crate::codec::{backend, count, us};
use crate::group::{GroupCommit, Outcomes};
use crate::open::{Backend, Database};

/// A sync to record: the agent's host details and when. Answered with `()`.
pub(crate) struct SyncJob(pub AgentId, pub HostInfo, pub DateTime<Utc>);

/// A metrics report that arrived then. Answered with whether it was
/// stored (`false`: a retry of one already stored).
pub(crate) struct ReportJob(pub AgentId, pub MetricsReport, pub DateTime<Utc>);

/// The group commit of the small writes many agents make all the time:
/// syncs and reports share batches (see [`crate::group`]).
pub(crate) type Writes = GroupCommit<SyncJob, (), ReportJob, bool>;

/// One job of a batch, in the one order every batch locks rows in: by
/// agent, then syncs before reports, reports by ID.
enum Step<'a> {
    Sync(usize, &'a SyncJob),
    Report(usize, &'a ReportJob),
}

impl Step<'_> {
    fn lock_order(&self) -> (AgentId, u8, &str) {
        match self {
            Self::Sync(_, job) => (job.0, 0, ""),
            Self::Report(_, job) => (job.0, 1, job.1.report_id.as_str()),
        }
    }
}

/// Writes a batch, once more if PostgreSQL broke a deadlock or a
/// serialization conflict by aborting it (nothing of it was written).
pub(super) async fn write_batch(
    pool: AnyPool,
    kind: Backend,
    writer: Arc<tokio::sync::Mutex<()>>,
    syncs: Vec<SyncJob>,
    reports: Vec<ReportJob>,
) -> Result<Outcomes<(), bool>> {
    match write_batch_once(&pool, kind, &writer, &syncs, &reports).await {
        Err(e) if is_retryable(&e) => write_batch_once(&pool, kind, &writer, &syncs, &reports).await,
        outcome => outcome,
    }
}

/// A deadlock (40P01) or serialization failure (40001).
pub(super) fn is_retryable(e: &StoreError) -> bool {
    database_error(e).and_then(sqlx::error::DatabaseError::code).is_some_and(|code| code == "40P01" || code == "40001")
}

/// The database's own error behind a store error, if that is what it is.
pub(super) fn database_error(e: &StoreError) -> Option<&dyn sqlx::error::DatabaseError> {
    let StoreError::Backend(cause) = e else { return None };
    cause.downcast_ref::<sqlx::Error>().and_then(sqlx::Error::as_database_error)
}

/// Writes a batch in one transaction: syncs recorded, then each report's
/// ID stored once per agent, the increments of the fresh ones summed per
/// bucket and port into each resolution, and their firewall counters set.
/// One outcome per job, in order; a job for an unknown agent fails alone.
async fn write_batch_once(
    pool: &AnyPool,
    kind: Backend,
    writer: &Arc<tokio::sync::Mutex<()>>,
    syncs: &[SyncJob],
    reports: &[ReportJob],
) -> Result<Outcomes<(), bool>> {
    let mut tx = begin_write(pool, kind, writer).await?;
    // Rows are locked in one order (agents, then metric buckets, then
    // firewall counters, each sorted), so that concurrent batches, of one
    // replica or several on one PostgreSQL, cannot deadlock on each other.
    let mut steps: Vec<Step<'_>> = syncs.iter().enumerate().map(|(i, job)| Step::Sync(i, job)).collect();
    steps.extend(reports.iter().enumerate().map(|(i, job)| Step::Report(i, job)));
    steps.sort_by(|x, y| x.lock_order().cmp(&y.lock_order()));
    let mut synced: Vec<Result<()>> = syncs.iter().map(|_| Err(lost_in_batch())).collect();
    let mut stored: Vec<Result<bool>> = reports.iter().map(|_| Err(lost_in_batch())).collect();
    let mut fresh_jobs = Vec::new();
    for step in steps {
        match step {
            Step::Sync(i, SyncJob(agent, host, now)) => {
                let done = sqlx::query(
                    // Two replicas' batches may commit out of order: the
                    // later sync wins, unless the stored one is more than a
                    // minute ahead (a replica whose clock ran fast).
                    "UPDATE agents SET hostname = $1, iface = $2, version = $3, mode = $4, egress_mode = $5, \
                     last_seen_at = $6 \
                     WHERE id = $7 AND (last_seen_at IS NULL OR last_seen_at <= $6 OR last_seen_at > $6 + 60000000)",
                )
                .bind(host.hostname.clone())
                .bind(host.iface.clone())
                .bind(host.version.clone())
                .bind(host.mode.map(mode_str))
                .bind(host.egress.map(egress_str))
                .bind(us(*now))
                .bind(agent.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                synced[i] = if done.rows_affected() > 0 {
                    Ok(())
                } else {
                    // A newer sync is already recorded, or the agent is gone.
                    let exists = sqlx::query("SELECT id FROM agents WHERE id = $1")
                        .bind(agent.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if exists.is_some() { Ok(()) } else { Err(StoreError::NotFound) }
                };
            }
            Step::Report(i, ReportJob(agent, report, now)) => {
                let agent_text = agent.to_string();
                let inserted = sqlx::query(
                    "INSERT INTO metric_reports (agent_id, report_id, received_at) \
                     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM agents WHERE id = $1) \
                     ON CONFLICT (agent_id, report_id) DO NOTHING",
                )
                .bind(&agent_text)
                .bind(&report.report_id)
                .bind(us(*now))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                stored[i] = if inserted.rows_affected() > 0 {
                    fresh_jobs.push((agent_text, report, *now));
                    Ok(true)
                } else {
                    let exists = sqlx::query("SELECT id FROM agents WHERE id = $1")
                        .bind(&agent_text)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if exists.is_some() { Ok(false) } else { Err(StoreError::NotFound) }
                };
            }
        }
    }
    for (table, interval) in
        [("metrics_1m", Interval::Minute), ("metrics_5m", Interval::FiveMinutes), ("metrics_1h", Interval::Hour)]
    {
        let mut sums: BTreeMap<(&str, i64, u16), Counters> = BTreeMap::new();
        for (agent, report, now) in &fresh_jobs {
            let bucket = interval.bucket_of(*now).timestamp();
            for sample in report.ports.iter().filter(|s| !s.counters.is_zero()) {
                sums.entry((agent.as_str(), bucket, sample.port)).or_default().add(sample.counters);
            }
        }
        let rows: Vec<(&str, i64, u16, Counters)> =
            sums.into_iter().map(|((agent, bucket, port), c)| (agent, bucket, port, c)).collect();
        Database::add_metrics(&mut tx, table, &rows).await?;
    }
    // Counters are totals: per rule, the last report (by ID) wins; rules
    // are updated in sorted order.
    let mut counters: BTreeMap<(&str, String), (u64, u64)> = BTreeMap::new();
    for (agent, report, _) in &fresh_jobs {
        for counter in &report.firewall_counters {
            counters.insert((agent.as_str(), counter.id.to_string()), (counter.packets, counter.bytes));
        }
    }
    for ((agent, rule), (packets, bytes)) in counters {
        sqlx::query("UPDATE firewall_rules SET packets_total = $1, bytes_total = $2 WHERE id = $3 AND agent_id = $4")
            .bind(count(packets))
            .bind(count(bytes))
            .bind(rule)
            .bind(agent)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    Database::commit(tx).await?;
    Ok((synced, stored))
}

/// The outcome of a job that a batch wrote but never reached: cannot
/// happen, since every step answers its job.
fn lost_in_batch() -> StoreError {
    StoreError::Backend("a grouped write was not answered".into())
}
