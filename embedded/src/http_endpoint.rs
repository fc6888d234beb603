//! Endpoint adapter for a model server that speaks the SageMaker container contract over HTTP
//! (`POST /invocations`), as the embedded stack runs it.

use std::time::Duration;

use async_trait::async_trait;

use sealbox_core::ports::endpoint::{
    Endpoint, Invocation, InvocationOutput, METERING_HEADER, consumed_units_from_custom_attributes,
    consumed_units_from_metering,
};
use sealbox_core::{Error, Result};

/// The SageMaker header for custom attributes.
pub const CUSTOM_ATTRIBUTES: &str = "X-Amzn-SageMaker-Custom-Attributes";

/// A model container reached over HTTP.
#[derive(Debug, Clone)]
pub struct HttpEndpoint {
    client: reqwest::Client,
    url: String,
    payload_limit: u64,
}

impl HttpEndpoint {
    /// An endpoint at `base` (e.g. `http://127.0.0.1:8080`); each call times out after `timeout`.
    pub fn new(base: &str, timeout: Duration, payload_limit: u64) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| Error::EndpointUnavailable {
                message: format!("building the HTTP client: {e}"),
                retry_after: None,
            })?;
        Ok(HttpEndpoint {
            client,
            url: format!("{}/invocations", base.trim_end_matches('/')),
            payload_limit,
        })
    }
}

/// Largest response accepted from the model (SageMaker's own response limit is 6 MB; twice that
/// leaves room for models behind a larger gateway without letting one exhaust memory).
pub const MAX_RESPONSE_BYTES: usize = 12 * 1000 * 1000;

/// Reads a response body, refusing one larger than `cap` before holding it all.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<bytes::Bytes> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Error::ResponseTooLarge { limit: cap as u64 });
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| unavailable(format!("reading the response: {e}"), None))?
    {
        if body.len() + chunk.len() > cap {
            return Err(Error::ResponseTooLarge { limit: cap as u64 });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn unavailable(message: String, retry_after: Option<Duration>) -> Error {
    Error::EndpointUnavailable {
        message,
        retry_after,
    }
}

#[async_trait]
impl Endpoint for HttpEndpoint {
    async fn invoke(&self, inv: Invocation) -> Result<InvocationOutput> {
        if inv.body.len() as u64 > self.payload_limit {
            return Err(Error::PayloadTooLarge {
                size: inv.body.len() as u64,
                limit: self.payload_limit,
            });
        }
        let mut req = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, &inv.content_type)
            .header(reqwest::header::ACCEPT, &inv.accept)
            .body(inv.body);
        if let Some(ca) = &inv.custom_attributes {
            req = req.header(CUSTOM_ATTRIBUTES, ca);
        }
        let resp = req.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "not ready (connection failed)"
            } else {
                "request failed"
            };
            unavailable(format!("{what}: {e}"), None)
        })?;
        let status = resp.status();
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE.as_str());
        let custom_attributes = header(CUSTOM_ATTRIBUTES);
        // The container's own header first (what AWS Marketplace bills), else the copy in its
        // custom attributes that a model meant for SageMaker may give instead.
        let consumed_units = header(METERING_HEADER)
            .as_deref()
            .and_then(consumed_units_from_metering)
            .or_else(|| {
                custom_attributes
                    .as_deref()
                    .and_then(consumed_units_from_custom_attributes)
            });
        let retry_after = header("retry-after")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_capped(resp, MAX_RESPONSE_BYTES).await?;
        if status.is_success() {
            return Ok(InvocationOutput {
                content_type: content_type.unwrap_or_else(|| inv.accept.clone()),
                body,
                custom_attributes,
                consumed_units,
            });
        }
        let message = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        if status.as_u16() == 429 {
            Err(unavailable(format!("throttled: {message}"), retry_after))
        } else if status.as_u16() == 424 {
            // SageMaker's ModelError status: the model's own failure, not the input's.
            Err(Error::ModelFailed {
                status: status.as_u16(),
                message,
            })
        } else if status.as_u16() == 408 {
            Err(unavailable(format!("timed out: {message}"), retry_after))
        } else if status.is_client_error() {
            Err(Error::ModelRejected {
                status: status.as_u16(),
                message,
            })
        } else {
            Err(unavailable(
                format!("model answered {status}: {message}"),
                retry_after,
            ))
        }
    }

    fn payload_limit(&self) -> u64 {
        self.payload_limit
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, StatusCode};
    use bytes::Bytes;

    use super::*;

    /// A model that answers with the status its caller names in the custom attributes
    /// (`status=424`), with `size=N` bytes, or metering `metered=N` units in its
    /// `X-Amzn-Inference-Metering` header (custom attributes are echoed).
    async fn model() -> String {
        async fn invocations(headers: HeaderMap) -> (StatusCode, HeaderMap, Vec<u8>) {
            let asked = headers
                .get(CUSTOM_ATTRIBUTES)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let mut answer = HeaderMap::new();
            if let Ok(v) = asked.parse() {
                answer.insert(CUSTOM_ATTRIBUTES, v);
            }
            if let Some(size) = asked.strip_prefix("size=") {
                return (
                    StatusCode::OK,
                    answer,
                    vec![b'x'; size.parse().unwrap_or(0)],
                );
            }
            if let Some(units) = asked.strip_prefix("metered=") {
                let metering =
                    format!(r#"{{"Dimension": "inference.count", "ConsumedUnits": {units}}}"#);
                if let Ok(v) = metering.parse() {
                    answer.insert(METERING_HEADER, v);
                }
                return (StatusCode::OK, answer, b"answer".to_vec());
            }
            let status = asked
                .strip_prefix("status=")
                .and_then(|s| s.parse().ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK);
            (status, answer, b"answer".to_vec())
        }
        let app = axum::Router::new().route("/invocations", axum::routing::post(invocations));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    async fn call(url: &str, asked: &str) -> Result<InvocationOutput> {
        let endpoint = HttpEndpoint::new(url, Duration::from_secs(10), 1000).unwrap();
        endpoint
            .invoke(Invocation {
                body: Bytes::from("1,2,3,4"),
                content_type: "text/csv".into(),
                accept: "text/csv".into(),
                custom_attributes: Some(asked.into()),
            })
            .await
    }

    #[tokio::test]
    async fn the_metering_header_or_its_copy_in_custom_attributes_gives_the_consumed_units() {
        let url = model().await;
        let units = |asked: &'static str| {
            let url = url.clone();
            async move { call(&url, asked).await.map(|o| o.consumed_units) }
        };
        assert_eq!(units("metered=7").await.ok(), Some(Some(7)));
        assert_eq!(units("sealbox-consumed-units=5").await.ok(), Some(Some(5)));
        assert_eq!(units("trace=abc").await.ok(), Some(None));
    }

    #[tokio::test]
    async fn a_424_is_the_models_own_failure_not_a_rejected_input() {
        let url = model().await;
        let got = call(&url, "status=424").await;
        assert!(
            matches!(got, Err(Error::ModelFailed { status: 424, .. })),
            "{got:?}"
        );
        assert!(!got.is_err_and(|e| e.is_retryable()));
    }

    #[tokio::test]
    async fn a_4xx_is_a_rejected_input_and_throttling_timeouts_and_5xx_are_retried() {
        let url = model().await;
        let got = call(&url, "status=400").await;
        assert!(
            matches!(got, Err(Error::ModelRejected { status: 400, .. })),
            "{got:?}"
        );
        for status in [408, 429, 500, 503] {
            let got = call(&url, &format!("status={status}")).await;
            assert!(got.is_err_and(|e| e.is_retryable()), "{status}");
        }
        assert!(call(&url, "status=200").await.is_ok());
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_a_permanent_failure_not_an_unavailable_endpoint() {
        let url = model().await;
        let got = call(&url, &format!("size={}", MAX_RESPONSE_BYTES + 1)).await;
        assert!(
            matches!(got, Err(Error::ResponseTooLarge { .. })),
            "{got:?}"
        );
        assert!(!got.is_err_and(|e| e.is_retryable()));
        assert!(
            call(&url, &format!("size={MAX_RESPONSE_BYTES}"))
                .await
                .is_ok()
        );
    }
}
