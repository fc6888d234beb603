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
    /// Units the model metered for this answer (`ConsumedUnits` of its
    /// `X-Amzn-Inference-Metering` header, or of [`CONSUMED_UNITS_ATTRIBUTE`] in its custom
    /// attributes where the header does not reach the caller); `None` when it said nothing.
    pub consumed_units: Option<u64>,
}

/// The header a model container answers to meter an invocation for AWS Marketplace:
/// `{"Dimension": "inference.count", "ConsumedUnits": N}`.
pub const METERING_HEADER: &str = "X-Amzn-Inference-Metering";

/// The custom attribute (`sealbox-consumed-units=N`) a model adds to its response's
/// `X-Amzn-SageMaker-Custom-Attributes` so that a caller of SageMaker's `InvokeEndpoint`, which
/// passes only that header of the container's on, can see what [`METERING_HEADER`] said.
pub const CONSUMED_UNITS_ATTRIBUTE: &str = "sealbox-consumed-units";

/// `ConsumedUnits` of an `X-Amzn-Inference-Metering` value; `None` unless it is a JSON object
/// with a whole, non-negative `ConsumedUnits`.
pub fn consumed_units_from_metering(value: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(value).ok()?;
    v.get("ConsumedUnits")?.as_u64()
}

/// The last `sealbox-consumed-units=N` element of a custom attributes value (elements separated
/// by `,` or `;`): the model appends its own after whatever it echoes, so the last one is the
/// model's.
pub fn consumed_units_from_custom_attributes(value: &str) -> Option<u64> {
    value
        .split([',', ';'])
        .filter_map(|element| {
            let (name, units) = element.split_once('=')?;
            (name.trim() == CONSUMED_UNITS_ATTRIBUTE).then(|| units.trim().parse::<u64>().ok())
        })
        .next_back()
        .flatten()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metering_header_gives_its_consumed_units() {
        let v = r#"{"Dimension": "inference.count", "ConsumedUnits": 7}"#;
        assert_eq!(consumed_units_from_metering(v), Some(7));
    }

    #[test]
    fn metering_header_that_is_not_whole_units_gives_none() {
        for v in [
            "7",
            "{}",
            r#"{"ConsumedUnits": -1}"#,
            r#"{"ConsumedUnits": 1.5}"#,
            r#"{"ConsumedUnits": "7"}"#,
            "not json",
        ] {
            assert_eq!(consumed_units_from_metering(v), None, "{v}");
        }
    }

    #[test]
    fn custom_attributes_give_the_last_consumed_units_element() {
        let v = "trace=abc, sealbox-consumed-units=1; sealbox-consumed-units = 12";
        assert_eq!(consumed_units_from_custom_attributes(v), Some(12));
        assert_eq!(
            consumed_units_from_custom_attributes("sealbox-consumed-units=3"),
            Some(3)
        );
    }

    #[test]
    fn custom_attributes_without_a_whole_consumed_units_element_give_none() {
        for v in [
            "",
            "trace=abc",
            "sealbox-consumed-units=x",
            "sealbox-consumed-units=2, sealbox-consumed-units=-1",
            "my-sealbox-consumed-units=4",
        ] {
            assert_eq!(consumed_units_from_custom_attributes(v), None, "{v}");
        }
    }
}
