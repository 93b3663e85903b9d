//! nftables firewall rules of an agent.

use std::sync::Arc;

use pakkt_core::id::{AgentId, FirewallRuleId};
use pakkt_core::service::Pakkt;
use pakkt_core::store::Store;
use pakkt_core::wire::{CreateFirewallRuleRequest, CreatedFirewallRule, FirewallRuleView};
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};

use super::page::{Paged, page};
use super::{ApiKeyAuth, ApiTag, Created, Deleted};
use crate::error::{DomainError, ItemError};
use crate::payload::Json;

/// nftables firewall rules of an agent.
#[derive(Debug)]
pub struct FirewallApi<S> {
    core: Arc<Pakkt<S>>,
}

impl<S> FirewallApi<S> {
    /// The operations over `core`.
    pub fn new(core: &Arc<Pakkt<S>>) -> Self {
        Self { core: Arc::clone(core) }
    }
}

#[OpenApi(
    tag = "ApiTag::Firewall",
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
impl<S: Store> FirewallApi<S> {
    /// List firewall rules
    ///
    /// In evaluation order: the system rules (`is_system: true`) first, then
    /// the user's rules in creation order.
    #[oai(path = "/agents/:id/firewall", method = "get", operation_id = "listFirewallRules")]
    async fn list(
        &self,
        auth: ApiKeyAuth,
        id: Path<AgentId>,
        /// Items per page, 1-1000 (with `after`: 1000 by default). Without
        /// `limit` and `after`, the whole list.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// The last item of the previous page (its `X-Next-After`).
        after: Query<Option<FirewallRuleId>>,
    ) -> Result<Paged<FirewallRuleView>, ItemError> {
        Ok(page(self.core.list_firewall_rules(&auth.0, id.0).await?, |r| r.id, limit.0, after.0))
    }

    /// Create a firewall rule
    ///
    /// `limit` needs `limit_rate` and `limit_unit`; ports only with `tcp` or
    /// `udp`. `pending_add` until the agent confirms, then `active`.
    #[oai(path = "/agents/:id/firewall", method = "post", operation_id = "createFirewallRule")]
    async fn create(
        &self,
        auth: ApiKeyAuth,
        id: Path<AgentId>,
        body: Json<CreateFirewallRuleRequest>,
    ) -> Result<Created<CreatedFirewallRule>, DomainError> {
        Ok(Created::Created(Json(self.core.create_firewall_rule(&auth.0, id.0, &body.0).await?)))
    }

    /// Delete a firewall rule
    ///
    /// The rule turns `pending_remove`, then goes when the agent confirms.
    /// System rules cannot be deleted (422).
    #[oai(path = "/agents/:id/firewall/:rule_id", method = "delete", operation_id = "deleteFirewallRule")]
    async fn delete(
        &self,
        auth: ApiKeyAuth,
        id: Path<AgentId>,
        rule_id: Path<FirewallRuleId>,
    ) -> Result<Deleted, DomainError> {
        self.core.delete_firewall_rule(&auth.0, id.0, rule_id.0).await?;
        Ok(Deleted::NoContent)
    }
}
