//! The JSON payload of every operation.
//!
//! poem-openapi's own `Json` writes values through its `ToJSON` trait, which
//! formats times as `+00:00` and knows nothing of serde attributes. PAKKT's
//! wire types are defined once in `pakkt-core` with serde, for the server and
//! the client alike, so this payload reads and writes them with serde (the
//! bytes are exactly what the client parses) and takes only the schema from
//! poem-openapi's derives.
//!
//! Reading is lenient about the `Content-Type` (`curl -d` sends
//! `application/x-www-form-urlencoded` unless told otherwise) and strict
//! about the body: it must be JSON that fits the type, and at most
//! `LIMIT` bytes. Anything else is a 400 `bad_request` (DESIGN §2).

use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BadRequest;

/// Largest body of a public API request: far above any valid one.
pub const PUBLIC_BODY_LIMIT: usize = 64 * 1024;

/// Largest body of an agent's sync report (up to 200,000 item IDs).
pub const AGENT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// A JSON body or answer, read and written with serde, of at most `LIMIT`
/// bytes when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T, const LIMIT: usize = PUBLIC_BODY_LIMIT>(pub T);

impl<T: Type, const LIMIT: usize> Payload for Json<T, LIMIT> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(_content_type: &str) -> bool {
        true
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + DeserializeOwned, const LIMIT: usize> ParsePayload for Json<T, LIMIT> {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = body
            .take()?
            .into_bytes_limit(LIMIT)
            .await
            .map_err(|e| BadRequest(format!("cannot read the body: {e} (at most {LIMIT} bytes)")))?;
        if bytes.is_empty() {
            return Err(BadRequest("a JSON body is required".into()).into());
        }
        // Every body of the API is an object; serde would also read a
        // struct from an array of its fields in order.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(BadRequest("the body must be a JSON object".into()).into());
        }
        serde_json::from_slice(&bytes).map(Self).map_err(|e| BadRequest(format!("invalid JSON body: {e}")).into())
    }
}

impl<'a, T: Type + DeserializeOwned, const LIMIT: usize> ApiExtractor<'a> for Json<T, LIMIT> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType { content_type: Self::CONTENT_TYPE, schema: T::schema_ref() }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        <Self as ParsePayload>::from_request(request, body).await
    }
}

impl<T: Serialize + Send, const LIMIT: usize> IntoResponse for Json<T, LIMIT> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::builder().content_type(Self::CONTENT_TYPE_STR).body(body),
            Err(e) => {
                tracing::error!(error = %pakkt_core::Report(&e), "cannot serialise an answer");
                crate::error::internal_response()
            }
        }
    }
}

impl<T, const LIMIT: usize> Json<T, LIMIT> {
    const CONTENT_TYPE_STR: &'static str = "application/json; charset=utf-8";
}
