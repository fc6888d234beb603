//! SageMaker Runtime `InvokeEndpoint` API (`POST /endpoints/{name}/invocations`) in front of the
//! container contract, answering errors in the restJson1 shapes the AWS SDK parses.
//!
//! The SDK reads the error code from the `x-amzn-errortype` header (else `__type`/`code` in the
//! body) and the modelled fields (`Message`, `OriginalStatusCode`, ...) from a single JSON
//! object, so every error carries both the header and a `__type` body field.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Bytes, to_bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::http::{AppState, CUSTOM_ATTRIBUTES_HEADER, JSON, MAX_PAYLOAD_BYTES, invocations};

/// Response header carrying the error code (sent as `X-Amzn-ErrorType`; header names are
/// case-insensitive and HTTP/1 servers send them lower-case).
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";

/// Success header naming the production variant that answered (`x-Amzn-Invoked-Production-Variant`).
pub const INVOKED_VARIANT_HEADER: &str = "x-amzn-invoked-production-variant";

/// The single production variant this test double serves.
pub const PRODUCTION_VARIANT: &str = "AllTraffic";

/// Request id header the SDK exposes as `request_id()` (`x-amzn-RequestId`).
const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// Runtime-API invocation slots: at most `limit` invocations run at once.
#[derive(Clone)]
pub(crate) struct Slots {
    pub(crate) semaphore: Arc<Semaphore>,
    limit: usize,
}

impl Slots {
    pub(crate) fn new(limit: usize) -> Self {
        // Semaphore::new panics above MAX_PERMITS; a limit that large is unlimited in practice.
        let permits = limit.min(Semaphore::MAX_PERMITS);
        Slots {
            semaphore: Arc::new(Semaphore::new(permits)),
            limit,
        }
    }
}

/// The Runtime-API routes, to be merged into the container router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route(
        "/endpoints/{name}/invocations",
        post(invoke_endpoint).layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES)),
    )
}

async fn invoke_endpoint(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Any endpoint name is accepted: this is a test double for one model.
    let name = name.map(|Path(name)| name).unwrap_or_default();
    let mut response = match forward(state, &name, headers, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    if let Ok(id) = HeaderValue::try_from(next_request_id()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), id);
    }
    response
}

/// Checks the request like SageMaker's front end, then calls the container route.
async fn forward(
    state: AppState,
    name: &str,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RuntimeError> {
    // SageMaker validates the request before it looks at the model's state.
    let body = body.map_err(RuntimeError::from_rejection)?;
    if state.not_ready {
        return Err(RuntimeError::new(
            ErrorKind::ModelNotReady,
            format!("Endpoint {name} is not ready to serve inference requests; wait and retry."),
        ));
    }
    // The permit lives until the container has answered, so the configured latency holds it.
    let _permit = match &state.slots {
        Some(slots) => Some(
            Arc::clone(&slots.semaphore)
                .try_acquire_owned()
                .map_err(|_| {
                    RuntimeError::new(
                        ErrorKind::Throttling,
                        format!(
                            "Rate exceeded: endpoint {name} is already serving {} concurrent invocations.",
                            slots.limit
                        ),
                    )
                })?,
        ),
        None => None,
    };
    let (parts, container_body) = invocations(State(state), headers, Ok(body))
        .await
        .into_parts();
    let container_body = to_bytes(container_body, usize::MAX).await.map_err(|e| {
        RuntimeError::new(
            ErrorKind::InternalFailure,
            format!("reading the container's response: {e}"),
        )
    })?;
    if parts.status.is_client_error() || parts.status.is_server_error() {
        return Err(RuntimeError::model_error(
            name,
            parts.status,
            &String::from_utf8_lossy(&container_body),
        ));
    }
    let mut response = (StatusCode::OK, container_body).into_response();
    let out = response.headers_mut();
    for header in [
        CONTENT_TYPE,
        HeaderName::from_static(CUSTOM_ATTRIBUTES_HEADER),
    ] {
        if let Some(value) = parts.headers.get(&header) {
            out.insert(header, value.clone());
        }
    }
    out.insert(
        HeaderName::from_static(INVOKED_VARIANT_HEADER),
        HeaderValue::from_static(PRODUCTION_VARIANT),
    );
    Ok(response)
}

/// A per-process unique id shaped like the UUIDs SageMaker returns.
fn next_request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static NONCE: OnceLock<u32> = OnceLock::new();
    let nonce = *NONCE.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        nanos ^ std::process::id()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{nonce:08x}-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff)
}

/// The SageMaker Runtime errors this double produces, with their HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    /// The container answered 4xx/5xx (424).
    Model,
    /// The endpoint cannot serve yet (429).
    ModelNotReady,
    /// Too many concurrent invocations (400; not modelled by the SDK).
    Throttling,
    /// The request itself is invalid, e.g. over 6 MB (400).
    Validation,
    /// This server failed (500).
    InternalFailure,
}

impl ErrorKind {
    fn code(self) -> &'static str {
        match self {
            ErrorKind::Model => "ModelError",
            ErrorKind::ModelNotReady => "ModelNotReadyException",
            ErrorKind::Throttling => "ThrottlingException",
            ErrorKind::Validation => "ValidationError",
            ErrorKind::InternalFailure => "InternalFailure",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ErrorKind::Model => StatusCode::FAILED_DEPENDENCY,
            ErrorKind::ModelNotReady => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Throttling | ErrorKind::Validation => StatusCode::BAD_REQUEST,
            ErrorKind::InternalFailure => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The container's answer, carried by `ModelError`.
#[derive(Debug)]
struct Original {
    status: u16,
    message: String,
    log_stream_arn: String,
}

#[derive(Debug)]
struct RuntimeError {
    kind: ErrorKind,
    message: String,
    original: Option<Original>,
}

/// Error body; member names are the Smithy model's, as the SDK's shape parsers read them.
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "__type")]
    kind: &'a str,
    #[serde(rename = "Message")]
    message: &'a str,
    #[serde(rename = "OriginalStatusCode", skip_serializing_if = "Option::is_none")]
    original_status_code: Option<u16>,
    #[serde(rename = "OriginalMessage", skip_serializing_if = "Option::is_none")]
    original_message: Option<&'a str>,
    #[serde(rename = "LogStreamArn", skip_serializing_if = "Option::is_none")]
    log_stream_arn: Option<&'a str>,
}

impl RuntimeError {
    fn new(kind: ErrorKind, message: String) -> Self {
        RuntimeError {
            kind,
            message,
            original: None,
        }
    }

    /// `ModelError` for a container that answered `status` with `body`, worded like SageMaker.
    fn model_error(endpoint: &str, status: StatusCode, body: &str) -> Self {
        let side = if status.is_server_error() {
            "server"
        } else {
            "client"
        };
        let log_group = format!("/aws/sagemaker/Endpoints/{endpoint}");
        RuntimeError {
            kind: ErrorKind::Model,
            message: format!(
                "Received {side} error ({}) from primary with message \"{body}\". \
                 See log group {log_group} (the sealbox-model log) for more information.",
                status.as_u16()
            ),
            original: Some(Original {
                status: status.as_u16(),
                message: body.to_owned(),
                // Placeholder account and region: there is no CloudWatch behind this double.
                log_stream_arn: format!(
                    "arn:aws:logs:us-east-1:000000000000:log-group:{log_group}"
                ),
            }),
        }
    }

    fn from_rejection(rejection: BytesRejection) -> Self {
        let message = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "Request payload exceeds the InvokeEndpoint limit of {MAX_PAYLOAD_BYTES} bytes (6 MB)."
            )
        } else {
            format!("Could not read the request body: {}", rejection.body_text())
        };
        Self::new(ErrorKind::Validation, message)
    }
}

impl IntoResponse for RuntimeError {
    fn into_response(self) -> Response {
        match self.kind {
            ErrorKind::InternalFailure => {
                tracing::error!(error = %self.message, "InvokeEndpoint failed")
            }
            ErrorKind::Throttling => {
                tracing::warn!(error = %self.message, "InvokeEndpoint throttled")
            }
            _ => {
                tracing::debug!(code = self.kind.code(), error = %self.message, "InvokeEndpoint error")
            }
        }
        let body = ErrorBody {
            kind: self.kind.code(),
            message: &self.message,
            original_status_code: self.original.as_ref().map(|o| o.status),
            original_message: self.original.as_ref().map(|o| o.message.as_str()),
            log_stream_arn: self.original.as_ref().map(|o| o.log_stream_arn.as_str()),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            // Serialising strings and integers cannot fail; keep a valid shape regardless.
            Err(_) => br#"{"__type":"InternalFailure"}"#.to_vec(),
        };
        (
            self.kind.status(),
            [
                (CONTENT_TYPE, HeaderValue::from_static(JSON)),
                (
                    HeaderName::from_static(ERROR_TYPE_HEADER),
                    HeaderValue::from_static(self.kind.code()),
                ),
            ],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::ModelConfig;
    use crate::http::{CSV, router_with_state};
    use crate::model::IrisModel;
    use axum::body::Body;
    use axum::http::header::ACCEPT;
    use axum::http::{Method, Request};
    use serde_json::Value;
    use std::time::Duration;
    use tower::ServiceExt;

    const CSV_ROWS: &str = "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n";

    fn state(cfg: ModelConfig) -> AppState {
        AppState::new(IrisModel::shared().unwrap(), cfg)
    }

    fn invoke(endpoint: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
        Request::builder()
            .method(Method::POST)
            .uri(format!("/endpoints/{endpoint}/invocations"))
            .header(CONTENT_TYPE, content_type)
            .body(body.into())
            .unwrap()
    }

    async fn send(state: AppState, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let resp = router_with_state(state).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"))
            .to_str()
            .unwrap()
    }

    /// Asserts the error shape the SDK parses and returns the JSON body.
    fn expect_error(
        (status, headers, body): &(StatusCode, HeaderMap, String),
        want_status: StatusCode,
        code: &str,
    ) -> Value {
        assert_eq!(*status, want_status, "{body}");
        assert_eq!(header(headers, "X-Amzn-ErrorType"), code);
        assert_eq!(header(headers, "content-type"), JSON);
        assert!(!header(headers, "x-amzn-RequestId").is_empty());
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["__type"], code, "{body}");
        assert!(!v["Message"].as_str().unwrap().is_empty(), "{body}");
        v
    }

    #[tokio::test]
    async fn invoke_endpoint_returns_model_output_with_variant_and_custom_attributes() {
        for endpoint in ["iris", "any-other-endpoint-1"] {
            let mut req = invoke(endpoint, CSV, CSV_ROWS);
            let h = req.headers_mut();
            h.insert(ACCEPT, HeaderValue::from_static(JSON));
            h.insert(
                "X-Amzn-SageMaker-Custom-Attributes",
                HeaderValue::from_static("trace=abc, tenant=42"),
            );
            h.insert(
                "X-Amzn-SageMaker-Target-Model",
                HeaderValue::from_static("ignored.tar.gz"),
            );
            h.insert(
                "X-Amzn-SageMaker-Inference-Id",
                HeaderValue::from_static("inf-1"),
            );
            let (status, headers, body) = send(state(ModelConfig::default()), req).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(header(&headers, "content-type"), JSON);
            assert_eq!(
                header(&headers, "X-Amzn-SageMaker-Custom-Attributes"),
                "trace=abc, tenant=42, sealbox-consumed-units=2"
            );
            // InvokeEndpoint's answer has no member for the container's metering header.
            assert!(headers.get(crate::http::METERING_HEADER).is_none());
            assert_eq!(
                header(&headers, "x-Amzn-Invoked-Production-Variant"),
                "AllTraffic"
            );
            assert!(!header(&headers, "x-amzn-RequestId").is_empty());
            assert!(headers.get(ERROR_TYPE_HEADER).is_none());
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["predictions"][0]["label"], "setosa");
            assert_eq!(v["predictions"][1]["label"], "virginica");
        }
    }

    #[tokio::test]
    async fn invoke_endpoint_without_custom_attributes_sends_back_only_the_units() {
        let (status, headers, body) =
            send(state(ModelConfig::default()), invoke("iris", CSV, CSV_ROWS)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, "content-type"), CSV);
        assert_eq!(
            header(&headers, CUSTOM_ATTRIBUTES_HEADER),
            "sealbox-consumed-units=2"
        );
        assert_eq!(body.lines().count(), 2);
    }

    #[tokio::test]
    async fn bad_csv_is_model_error_424_with_original_status_400() {
        let mut req = invoke("iris", CSV, "5.1,3.5,1.4\n");
        req.headers_mut().insert(
            "X-Amzn-SageMaker-Custom-Attributes",
            HeaderValue::from_static("trace=abc"),
        );
        let got = send(state(ModelConfig::default()), req).await;
        let v = expect_error(&got, StatusCode::FAILED_DEPENDENCY, "ModelError");
        assert_eq!(v["OriginalStatusCode"], 400);
        // OriginalMessage is the container's body text, verbatim.
        let original = v["OriginalMessage"].as_str().unwrap();
        let container: Value = serde_json::from_str(original).unwrap();
        assert_eq!(container["line"], 1);
        assert!(
            container["error"]
                .as_str()
                .unwrap()
                .contains("expected 4 columns, got 3")
        );
        let message = v["Message"].as_str().unwrap();
        assert!(
            message.starts_with("Received client error (400) from primary with message"),
            "{message}"
        );
        assert!(message.contains(original), "{message}");
        assert_eq!(
            v["LogStreamArn"],
            "arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/iris"
        );
        // SageMaker's own errors do not carry the container's headers.
        assert!(got.1.get(CUSTOM_ATTRIBUTES_HEADER).is_none());
    }

    #[tokio::test]
    async fn sdk_default_content_type_is_model_error_with_original_status_415() {
        // The SDK sends application/octet-stream when the caller sets no ContentType.
        let got = send(
            state(ModelConfig::default()),
            invoke("iris", "application/octet-stream", CSV_ROWS),
        )
        .await;
        let v = expect_error(&got, StatusCode::FAILED_DEPENDENCY, "ModelError");
        assert_eq!(v["OriginalStatusCode"], 415);
    }

    #[test]
    fn container_5xx_is_worded_as_server_error() {
        let err = RuntimeError::model_error("iris", StatusCode::INTERNAL_SERVER_ERROR, "boom");
        assert_eq!(err.kind.status(), StatusCode::FAILED_DEPENDENCY);
        assert!(
            err.message
                .starts_with("Received server error (500) from primary with message \"boom\""),
            "{}",
            err.message
        );
        let original = err.original.unwrap();
        assert_eq!((original.status, original.message.as_str()), (500, "boom"));
    }

    #[tokio::test]
    async fn concurrency_over_max_is_throttling_exception_400() {
        let cfg = ModelConfig {
            // Only holds the first call's slot; the test aborts that call instead of waiting.
            latency: Duration::from_secs(600),
            max_concurrency: Some(1),
            not_ready: false,
        };
        let state = state(cfg);
        let semaphore = Arc::clone(&state.slots.as_ref().unwrap().semaphore);
        let first = tokio::spawn(send(state.clone(), invoke("iris", CSV, CSV_ROWS)));
        while semaphore.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let got = send(state, invoke("iris", CSV, CSV_ROWS)).await;
        let v = expect_error(&got, StatusCode::BAD_REQUEST, "ThrottlingException");
        assert!(v.get("OriginalStatusCode").is_none());
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        // Dropping the in-flight call gives its slot back.
        assert_eq!(semaphore.available_permits(), 1);
    }

    #[tokio::test]
    async fn slots_are_released_after_each_invocation() {
        let cfg = ModelConfig {
            max_concurrency: Some(1),
            ..ModelConfig::default()
        };
        let state = state(cfg);
        for _ in 0..3 {
            let (status, _, body) = send(state.clone(), invoke("iris", CSV, CSV_ROWS)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        // A refused input still frees its slot.
        let got = send(state.clone(), invoke("iris", CSV, "x")).await;
        expect_error(&got, StatusCode::FAILED_DEPENDENCY, "ModelError");
        let (status, _, _) = send(state, invoke("iris", CSV, CSV_ROWS)).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn not_ready_is_model_not_ready_exception_429() {
        let cfg = ModelConfig {
            not_ready: true,
            ..ModelConfig::default()
        };
        let got = send(state(cfg), invoke("iris", CSV, CSV_ROWS)).await;
        let v = expect_error(
            &got,
            StatusCode::TOO_MANY_REQUESTS,
            "ModelNotReadyException",
        );
        assert!(v["Message"].as_str().unwrap().contains("iris"));
    }

    #[tokio::test]
    async fn body_over_6_mb_is_validation_error_400() {
        let row = "5.1,3.5,1.4,0.2\n";
        let body = row.repeat(MAX_PAYLOAD_BYTES / row.len() + 1);
        assert!(body.len() > MAX_PAYLOAD_BYTES);
        let got = send(state(ModelConfig::default()), invoke("iris", CSV, body)).await;
        let v = expect_error(&got, StatusCode::BAD_REQUEST, "ValidationError");
        assert!(v["Message"].as_str().unwrap().contains("6 MB"));
    }

    #[tokio::test]
    async fn container_routes_ignore_runtime_limits() {
        let cfg = ModelConfig {
            max_concurrency: Some(0),
            not_ready: true,
            ..ModelConfig::default()
        };
        let ping = Request::get("/ping").body(Body::empty()).unwrap();
        let (status, _, _) = send(state(cfg), ping).await;
        assert_eq!(status, StatusCode::OK);
        let req = Request::post("/invocations")
            .header(CONTENT_TYPE, CSV)
            .body(Body::from(CSV_ROWS))
            .unwrap();
        let (status, headers, _) = send(state(cfg), req).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get(INVOKED_VARIANT_HEADER).is_none());
    }

    #[tokio::test]
    async fn zero_max_concurrency_throttles_every_call() {
        let cfg = ModelConfig {
            max_concurrency: Some(0),
            ..ModelConfig::default()
        };
        let got = send(state(cfg), invoke("iris", CSV, CSV_ROWS)).await;
        expect_error(&got, StatusCode::BAD_REQUEST, "ThrottlingException");
    }

    #[tokio::test]
    async fn get_on_runtime_invocations_is_405() {
        let req = Request::get("/endpoints/iris/invocations")
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = send(state(ModelConfig::default()), req).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn request_ids_are_unique_and_uuid_shaped() {
        let (a, b) = (next_request_id(), next_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn huge_max_concurrency_does_not_panic() {
        let slots = Slots::new(usize::MAX);
        assert_eq!(slots.semaphore.available_permits(), Semaphore::MAX_PERMITS);
    }
}
