//! Grouped writes: the syncs and metrics reports many agents send all the time.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pakkt_core::agent::HostInfo;
use pakkt_core::id::AgentId;
use pakkt_core::metrics::{Counters, Interval, MetricsReport};
use pakkt_core::store::StoreError;
use sqlx::AnyPool;

use super::{Result, begin_write, mode_str};
use crate::codec::{backend, count, us};
use crate::open::{Backend, Database};

/// A small write of the kind many agents make all the time; they are
/// committed in groups (see [`crate::group`]).
pub(crate) enum WriteJob {
    /// Record a sync: the agent's host details and when.
    Sync(AgentId, HostInfo, DateTime<Utc>),
    /// Store a metrics report that arrived then.
    Report(AgentId, MetricsReport, DateTime<Utc>),
}

impl WriteJob {
    /// Where the job comes in the one order every batch locks rows in:
    /// by agent, then syncs before reports, reports by ID.
    fn lock_order(&self) -> (AgentId, u8, &str) {
        match self {
            Self::Sync(agent, ..) => (*agent, 0, ""),
            Self::Report(agent, report, _) => (*agent, 1, report.report_id.as_str()),
        }
    }
}

/// Writes a batch, once more if PostgreSQL broke a deadlock or a
/// serialization conflict by aborting it (nothing of it was written).
pub(super) async fn write_batch(
    pool: AnyPool,
    kind: Backend,
    writer: Arc<tokio::sync::Mutex<()>>,
    jobs: Vec<WriteJob>,
) -> Result<Vec<Result<Written>>> {
    match write_batch_once(&pool, kind, &writer, &jobs).await {
        Err(e) if is_retryable(&e) => write_batch_once(&pool, kind, &writer, &jobs).await,
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

/// The outcome of a [`WriteJob`].
pub(crate) enum Written {
    /// The sync is recorded.
    Synced,
    /// The report is stored (`false`: a retry of one already stored).
    Report(bool),
}

pub(super) fn mismatched() -> StoreError {
    StoreError::Backend("a grouped write was not answered as asked".into())
}

/// Writes a batch in one transaction: syncs recorded, then each report's
/// ID stored once per agent, the increments of the fresh ones summed per
/// bucket and port into each resolution, and their firewall counters set.
/// One outcome per job, in order; a job for an unknown agent fails alone.
pub(super) async fn write_batch_once(
    pool: &AnyPool,
    kind: Backend,
    writer: &Arc<tokio::sync::Mutex<()>>,
    jobs: &[WriteJob],
) -> Result<Vec<Result<Written>>> {
    let mut tx = begin_write(pool, kind, writer).await?;
    // Rows are locked in one order (agents, then metric buckets, then
    // firewall counters, each sorted), so that concurrent batches, of one
    // replica or several on one PostgreSQL, cannot deadlock on each other.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| jobs[i].lock_order());
    let mut outcomes: Vec<Option<Result<Written>>> = (0..jobs.len()).map(|_| None).collect();
    let mut fresh_jobs = Vec::new();
    for i in order {
        let outcome = match &jobs[i] {
            WriteJob::Sync(agent, host, now) => {
                let done = sqlx::query(
                    // Two replicas' batches may commit out of order: the
                    // later sync wins, unless the stored one is more than a
                    // minute ahead (a replica whose clock ran fast).
                    "UPDATE agents SET hostname = $1, iface = $2, version = $3, mode = $4, last_seen_at = $5 \
                     WHERE id = $6 AND (last_seen_at IS NULL OR last_seen_at <= $5 OR last_seen_at > $5 + 60000000)",
                )
                .bind(host.hostname.clone())
                .bind(host.iface.clone())
                .bind(host.version.clone())
                .bind(host.mode.map(mode_str))
                .bind(us(*now))
                .bind(agent.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                if done.rows_affected() > 0 {
                    Ok(Written::Synced)
                } else {
                    // A newer sync is already recorded, or the agent is gone.
                    let exists = sqlx::query("SELECT id FROM agents WHERE id = $1")
                        .bind(agent.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if exists.is_some() { Ok(Written::Synced) } else { Err(StoreError::NotFound) }
                }
            }
            WriteJob::Report(agent, report, now) => {
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
                if inserted.rows_affected() > 0 {
                    fresh_jobs.push((agent_text, report, *now));
                    Ok(Written::Report(true))
                } else {
                    let exists = sqlx::query("SELECT id FROM agents WHERE id = $1")
                        .bind(&agent_text)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if exists.is_some() { Ok(Written::Report(false)) } else { Err(StoreError::NotFound) }
                }
            }
        };
        outcomes[i] = Some(outcome);
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
    Ok(outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(mismatched()))).collect())
}
