//! Traffic metrics of an agent.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use pakkt_core::id::AgentId;
use pakkt_core::metrics::{Interval, Window};
use pakkt_core::service::HistoryQuery;
use pakkt_core::service::Pakkt;
use pakkt_core::store::Store;
use pakkt_core::wire::{MetricBucketView, MetricsSummaryView};
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};

use super::{ApiKeyAuth, ApiTag, Ok200};
use crate::error::{DomainError, ItemError};
use crate::payload::Json;

/// Traffic metrics of an agent.
#[derive(Debug)]
pub struct MetricsApi<S> {
    core: Arc<Pakkt<S>>,
}

impl<S> MetricsApi<S> {
    /// The operations over `core`.
    pub fn new(core: &Arc<Pakkt<S>>) -> Self {
        Self { core: Arc::clone(core) }
    }
}

#[OpenApi(
    tag = "ApiTag::Metrics",
    response_header(
        name = "X-RateLimit-Limit",
        ty = "Option<u32>",
        description = "Requests allowed per rolling minute."
    ),
    response_header(
        name = "X-RateLimit-Remaining",
        ty = "Option<u32>",
        description = "Requests left in the rolling minute."
    ),
    response_header(
        name = "X-RateLimit-Reset",
        ty = "Option<u64>",
        description = "Seconds until a request is allowed again."
    )
)]
impl<S: Store> MetricsApi<S> {
    /// Metrics summary
    ///
    /// Totals over the window and the ten ports with the most packets,
    /// each with its drops by reason (`dropped_by_reason`). Counters are
    /// decimal strings.
    #[oai(path = "/metrics/:agent_id/summary", method = "get", operation_id = "getMetricsSummary")]
    async fn summary(
        &self,
        auth: ApiKeyAuth,
        agent_id: Path<AgentId>,
        /// `10m`, `1h` (default) or `24h`.
        window: Query<Option<Window>>,
    ) -> Result<Ok200<MetricsSummaryView>, ItemError> {
        let window = window.0.unwrap_or_default();
        Ok(Ok200::Ok(Json(self.core.metrics_summary(&auth.0, agent_id.0, window).await?)))
    }

    /// Metrics history
    ///
    /// One row per (bucket, port) for buckets starting in `[from, to)`,
    /// `from` rounded down to the interval, each with its drops by reason
    /// (`dropped_by_reason`). 422 if the range needs more than 1,500
    /// buckets per port at that interval.
    #[oai(path = "/metrics/:agent_id", method = "get", operation_id = "getMetricsHistory")]
    async fn history(
        &self,
        auth: ApiKeyAuth,
        agent_id: Path<AgentId>,
        /// Start, RFC 3339 (default: 24 h before `to`).
        from: Query<Option<DateTime<Utc>>>,
        /// End, RFC 3339 (default: now).
        to: Query<Option<DateTime<Utc>>>,
        /// `1m` (default), `5m` or `1h`.
        interval: Query<Option<Interval>>,
        /// One port only.
        port: Query<Option<u16>>,
    ) -> Result<Ok200<Vec<MetricBucketView>>, DomainError> {
        let query = HistoryQuery { from: from.0, to: to.0, interval: interval.0.unwrap_or_default(), port: port.0 };
        Ok(Ok200::Ok(Json(self.core.metrics_history(&auth.0, agent_id.0, query).await?)))
    }
}
