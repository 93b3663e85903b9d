//! The routes: the API under `/api/v1`, its spec at
//! `/api/v1/openapi.json`, the interactive UI at `/docs`, all behind the
//! [gate](crate::gate); the [web panel](crate::web) at `/`, in front of
//! them and outside the gate.

use std::sync::Arc;

use pakkt_core::service::Pakkt;
use pakkt_core::store::Store;
use poem::middleware::{CatchPanic, SetHeader};
use poem::{Endpoint, EndpointExt, Route};

use crate::api;
use crate::gate::GateLayer;
use crate::telemetry::{Telemetry, TelemetryLayer};

/// Every route of the server over `core`, counted and timed by
/// `telemetry` (which also answers `/metrics` when it shares this
/// listener).
pub fn routes<S: Store>(core: Arc<Pakkt<S>>, telemetry: &Arc<Telemetry>) -> impl Endpoint + 'static {
    let service = api::service(&core);
    let spec = api::spec::tidy(&service.spec());
    let spec = poem::endpoint::make_sync(move |_| {
        poem::Response::builder().content_type("application/json").body(spec.clone())
    });
    let ui = service.swagger_ui().with(docs_headers());
    let api = Route::new()
        .at("/api/v1/openapi.json", spec)
        .nest("/api/v1", service)
        .nest("/docs", ui)
        .with(CatchPanic::new())
        .with(GateLayer::new(Arc::clone(&core)));
    // The web panel answers its own paths and hands the rest to the API.
    crate::web::mount(core, api).with(CatchPanic::new()).with(TelemetryLayer(Arc::clone(telemetry)))
}

/// The security headers of the interactive UI at `/docs`. Its page carries
/// its script and styles inline, so they are allowed inline; nothing else
/// is loaded from elsewhere, it may not be framed, and "Try it out" calls
/// only this server.
fn docs_headers() -> SetHeader {
    SetHeader::new()
        .overriding(
            poem::http::header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; font-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        )
        .overriding(poem::http::header::X_FRAME_OPTIONS, "DENY")
        .overriding(poem::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .overriding(poem::http::header::REFERRER_POLICY, "same-origin")
}
