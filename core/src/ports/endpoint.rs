//! Endpoint port: a SageMaker real-time endpoint (InvokeEndpoint semantics).

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

/// One invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Payload.
    pub body: Bytes,
    /// `Content-Type`.
    pub content_type: String,
    /// `Accept`.
    pub accept: String,
    /// `X-Amzn-SageMaker-Custom-Attributes`.
    pub custom_attributes: Option<String>,
}

/// The endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationOutput {
    /// Response body.
    pub body: Bytes,
    /// Its MIME type.
    pub content_type: String,
    /// Custom attributes the model sent back.
    pub custom_attributes: Option<String>,
}

/// A model endpoint.
#[async_trait]
pub trait Endpoint: Send + Sync {
    /// Invokes the model. 4xx from the model is [`crate::Error::ModelRejected`] (permanent);
    /// throttling, 5xx, not-ready and timeouts are [`crate::Error::EndpointUnavailable`].
    async fn invoke(&self, invocation: Invocation) -> Result<InvocationOutput>;
    /// Largest payload the endpoint accepts.
    fn payload_limit(&self) -> u64;
}
