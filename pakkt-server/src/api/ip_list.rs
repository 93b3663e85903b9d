//! IP whitelist and blacklist entries of an agent.

use std::sync::Arc;

use pakkt_core::id::{AgentId, IpEntryId};
use pakkt_core::ip_list::ListType;
use pakkt_core::service::Pakkt;
use pakkt_core::store::Store;
use pakkt_core::wire::{CreateIpEntryRequest, CreatedIpEntry, IpEntryView};
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};

use super::page::{Paged, page};
use super::{ApiKeyAuth, ApiTag, Created, Deleted};
use crate::error::{CreateError, ItemError};
use crate::payload::Json;

/// IP whitelist and blacklist entries of an agent.
#[derive(Debug)]
pub struct IpListApi<S> {
    core: Arc<Pakkt<S>>,
}

impl<S> IpListApi<S> {
    /// The operations over `core`.
    pub fn new(core: &Arc<Pakkt<S>>) -> Self {
        Self { core: Arc::clone(core) }
    }
}

#[OpenApi(
    tag = "ApiTag::IpList",
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
impl<S: Store> IpListApi<S> {
    /// List IP entries
    ///
    /// Whitelist and blacklist entries, oldest first; `type` keeps one list.
    /// Expired blacklist entries are gone.
    #[oai(path = "/agents/:id/ip-list", method = "get", operation_id = "listIpEntries")]
    async fn list(
        &self,
        auth: ApiKeyAuth,
        id: Path<AgentId>,
        /// `blacklist` or `whitelist`; both when omitted.
        #[oai(name = "type")]
        list_type: Query<Option<ListType>>,
        /// Items per page, 1-1000 (with `after`: 1000 by default). Without
        /// `limit` and `after`, the whole list.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// The last item of the previous page (its `X-Next-After`).
        after: Query<Option<IpEntryId>>,
    ) -> Result<Paged<IpEntryView>, ItemError> {
        Ok(page(self.core.list_ip_entries(&auth.0, id.0, list_type.0).await?, |e| e.id, limit.0, after.0))
    }

    /// Add an IP entry
    ///
    /// An IPv4 or IPv6 address or CIDR prefix; `pending_add` until the agent
    /// confirms, then `active`. 409 if the prefix is already on that list;
    /// 422 for host bits set beyond the prefix, or an `expires_at` that is in
    /// the past or on a whitelist entry.
    #[oai(path = "/agents/:id/ip-list", method = "post", operation_id = "createIpEntry")]
    async fn create(
        &self,
        auth: ApiKeyAuth,
        id: Path<AgentId>,
        body: Json<CreateIpEntryRequest>,
    ) -> Result<Created<CreatedIpEntry>, CreateError> {
        Ok(Created::Created(Json(self.core.create_ip_entry(&auth.0, id.0, &body.0).await?)))
    }

    /// Remove an IP entry
    ///
    /// The entry turns `pending_remove`, then goes when the agent confirms.
    #[oai(path = "/agents/:id/ip-list/:entry_id", method = "delete", operation_id = "deleteIpEntry")]
    async fn delete(
        &self,
        auth: ApiKeyAuth,
        id: Path<AgentId>,
        entry_id: Path<IpEntryId>,
    ) -> Result<Deleted, ItemError> {
        self.core.delete_ip_entry(&auth.0, id.0, entry_id.0).await?;
        Ok(Deleted::NoContent)
    }
}
