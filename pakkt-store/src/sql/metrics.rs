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

use super::{ReportJob, Result, Tx, WriteOn, dynamic, get, write_batch};
use crate::codec::{backend, corrupt, count, narrow, uncount, us};
use crate::open::Database;

/// Rows per multi-row `INSERT` when storing metrics.
pub(super) const METRIC_BATCH: usize = 32;

impl Database {
    /// Adds `rows` (agent, bucket, port, increments; each key once) to one
    /// metrics table, in multi-row upserts.
    pub(super) async fn add_metrics(tx: &mut Tx, table: &str, rows: &[(&str, i64, u16, Counters)]) -> Result<()> {
        for chunk in rows.chunks(METRIC_BATCH) {
            let mut sql = format!(
                "INSERT INTO {table} (agent_id, bucket, port, packets_passed, packets_dropped, bytes_passed, bytes_dropped) VALUES "
            );
            for i in 0..chunk.len() {
                let b = i * 7;
                if i > 0 {
                    sql.push(',');
                }
                let _ =
                    write!(sql, "(${}, ${}, ${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7);
            }
            // Sums saturate at the largest BIGINT, as the counters
            // themselves do: no report can make the upsert fail (and with it
            // the other reports of its group) or wrap.
            sql.push_str(" ON CONFLICT (agent_id, bucket, port) DO UPDATE SET ");
            for (i, column) in ["packets_passed", "packets_dropped", "bytes_passed", "bytes_dropped"].iter().enumerate()
            {
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
                query = query
                    .bind(*agent)
                    .bind(*bucket)
                    .bind(i64::from(*port))
                    .bind(count(c.packets_passed))
                    .bind(count(c.packets_dropped))
                    .bind(count(c.bytes_passed))
                    .bind(count(c.bytes_dropped));
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
            let mut sums = [0u64; 4];
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum = joined(get(row, &format!("hi{i}"))?, get(row, &format!("lo{i}"))?);
            }
            let [packets_passed, packets_dropped, bytes_passed, bytes_dropped] = sums;
            into.entry(port).or_default().add(Counters {
                packets_passed,
                packets_dropped,
                bytes_passed,
                bytes_dropped,
            });
        }
        Ok(())
    }
}

/// The counter columns of a metrics table, in [`Counters`]' order.
const COUNTER_COLUMNS: [&str; 4] = ["packets_passed", "packets_dropped", "bytes_passed", "bytes_dropped"];

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
        let rows = sqlx::query(dynamic(format!(
            "SELECT bucket, port, packets_passed, packets_dropped, bytes_passed, bytes_dropped FROM {table} \
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
                Ok(MetricBucket {
                    bucket: DateTime::from_timestamp(get(row, "bucket")?, 0).ok_or_else(|| corrupt("bucket"))?,
                    port: narrow(get(row, "port")?, "port")?,
                    counters: Counters {
                        packets_passed: uncount(get(row, "packets_passed")?),
                        packets_dropped: uncount(get(row, "packets_dropped")?),
                        bytes_passed: uncount(get(row, "bytes_passed")?),
                        bytes_dropped: uncount(get(row, "bytes_dropped")?),
                    },
                })
            })
            .collect()
    }
}
