//! PAKKT Engine (XDP) rules of an agent.

use std::sync::Arc;

use pakkt_core::id::{AgentId, EngineRuleId};
use pakkt_core::service::Pakkt;
use pakkt_core::store::Store;
use pakkt_core::wire::{CreateEngineRuleRequest, CreatedEngineRule, EngineRuleView};
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};

use super::page::{Paged, page};
use super::{ApiKeyAuth, ApiTag, Created, Deleted};
use crate::error::{CreateError, ItemError};
use crate::payload::Json;

/// PAKKT Engine (XDP) rules of an agent.
#[derive(Debug)]
pub struct EngineRulesApi<S> {
    core: Arc<Pakkt<S>>,
}

impl<S> EngineRulesApi<S> {
    /// The operations over `core`.
    pub fn new(core: &Arc<Pakkt<S>>) -> Self {
        Self { core: Arc::clone(core) }
    }
}

#[OpenApi(
    tag = "ApiTag::EngineRules",
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
impl<S: Store> EngineRulesApi<S> {
    /// List engine rules
    ///
    /// The agent's PAKKT Engine rules, with their slot and status:
    /// `pending_load` until the agent confirms, then `loaded` or `failed`
    /// (with `status_message`); `pending_unload` after a delete until the
    /// agent confirms the unload.
    #[oai(path = "/agents/:id/programs", method = "get", operation_id = "listEngineRules")]
    async fn list(
        &self,
        auth: ApiKeyAuth,
        id: Path<AgentId>,
        /// Items per page, 1-1000 (with `after`: 1000 by default). Without
        /// `limit` and `after`, the whole list.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// The last item of the previous page (its `X-Next-After`).
        after: Query<Option<EngineRuleId>>,
    ) -> Result<Paged<EngineRuleView>, ItemError> {
        Ok(page(self.core.list_engine_rules(&auth.0, id.0).await?, |r| r.id, limit.0, after.0))
    }

    /// Create an engine rule
    ///
    /// Takes the lowest free slot (0-255) on the agent's interface. 409 if a
    /// rule in `pending_load` or `loaded` has exactly the same port range and
    /// an overlapping protocol (equal, or either is 0); 422 if the agent never
    /// connected, the ports do not fit the protocol, the limits do not fit the
    /// rule type, or all 256 slots are held.
    #[oai(path = "/agents/:id/engine-rules", method = "post", operation_id = "createEngineRule")]
    async fn create(
        &self,
        auth: ApiKeyAuth,
        id: Path<AgentId>,
        body: Json<CreateEngineRuleRequest>,
    ) -> Result<Created<CreatedEngineRule>, CreateError> {
        Ok(Created::Created(Json(self.core.create_engine_rule(&auth.0, id.0, &body.0).await?)))
    }

    /// Delete an engine rule
    ///
    /// The rule turns `pending_unload` and keeps its slot until the agent
    /// confirms; a `failed` rule goes at once. Repeating the delete while it
    /// is pending answers 204 again.
    #[oai(path = "/agents/:id/programs/:prog_id", method = "delete", operation_id = "deleteEngineRule")]
    async fn delete(
        &self,
        auth: ApiKeyAuth,
        id: Path<AgentId>,
        prog_id: Path<EngineRuleId>,
    ) -> Result<Deleted, ItemError> {
        self.core.delete_engine_rule(&auth.0, id.0, prog_id.0).await?;
        Ok(Deleted::NoContent)
    }
}
