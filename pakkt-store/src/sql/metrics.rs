//! Traffic figures: per-port buckets at three resolutions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use chrono::{DateTime, Duration, DurationRound, Utc};
use pakkt_core::id::AgentId;
use pakkt_core::metrics::{Counters, Interval, MetricBucket, MetricsReport};
use pakkt_core::store::MetricsStore;
use pakkt_core::verdict::{DropCounts, DropReason};

use super::{ReportJob, Result, Tx, WriteOn, dynamic, get, write_batch};
use crate::codec::{backend, corrupt, count, narrow, uncount, us};
use crate::open::Database;

/// Rows per multi-row `INSERT` when storing metrics.
pub(super) const METRIC_BATCH: usize = 32;

impl Database {
    /// Adds `rows` (agent, bucket, port, increments; each key once) to one
    /// metrics table, in multi-row upserts.
    pub(super) async fn add_metrics(tx: &mut Tx, table: &str, rows: &[(&str, i64, u16, Counters)]) -> Result<()> {
        let names = COUNTER_COLUMNS.join(", ");
        let width = 3 + COUNTER_COLUMNS.len();
        for chunk in rows.chunks(METRIC_BATCH) {
            let mut sql = format!("INSERT INTO {table} (agent_id, bucket, port, {names}) VALUES ");
            for i in 0..chunk.len() {
                sql.push_str(if i > 0 { ", (" } else { "(" });
                for column in 0..width {
                    let _ = write!(sql, "{}${}", if column > 0 { ", " } else { "" }, i * width + column + 1);
                }
                sql.push(')');
            }
            // Sums saturate at the largest BIGINT, as the counters
            // themselves do: no report can make the upsert fail (and with it
            // the other reports of its group) or wrap.
            sql.push_str(" ON CONFLICT (agent_id, bucket, port) DO UPDATE SET ");
            for (i, column) in COUNTER_COLUMNS.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(
                    sql,
                    "{column} = CASE WHEN {table}.{column} > {max} - excluded.{column} THEN {max} \
                     ELSE {table}.{column} + excluded.{column} END",
                    max = i64::MAX
                );
            }
            let mut query = sqlx::query(dynamic(sql));
            for (agent, bucket, port, c) in chunk {
                query = query.bind(*agent).bind(*bucket).bind(i64::from(*port));
                for value in counters_to_array(c) {
                    query = query.bind(count(value));
                }
            }
            query.execute(&mut **tx).await.map_err(backend)?;
        }
        Ok(())
    }

    /// Prunes at most once a minute of real time per process.
    pub(super) async fn prune_now_and_then(&self, now: DateTime<Utc>) -> Result<()> {
        let elapsed = i64::try_from(self.opened.elapsed().as_secs()).unwrap_or(i64::MAX);
        let last = self.last_prune.load(Ordering::Relaxed);
        if (last >= 0 && elapsed - last < 60)
            || self.last_prune.compare_exchange(last, elapsed, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return Ok(());
        }
        self.prune_metrics(now).await
    }

    /// Deletes metric buckets and report IDs older than their retention at
    /// `now`. Ingestion calls this about once a minute; call it yourself
    /// to prune at a moment of your choosing.
    pub async fn prune_metrics(&self, now: DateTime<Utc>) -> Result<()> {
        let r = self.retention;
        for (table, keep) in [("metrics_1m", r.minute), ("metrics_5m", r.five_minutes), ("metrics_1h", r.hour)] {
            sqlx::query(dynamic(format!("DELETE FROM {table} WHERE bucket < $1")))
                .bind((now - keep).timestamp())
                .write_on(self)
                .await?
                .map_err(backend)?;
        }
        sqlx::query("DELETE FROM metric_reports WHERE received_at < $1")
            .bind(us(now - r.minute))
            .write_on(self)
            .await?
            .map_err(backend)?;
        Ok(())
    }

    pub(super) async fn sum_by_port(
        &self,
        table: &str,
        agent: AgentId,
        from: i64,
        to: i64,
        into: &mut BTreeMap<u16, Counters>,
    ) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        // Each counter is summed in two halves, its high and its low 32
        // bits, so that no SUM can overflow (a counter saturated at the
        // largest BIGINT, summed twice, would: SQLite fails with "integer
        // overflow", PostgreSQL with "bigint out of range"); the halves are
        // joined here, saturating at the largest u64.
        let mut columns = String::new();
        for (i, column) in COUNTER_COLUMNS.iter().enumerate() {
            let _ = write!(
                columns,
                ", CAST(SUM({column} / 4294967296) AS BIGINT) AS hi{i}, CAST(SUM({column} % 4294967296) AS BIGINT) AS lo{i}"
            );
        }
        let rows = sqlx::query(dynamic(format!(
            "SELECT port{columns} FROM {table} WHERE agent_id = $1 AND bucket >= $2 AND bucket < $3 GROUP BY port"
        )))
        .bind(agent.to_string())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        for row in &rows {
            let port: u16 = narrow(get(row, "port")?, "port")?;
            let mut sums = [0u64; COUNTER_COUNT];
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum = joined(get(row, &format!("hi{i}"))?, get(row, &format!("lo{i}"))?);
            }
            into.entry(port).or_default().add(counters_from_array(sums));
        }
        Ok(())
    }
}

/// How many counter columns a metrics table has: four totals and one per
/// drop reason.
const COUNTER_COUNT: usize = 4 + DropReason::ALL.len();

/// The counter columns of a metrics table, in [`counters_to_array`]'s
/// order: the four totals, then one column per drop reason in
/// [`DropReason::ALL`] order (`dropped_<reason>`).
const COUNTER_COLUMNS: [&str; COUNTER_COUNT] = [
    "packets_passed",
    "packets_dropped",
    "bytes_passed",
    "bytes_dropped",
    "dropped_blacklist",
    "dropped_rule",
    "dropped_rate",
    "dropped_size",
    "dropped_unverified",
    "dropped_reflection",
    "dropped_out_of_state",
    "dropped_fragment",
    "dropped_malformed",
];

/// A row's counters in [`COUNTER_COLUMNS`]' order.
fn counters_to_array(c: &Counters) -> [u64; COUNTER_COUNT] {
    let mut values = [0u64; COUNTER_COUNT];
    let totals = [c.packets_passed, c.packets_dropped, c.bytes_passed, c.bytes_dropped];
    for (value, from) in values.iter_mut().zip(totals.into_iter().chain(c.dropped_by_reason.to_array())) {
        *value = from;
    }
    values
}

/// Counters from values in [`COUNTER_COLUMNS`]' order.
fn counters_from_array(values: [u64; COUNTER_COUNT]) -> Counters {
    let [packets_passed, packets_dropped, bytes_passed, bytes_dropped, reasons @ ..] = values;
    Counters {
        packets_passed,
        packets_dropped,
        bytes_passed,
        bytes_dropped,
        dropped_by_reason: DropCounts::from_array(reasons),
    }
}

/// A sum from its high and low 32-bit halves' sums, saturating.
fn joined(high: i64, low: i64) -> u64 {
    let total = u128::from(uncount(high)) * (1 << 32) + u128::from(uncount(low));
    u64::try_from(total).unwrap_or(u64::MAX)
}

pub(super) fn hour_floor(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::hours(1)).unwrap_or(at)
}

/// The first whole second at or after `at`: buckets are stored in whole
/// seconds, so a bucket starts before `at` exactly when its second is
/// below this (a bare `timestamp()` would drop the bucket that starts in
/// `at`'s own second).
pub(super) fn secs_ceil(at: DateTime<Utc>) -> i64 {
    at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)
}

pub(super) fn hour_ceil(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = hour_floor(at);
    if floor == at { at } else { floor + Duration::hours(1) }
}

#[async_trait]
impl MetricsStore for Database {
    async fn ingest_metrics(&self, agent: AgentId, report: &MetricsReport, now: DateTime<Utc>) -> Result<bool> {
        let (pool, kind, writer) = (self.pool.clone(), self.backend, Arc::clone(&self.writer));
        let job = ReportJob(agent, report.clone(), now);
        let batch = move |syncs, reports| write_batch(pool, kind, writer, syncs, reports);
        let fresh = self.writes.submit_b(job, batch).await?;
        self.prune_now_and_then(now).await?;
        Ok(fresh)
    }

    async fn metrics_by_port(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<u16, Counters>> {
        let mut per_port = BTreeMap::new();
        let (whole_from, whole_to) = (hour_ceil(from), hour_floor(to));
        if whole_from < whole_to {
            self.sum_by_port("metrics_1m", agent, secs_ceil(from), whole_from.timestamp(), &mut per_port).await?;
            self.sum_by_port("metrics_1h", agent, whole_from.timestamp(), whole_to.timestamp(), &mut per_port).await?;
            self.sum_by_port("metrics_1m", agent, whole_to.timestamp(), secs_ceil(to), &mut per_port).await?;
        } else {
            self.sum_by_port("metrics_1m", agent, secs_ceil(from), secs_ceil(to), &mut per_port).await?;
        }
        Ok(per_port)
    }

    async fn metrics_history(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        interval: Interval,
        port: Option<u16>,
    ) -> Result<Vec<MetricBucket>> {
        let table = match interval {
            Interval::Minute => "metrics_1m",
            Interval::FiveMinutes => "metrics_5m",
            Interval::Hour => "metrics_1h",
        };
        let columns = COUNTER_COLUMNS.join(", ");
        let rows = sqlx::query(dynamic(format!(
            "SELECT bucket, port, {columns} FROM {table} \
             WHERE agent_id = $1 AND bucket >= $2 AND bucket < $3 AND ($4 < 0 OR port = $4) ORDER BY bucket, port"
        )))
        .bind(agent.to_string())
        .bind(interval.bucket_of(from).timestamp())
        .bind(secs_ceil(to))
        .bind(port.map_or(-1, i64::from))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let mut values = [0u64; COUNTER_COUNT];
                for (value, column) in values.iter_mut().zip(COUNTER_COLUMNS) {
                    *value = uncount(get(row, column)?);
                }
                Ok(MetricBucket {
                    bucket: DateTime::from_timestamp(get(row, "bucket")?, 0).ok_or_else(|| corrupt("bucket"))?,
                    port: narrow(get(row, "port")?, "port")?,
                    counters: counters_from_array(values),
                })
            })
            .collect()
    }
}
