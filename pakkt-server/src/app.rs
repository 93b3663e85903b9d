//! The routes: the API under `/api/v1`, its spec at
//! `/api/v1/openapi.json`, the interactive UI at `/docs`, all behind the
//! [gate](crate::gate).

use std::sync::Arc;

use pakkt_core::service::Pakkt;
use pakkt_core::store::Store;
use poem::middleware::CatchPanic;
use poem::{Endpoint, EndpointExt, Route};

use crate::api;
use crate::gate::GateLayer;

/// Every route of the server over `core`.
pub fn routes<S: Store>(core: Arc<Pakkt<S>>) -> impl Endpoint + 'static {
    let service = api::service(&core);
    let spec = service.spec_endpoint();
    let ui = service.swagger_ui();
    Route::new()
        .at("/api/v1/openapi.json", spec)
        .nest("/api/v1", service)
        .nest("/docs", ui)
        .with(CatchPanic::new())
        .with(GateLayer::new(core))
}
