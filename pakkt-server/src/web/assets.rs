//! The panel's stylesheet and script, compiled into the binary.
//!
//! Both are small and hand-written (`static/panel.css`, `static/panel.js`):
//! nothing to build, nothing to fetch at run time.

use poem::Response;
use poem::http::StatusCode;

/// The stylesheet.
pub const CSS: &str = include_str!("static/panel.css");

/// The script: refreshes the `data-live` parts of a page.
pub const JS: &str = include_str!("static/panel.js");

/// The asset called `name`, if there is one.
pub fn serve(name: &str) -> Option<Response> {
    let (body, kind) = match name {
        "panel.css" => (CSS, "text/css; charset=utf-8"),
        "panel.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    Some(
        Response::builder()
            .status(StatusCode::OK)
            .content_type(kind)
            .header("cache-control", "public, max-age=3600")
            .body(body),
    )
}
