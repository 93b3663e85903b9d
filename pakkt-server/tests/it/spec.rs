//! The committed spec is the one the server generates and serves.

use std::path::PathBuf;

use crate::common::TestServer;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

#[test]
fn docs_openapi_json_is_up_to_date() {
    let generated = pakkt_server::api::spec_json();
    let path = committed();
    if std::env::var_os("PAKKT_UPDATE_SPEC").is_some() {
        std::fs::write(&path, format!("{generated}\n")).expect("write docs/openapi.json");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk.trim_end() == generated.trim_end(),
        "docs/openapi.json differs from the spec the server generates.\n\
         Regenerate it with:\n    cargo run -p pakkt-server -- openapi > docs/openapi.json\n\
         (or PAKKT_UPDATE_SPEC=1 cargo test -p pakkt-server docs_openapi_json_is_up_to_date) and commit it."
    );
}

#[tokio::test]
async fn the_server_serves_its_spec_and_ui() {
    let s = TestServer::start().await;
    let served = s.http.get(format!("{}/openapi.json", s.base)).send().await.expect("spec");
    assert_eq!(served.status(), 200);
    let served: serde_json::Value = served.json().await.expect("json");
    let generated: serde_json::Value = serde_json::from_str(&pakkt_server::api::spec_json()).expect("json");
    assert_eq!(served, generated);
    // Every operation has an ID, a summary, a tag and its error answers.
    let mut ids = std::collections::BTreeSet::new();
    for (path, ops) in served["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("ops") {
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: operationId"));
            assert!(ids.insert(id.to_owned()), "duplicate {id}");
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{id}: summary");
            let tag = op["tags"][0].as_str().expect("tag");
            assert_eq!(tag == "agent", path.starts_with("/agent/"), "{id}: tag {tag}");
            for code in ["400", "401", "500"] {
                let schema = &op["responses"][code]["content"]["application/json; charset=utf-8"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{id}: {code}");
            }
            if tag != "agent" {
                assert!(op["responses"]["429"].is_object(), "{id}: 429");
                assert!(op["responses"]["402"].is_object(), "{id}: 402");
            }
        }
    }
    assert_eq!(ids.len(), 19);
    let ui = s.http.get(format!("{}/docs", s.origin)).send().await.expect("ui");
    assert_eq!(ui.status(), 200);
    let header = |name: &str| ui.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"), "CSP on /docs");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert!(ui.text().await.expect("html").contains("swagger"));
}
