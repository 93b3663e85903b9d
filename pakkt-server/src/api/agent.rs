//! The agent protocol (`docs/agent-protocol.md`): sync and metrics, with
//! the bearer token of one agent.

use std::sync::Arc;
use std::time::Duration;

use pakkt_core::metrics::MetricsReport;
use pakkt_core::service::{MAX_POLL, Pakkt};
use pakkt_core::store::Store;
use pakkt_core::sync::{DesiredState, SyncReport};
use poem_openapi::param::Query;
use poem_openapi::{Object, OpenApi};
use serde::{Deserialize, Serialize};

use super::{AgentAuth, ApiTag, Ok200};
use crate::error::AgentError;
use crate::payload::{AGENT_BODY_LIMIT, Json};

/// The answer to a metrics report.
#[derive(Object, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsStored {
    /// `false` when the report was a retry of one already stored.
    pub stored: bool,
}

/// The agent protocol.
#[derive(Debug)]
pub struct AgentApi<S> {
    core: Arc<Pakkt<S>>,
}

impl<S> AgentApi<S> {
    /// The operations over `core`.
    pub fn new(core: &Arc<Pakkt<S>>) -> Self {
        Self { core: Arc::clone(core) }
    }
}

#[OpenApi(tag = "ApiTag::Agent")]
impl<S: Store> AgentApi<S> {
    /// Report and wait for the desired state
    ///
    /// Records what the agent has applied and what failed, then answers the
    /// whole desired state as soon as its revision differs from the reported
    /// `revision`: at once, on a change (within 100 ms), at the next
    /// blacklist expiry, or after `wait` seconds with the same revision.
    #[oai(path = "/agent/sync", method = "post", operation_id = "agentSync")]
    async fn sync(
        &self,
        auth: AgentAuth,
        /// Longest wait for a change, in seconds (0-25, default 25).
        #[oai(validator(maximum(value = "25")))]
        wait: Query<Option<u8>>,
        report: Json<SyncReport, AGENT_BODY_LIMIT>,
    ) -> Result<Ok200<DesiredState>, AgentError> {
        let wait = wait.0.map_or(MAX_POLL, |s| Duration::from_secs(u64::from(s)));
        Ok(Ok200::Ok(Json(self.core.agent_sync(Some(&auth.0.token), report.0, wait).await?)))
    }

    /// Report traffic metrics
    ///
    /// Per-port increments since the agent's previous report, filed under
    /// the server's current minute. A retry with the same `report_id` is
    /// stored once (`stored: false`).
    #[oai(path = "/agent/metrics", method = "post", operation_id = "agentReportMetrics")]
    async fn metrics(
        &self,
        auth: AgentAuth,
        report: Json<MetricsReport, AGENT_BODY_LIMIT>,
    ) -> Result<Ok200<MetricsStored>, AgentError> {
        let stored = self.core.agent_report_metrics(Some(&auth.0.token), &report.0).await?;
        Ok(Ok200::Ok(Json(MetricsStored { stored })))
    }
}
