//! Endpoint adapter for a model server that speaks the SageMaker container contract over HTTP
//! (`POST /invocations`), as the embedded stack runs it.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::ports::endpoint::{Endpoint, Invocation, InvocationOutput};

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
        let retry_after = header("retry-after")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_capped(resp, MAX_RESPONSE_BYTES).await?;
        if status.is_success() {
            return Ok(InvocationOutput {
                content_type: content_type.unwrap_or_else(|| inv.accept.clone()),
                body,
                custom_attributes,
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
