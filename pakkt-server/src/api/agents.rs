//! `/agents`: the protected hosts.

use std::sync::Arc;

use pakkt_core::id::AgentId;
use pakkt_core::service::Pakkt;
use pakkt_core::store::Store;
use pakkt_core::wire::{AgentView, CreateAgentRequest, CreatedAgent};
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};

use super::page::{Paged, page};
use super::{ApiKeyAuth, ApiTag, Created, Deleted, Ok200};
use crate::error::{AccountError, CreateAgentError, ItemError};
use crate::payload::Json;

/// Agents.
#[derive(Debug)]
pub struct AgentsApi<S> {
    core: Arc<Pakkt<S>>,
}

impl<S> AgentsApi<S> {
    /// The operations over `core`.
    pub fn new(core: &Arc<Pakkt<S>>) -> Self {
        Self { core: Arc::clone(core) }
    }
}

#[OpenApi(
    tag = "ApiTag::Agents",
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
impl<S: Store> AgentsApi<S> {
    /// List agents
    ///
    /// Every agent of the key's account, oldest first. `status` is
    /// `pending` until the agent's first sync, `online` while it synced in
    /// the last 30 s, `offline` after.
    #[oai(path = "/agents", method = "get", operation_id = "listAgents")]
    async fn list_agents(
        &self,
        auth: ApiKeyAuth,
        /// Items per page, 1-1000 (with `after`: 1000 by default). Without
        /// `limit` and `after`, the whole list.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// The last item of the previous page (its `X-Next-After`).
        after: Query<Option<AgentId>>,
    ) -> Result<Paged<AgentView>, AccountError> {
        Ok(page(self.core.list_agents(&auth.0).await?, |a| a.id, limit.0, after.0))
    }

    /// Get an agent
    #[oai(path = "/agents/:id", method = "get", operation_id = "getAgent")]
    async fn get_agent(&self, auth: ApiKeyAuth, id: Path<AgentId>) -> Result<Ok200<AgentView>, ItemError> {
        Ok(Ok200::Ok(Json(self.core.get_agent(&auth.0, id.0).await?)))
    }

    /// Add an agent
    ///
    /// Answers the agent and its one-time `token`: start
    /// `pakkt-agent --server URL --token TOKEN` on the host. The token is
    /// shown only here.
    #[oai(path = "/agents", method = "post", operation_id = "createAgent")]
    async fn create_agent(
        &self,
        auth: ApiKeyAuth,
        body: Json<CreateAgentRequest>,
    ) -> Result<Created<CreatedAgent>, CreateAgentError> {
        Ok(Created::Created(Json(self.core.create_agent(&auth.0, &body.0).await?)))
    }

    /// Delete an agent
    ///
    /// Removes the agent, everything on it, and its token.
    #[oai(path = "/agents/:id", method = "delete", operation_id = "deleteAgent")]
    async fn delete_agent(&self, auth: ApiKeyAuth, id: Path<AgentId>) -> Result<Deleted, ItemError> {
        self.core.delete_agent(&auth.0, id.0).await?;
        Ok(Deleted::NoContent)
    }
}
