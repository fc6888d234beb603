//! Endpoint over SageMaker Runtime `InvokeEndpoint`: content type, accept and custom attributes
//! go through as SageMaker passes them to the container; the answer's body, content type and
//! custom attributes come back. Payloads over the limit are refused before any call.
//!
//! SageMaker wraps the container's own answer in `ModelError` (HTTP 424) with the container's
//! status as `OriginalStatusCode`, so that status is classified exactly as the embedded
//! `HttpEndpoint` classifies the container's status: a given model behaviour gives the same
//! port error, hence the same reason code, on both backends. Only what the model itself says
//! about the input is permanent; everything about the endpoint, the service or the call is
//! retryable (the worker retries, and dead-letters after its receives).
//!
//! | SageMaker answer | port error | reason / handling |
//! | --- | --- | --- |
//! | payload over the limit (checked before the call) | `PayloadTooLarge` | `input_too_large` |
//! | `ModelError`, `OriginalStatusCode` 4xx except 408, 424, 429 | `ModelRejected { status: original }` | `model_rejected_input` |
//! | `ModelError`, `OriginalStatusCode` 424 | `ModelFailed { status: 424 }` | `model_error` |
//! | `ModelError`, `OriginalStatusCode` 408 or 429 | `EndpointUnavailable` | retried |
//! | `ModelError`, `OriginalStatusCode` 5xx, 0 (container timed out) or absent | `EndpointUnavailable` | retried |
//! | `ValidationError` naming something not found (the endpoint) | `EndpointUnavailable` | retried: a deployment fault, not the input's |
//! | any other `ValidationError` (what SageMaker refuses of the request itself) | `ModelRejected { status: 400 }` | `model_rejected_input` |
//! | `ModelNotReadyException` (429) | `EndpointUnavailable` | retried |
//! | `ThrottlingException` (400, not modelled by the SDK) | `EndpointUnavailable` | retried |
//! | `ServiceUnavailable`, `InternalFailure`, `InternalDependencyException` | `EndpointUnavailable` | retried |
//! | any other error code, whatever its status (e.g. `AccessDeniedException`) | `EndpointUnavailable` | retried: the model did not answer |
//! | timeout, dispatch failure (connection refused), unreadable response, request not built | `EndpointUnavailable` | retried |
//! | an answer over 12,000,000 bytes | `ResponseTooLarge` | `model_response_too_large` |
//!
//! The message of `ModelRejected`/`ModelFailed` is the container's own body (`OriginalMessage`,
//! at most 512 bytes), as the embedded adapter reports it.

use async_trait::async_trait;
use aws_sdk_sagemakerruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::types::error::ModelError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::Blob;
use aws_smithy_types::error::display::DisplayErrorContext;
use bytes::Bytes;

use sealbox_core::contract::DEFAULT_PAYLOAD_LIMIT;
use sealbox_core::ports::endpoint::{
    Endpoint, Invocation, InvocationOutput, consumed_units_from_custom_attributes,
};
use sealbox_core::{Error, Result};

/// Largest answer accepted, as the embedded adapter's cap (SageMaker itself answers at most
/// 6 MB; the same cap keeps `model_response_too_large` the same on both backends).
pub const MAX_RESPONSE_BYTES: u64 = 12 * 1000 * 1000;

/// Most bytes of the container's message kept in an error, as the embedded adapter keeps.
const MAX_MESSAGE_BYTES: usize = 512;

/// A SageMaker real-time endpoint reached with `InvokeEndpoint`.
#[derive(Debug, Clone)]
pub struct SageMakerEndpoint {
    client: aws_sdk_sagemakerruntime::Client,
    name: String,
    payload_limit: u64,
}

impl SageMakerEndpoint {
    /// The endpoint `name`, through `client` (built by [`crate::sdk::Clients`]: one attempt,
    /// bounded), with the contract's payload limit ([`DEFAULT_PAYLOAD_LIMIT`]).
    pub fn new(client: aws_sdk_sagemakerruntime::Client, name: impl Into<String>) -> Self {
        SageMakerEndpoint {
            client,
            name: name.into(),
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
        }
    }

    /// The same endpoint with another payload limit.
    pub fn with_payload_limit(mut self, limit: u64) -> Self {
        self.payload_limit = limit;
        self
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait]
impl Endpoint for SageMakerEndpoint {
    async fn invoke(&self, inv: Invocation) -> Result<InvocationOutput> {
        let size = inv.body.len() as u64;
        if size > self.payload_limit {
            return Err(Error::PayloadTooLarge {
                size,
                limit: self.payload_limit,
            });
        }
        let out = self
            .client
            .invoke_endpoint()
            .endpoint_name(&self.name)
            .content_type(&inv.content_type)
            .accept(&inv.accept)
            .set_custom_attributes(inv.custom_attributes)
            .body(Blob::new(Vec::from(inv.body)))
            .send()
            .await
            .map_err(|e| classify(&self.name, e))?;
        let body = out.body.map(Blob::into_inner).unwrap_or_default();
        if body.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(Error::ResponseTooLarge {
                limit: MAX_RESPONSE_BYTES,
            });
        }
        Ok(InvocationOutput {
            body: Bytes::from(body),
            // As the embedded adapter: an answer without a type is taken to be what was asked.
            content_type: out.content_type.unwrap_or(inv.accept),
            // InvokeEndpoint's answer models none of the container's headers but its custom
            // attributes (`X-Amzn-Inference-Metering` is not among its outputs), so a model
            // that wants its metering seen repeats it there.
            consumed_units: out
                .custom_attributes
                .as_deref()
                .and_then(consumed_units_from_custom_attributes),
            custom_attributes: out.custom_attributes,
        })
    }

    fn payload_limit(&self) -> u64 {
        self.payload_limit
    }
}

fn unavailable(message: String) -> Error {
    // SageMaker sends no Retry-After; the worker's own backoff decides.
    Error::EndpointUnavailable {
        message,
        retry_after: None,
    }
}

/// An `InvokeEndpoint` failure as a port error (see the table in the module doc).
fn classify(endpoint: &str, err: SdkError<InvokeEndpointError, HttpResponse>) -> Error {
    match &err {
        SdkError::ServiceError(ctx) => {
            classify_service(endpoint, ctx.err(), ctx.raw().status().as_u16())
        }
        SdkError::TimeoutError(_) => unavailable(format!(
            "endpoint {endpoint} timed out: {}",
            DisplayErrorContext(&err)
        )),
        SdkError::DispatchFailure(_) => unavailable(format!(
            "endpoint {endpoint} not reached: {}",
            DisplayErrorContext(&err)
        )),
        _ => unavailable(format!(
            "invoking endpoint {endpoint} failed: {}",
            DisplayErrorContext(&err)
        )),
    }
}

/// An error SageMaker answered with HTTP `status`, as a port error.
fn classify_service(endpoint: &str, err: &InvokeEndpointError, status: u16) -> Error {
    match err {
        InvokeEndpointError::ModelError(m) => classify_model_error(endpoint, m),
        InvokeEndpointError::ValidationError(v) => {
            let message = v.message().unwrap_or("validation error").to_owned();
            // "Endpoint X of account Y not found.": the deployment is wrong, not the input.
            if message.to_ascii_lowercase().contains("not found") {
                unavailable(format!("endpoint {endpoint}: {message}"))
            } else {
                Error::ModelRejected {
                    status: 400,
                    message: truncate(&message),
                }
            }
        }
        InvokeEndpointError::ModelNotReadyException(e) => unavailable(format!(
            "endpoint {endpoint} not ready: {}",
            e.message().unwrap_or("ModelNotReadyException")
        )),
        InvokeEndpointError::ServiceUnavailable(_)
        | InvokeEndpointError::InternalFailure(_)
        | InvokeEndpointError::InternalDependencyException(_) => unavailable(format!(
            "endpoint {endpoint}: {} ({status}): {}",
            err.code().unwrap_or("service error"),
            err.message().unwrap_or("no message")
        )),
        // ThrottlingException is not in the SDK's model: it arrives here, by code, as HTTP 400.
        other if other.code() == Some("ThrottlingException") => unavailable(format!(
            "endpoint {endpoint} throttled: {}",
            other.message().unwrap_or("ThrottlingException")
        )),
        // Anything else (credentials, permissions, a code added later) is not the model's
        // answer about the input, so it never fails the job for good.
        other => unavailable(format!(
            "endpoint {endpoint}: {} ({status}): {}",
            other.code().unwrap_or("unknown error"),
            other.message().unwrap_or("no message")
        )),
    }
}

/// The container's answer inside a `ModelError`, classified as the embedded adapter classifies
/// the same status from the container.
fn classify_model_error(endpoint: &str, m: &ModelError) -> Error {
    let message = truncate(
        m.original_message()
            .or_else(|| m.message())
            .unwrap_or("ModelError"),
    );
    let original = m.original_status_code();
    match original.and_then(|s| u16::try_from(s).ok()) {
        Some(424) => Error::ModelFailed {
            status: 424,
            message,
        },
        Some(408) => unavailable(format!("endpoint {endpoint}: model timed out: {message}")),
        Some(429) => unavailable(format!("endpoint {endpoint}: model throttled: {message}")),
        Some(status @ 400..=499) => Error::ModelRejected { status, message },
        // 5xx, and 0 or nothing, which SageMaker reports when the container did not answer.
        _ => unavailable(format!(
            "endpoint {endpoint}: model answered {}: {message}",
            original.map_or_else(|| "no status".to_owned(), |s| s.to_string())
        )),
    }
}

/// At most [`MAX_MESSAGE_BYTES`] of `s`, cut on a character boundary.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(MAX_MESSAGE_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use aws_sdk_sagemakerruntime::types::error::{
        InternalDependencyException, InternalFailure, ModelNotReadyException, ServiceUnavailable,
        ValidationError,
    };
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn service(err: InvokeEndpointError, status: u16) -> Error {
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        classify("iris", SdkError::service_error(err, raw))
    }

    fn model_error(original: Option<i32>) -> Error {
        let mut b = ModelError::builder()
            .message("Received client error")
            .original_message(r#"{"error":"expected 4 columns, got 3","line":1}"#);
        if let Some(s) = original {
            b = b.original_status_code(s);
        }
        service(InvokeEndpointError::ModelError(b.build()), 424)
    }

    fn is_unavailable(e: &Error) -> bool {
        matches!(e, Error::EndpointUnavailable { .. }) && e.is_retryable()
    }

    #[test]
    fn a_4xx_from_the_model_is_a_rejected_input_with_the_containers_status_and_body() {
        for status in [400, 404, 413, 415] {
            let got = model_error(Some(status));
            match &got {
                Error::ModelRejected { status: s, message } => {
                    assert_eq!(i32::from(*s), status);
                    assert!(message.contains("expected 4 columns"), "{message}");
                }
                other => panic!("{status}: {other:?}"),
            }
            assert!(!got.is_retryable());
        }
    }

    #[test]
    fn a_424_from_the_model_is_the_models_own_failure() {
        let got = model_error(Some(424));
        assert!(
            matches!(got, Error::ModelFailed { status: 424, .. }),
            "{got:?}"
        );
        assert!(!got.is_retryable());
    }

    #[test]
    fn timeouts_throttling_5xx_and_no_status_from_the_model_are_retried() {
        for status in [Some(408), Some(429), Some(500), Some(503), Some(0), None] {
            let got = model_error(status);
            assert!(is_unavailable(&got), "{status:?}: {got:?}");
        }
    }

    #[test]
    fn not_ready_throttling_and_service_faults_are_retried() {
        let cases = [
            (
                InvokeEndpointError::ModelNotReadyException(
                    ModelNotReadyException::builder().message("wait").build(),
                ),
                429,
            ),
            (
                InvokeEndpointError::generic(
                    ErrorMetadata::builder()
                        .code("ThrottlingException")
                        .message("Rate exceeded")
                        .build(),
                ),
                400,
            ),
            (
                InvokeEndpointError::ServiceUnavailable(ServiceUnavailable::builder().build()),
                503,
            ),
            (
                InvokeEndpointError::InternalFailure(InternalFailure::builder().build()),
                500,
            ),
            (
                InvokeEndpointError::InternalDependencyException(
                    InternalDependencyException::builder().build(),
                ),
                530,
            ),
            (
                InvokeEndpointError::generic(
                    ErrorMetadata::builder()
                        .code("AccessDeniedException")
                        .build(),
                ),
                403,
            ),
            (
                InvokeEndpointError::generic(ErrorMetadata::builder().build()),
                502,
            ),
        ];
        for (err, status) in cases {
            let got = service(err, status);
            assert!(is_unavailable(&got), "{status}: {got:?}");
        }
    }

    #[test]
    fn a_validation_error_is_a_rejected_input_unless_the_endpoint_is_missing() {
        let got = service(
            InvokeEndpointError::ValidationError(
                ValidationError::builder()
                    .message("1 validation error detected: customAttributes too long")
                    .build(),
            ),
            400,
        );
        assert!(
            matches!(&got, Error::ModelRejected { status: 400, message } if message.contains("customAttributes")),
            "{got:?}"
        );
        let got = service(
            InvokeEndpointError::ValidationError(
                ValidationError::builder()
                    .message("Endpoint iris of account 123456789012 not found.")
                    .build(),
            ),
            400,
        );
        assert!(is_unavailable(&got), "{got:?}");
    }

    #[test]
    fn timeouts_and_dispatch_failures_are_retried() {
        let got = classify("iris", SdkError::timeout_error("attempt timeout"));
        assert!(is_unavailable(&got), "{got:?}");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let got = classify(
            "iris",
            SdkError::dispatch_failure(ConnectorError::io(refused.into())),
        );
        assert!(is_unavailable(&got), "{got:?}");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let s = "é".repeat(400);
        let cut = truncate(&s);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert!(s.starts_with(&cut));
    }
}
