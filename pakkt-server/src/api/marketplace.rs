//! The marketplace: protection templates.

use std::sync::Arc;

use pakkt_core::Error;
use pakkt_core::id::AgentId;
use pakkt_core::service::AppliedTemplate;
use pakkt_core::service::Pakkt;
use pakkt_core::store::Store;
use pakkt_core::template::Category;
use pakkt_core::wire::{EngineRuleView, FirewallRuleView, TemplateView};
use poem_openapi::OpenApi;
use poem_openapi::Union;
use poem_openapi::param::{Path, Query};
use serde::Serialize;

use super::{ApiKeyAuth, ApiTag, Created, Ok200};
use crate::error::{AccountError, CreateError};
use crate::payload::Json;

/// The rule a template created: an engine rule (`xdp` templates) or a
/// firewall rule (`nftables` templates).
#[derive(Union, Serialize, Debug, Clone, PartialEq, Eq)]
#[oai(one_of)]
#[serde(untagged)]
pub enum AppliedRule {
    /// From an `xdp` template.
    Engine(EngineRuleView),
    /// From an `nftables` template.
    Firewall(FirewallRuleView),
}

/// The marketplace: protection templates.
#[derive(Debug)]
pub struct MarketplaceApi<S> {
    core: Arc<Pakkt<S>>,
}

impl<S> MarketplaceApi<S> {
    /// The operations over `core`.
    pub fn new(core: &Arc<Pakkt<S>>) -> Self {
        Self { core: Arc::clone(core) }
    }
}

#[OpenApi(
    tag = "ApiTag::Marketplace",
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
impl<S: Store> MarketplaceApi<S> {
    /// List templates
    ///
    /// Every template, or those of one category. `xdp` templates describe an
    /// engine rule; `nftables` templates carry the firewall rule in `nft`.
    #[oai(path = "/marketplace/templates", method = "get", operation_id = "listTemplates")]
    #[allow(clippy::unused_async)] // poem-openapi operations are async
    async fn list(
        &self,
        auth: ApiKeyAuth,
        /// `Gaming`, `Web`, `Infrastructure` or `Database` (any case).
        category: Query<Option<String>>,
    ) -> Result<Ok200<Vec<TemplateView>>, AccountError> {
        let category = category.0.as_deref().map(str::parse::<Category>).transpose().map_err(Error::from)?;
        Ok(Ok200::Ok(Json(self.core.list_templates(&auth.0, category))))
    }

    /// Apply a template
    ///
    /// Creates the template's rule on the agent, named after the template,
    /// and answers it: an engine rule for `xdp` templates, a firewall rule
    /// for `nftables` ones. The same checks as creating the rule by hand
    /// apply (409 for a duplicate, 422 if the agent never connected).
    #[oai(path = "/agents/:id/templates/:template_id", method = "post", operation_id = "applyTemplate")]
    async fn apply(
        &self,
        auth: ApiKeyAuth,
        id: Path<AgentId>,
        /// The template's ID (`tpl_fivem_shield`).
        template_id: Path<String>,
    ) -> Result<Created<AppliedRule>, CreateError> {
        let applied = match self.core.apply_template(&auth.0, id.0, &template_id.0).await? {
            AppliedTemplate::Engine(rule) => AppliedRule::Engine(rule),
            AppliedTemplate::Firewall(rule) => AppliedRule::Firewall(rule),
        };
        Ok(Created::Created(Json(applied)))
    }
}
