//! Conformance suite of the endpoint port ([`Endpoint`]) against the sample model
//! (`sealbox-model`: an Iris classifier taking 4-column CSV rows).
//!
//! The caller owns the wiring: it passes a factory that starts a sample model server set up as
//! the [`ModelKnobs`] say and returns an adapter pointed at it. (Core does not depend on the
//! model crate, so the knobs are plain values the caller maps onto its `ModelConfig`.)
//!
//! The checks come in two sets:
//! - [`run_all_adapters`]: what every endpoint adapter promises (answers, rejected inputs, the
//!   payload limit, an unreachable endpoint);
//! - [`run_runtime_api_only`]: what only the SageMaker Runtime API produces (not ready,
//!   throttling past the concurrency limit); the container contract (`/invocations`) that the
//!   embedded adapter speaks has neither.
//!
//! Each check panics, naming itself, where the adapter breaks a promise of the port. An
//! adapter's tests run each check as a test of its own with
//! [`endpoint_conformance_tests!`](crate::endpoint_conformance_tests), given the factory (and
//! `runtime_api` for the second set):
//!
//! ```text
//! sealbox_core::endpoint_conformance_tests!(runtime_api, sagemaker_endpoint);
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::Error;
use crate::ports::endpoint::{Endpoint, Invocation, InvocationOutput};

/// How the sample model server behind the adapter is set up (the model's `ModelConfig`, plus
/// the wiring).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelKnobs {
    /// Latency added to every invocation, holding its concurrency slot.
    pub latency: Duration,
    /// Most Runtime-API invocations at once (more are throttled); `None` is unlimited.
    pub max_concurrency: Option<usize>,
    /// The Runtime API answers every invocation "not ready".
    pub not_ready: bool,
    /// No server at all: the adapter points at an address nobody listens on.
    pub unreachable: bool,
}

/// One row the sample model classifies as `setosa`.
pub const GOOD_ROW: &str = "5.1,3.5,1.4,0.2\n";
/// A row the sample model refuses (3 columns instead of 4).
pub const BAD_ROW: &str = "5.1,3.5,1.4\n";

const CSV: &str = "text/csv";
const JSON: &str = "application/json";

fn invocation(body: impl Into<Bytes>, accept: &str, custom_attributes: Option<&str>) -> Invocation {
    Invocation {
        body: body.into(),
        content_type: CSV.into(),
        accept: accept.into(),
        custom_attributes: custom_attributes.map(str::to_owned),
    }
}

fn is_unavailable(result: &crate::Result<InvocationOutput>) -> bool {
    matches!(result, Err(e @ Error::EndpointUnavailable { .. }) if e.is_retryable())
}

/// A good row is answered in the type asked for, with the custom attributes echoed; none sent,
/// none echoed.
pub async fn a_good_row_is_answered_in_the_accepted_type<M, Fut>(make: &M)
where
    M: Fn(ModelKnobs) -> Fut,
    Fut: Future<Output = Arc<dyn Endpoint>>,
{
    const CHECK: &str = "a_good_row_is_answered_in_the_accepted_type";
    let endpoint = make(ModelKnobs::default()).await;

    let out = endpoint
        .invoke(invocation(GOOD_ROW, JSON, Some("trace=abc, tenant=42")))
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: JSON answer: {e}"));
    assert!(
        out.content_type.starts_with(JSON),
        "{CHECK}: content type {:?}",
        out.content_type
    );
    assert_eq!(
        out.custom_attributes.as_deref(),
        Some("trace=abc, tenant=42, sealbox-consumed-units=1"),
        "{CHECK}: custom attributes echoed, with the units the model metered"
    );
    assert_eq!(
        out.consumed_units,
        Some(1),
        "{CHECK}: the rows scored come back as units"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.body)
        .unwrap_or_else(|e| panic!("{CHECK}: the JSON answer does not parse: {e}"));
    assert_eq!(
        v["predictions"][0]["label"], "setosa",
        "{CHECK}: JSON answer {v}"
    );

    let out = endpoint
        .invoke(invocation(format!("{GOOD_ROW}{GOOD_ROW}"), CSV, None))
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: CSV answer: {e}"));
    assert!(
        out.content_type.starts_with(CSV),
        "{CHECK}: content type {:?}",
        out.content_type
    );
    assert_eq!(
        out.custom_attributes.as_deref(),
        Some("sealbox-consumed-units=2"),
        "{CHECK}: none sent, only the units answered"
    );
    assert_eq!(
        out.consumed_units,
        Some(2),
        "{CHECK}: the rows scored come back as units"
    );
    let text = String::from_utf8_lossy(&out.body);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{CHECK}: one line per row: {text:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("setosa,")),
        "{CHECK}: CSV answer {text:?}"
    );
}

/// Input the model refuses is [`Error::ModelRejected`] with the model's status (400 for a bad
/// row, 415 for a type it does not read) and its message; never retried.
pub async fn an_input_the_model_refuses_is_rejected<M, Fut>(make: &M)
where
    M: Fn(ModelKnobs) -> Fut,
    Fut: Future<Output = Arc<dyn Endpoint>>,
{
    const CHECK: &str = "an_input_the_model_refuses_is_rejected";
    let endpoint = make(ModelKnobs::default()).await;

    let got = endpoint
        .invoke(invocation(BAD_ROW, CSV, Some("trace=abc")))
        .await;
    match &got {
        Err(
            e @ Error::ModelRejected {
                status: 400,
                message,
            },
        ) => {
            assert!(
                message.contains("expected 4 columns"),
                "{CHECK}: the model's message is kept: {message:?}"
            );
            assert!(!e.is_retryable(), "{CHECK}: a rejection is permanent");
        }
        other => panic!("{CHECK}: a bad row: {other:?}"),
    }

    let mut odd_type = invocation(GOOD_ROW, CSV, None);
    odd_type.content_type = "application/x-unknown".into();
    let got = endpoint.invoke(odd_type).await;
    assert!(
        matches!(got, Err(Error::ModelRejected { status: 415, .. })),
        "{CHECK}: an unsupported content type: {got:?}"
    );
}

/// A payload one byte over the limit is [`Error::PayloadTooLarge`] before any call (the
/// endpoint is unreachable, so a call would be `EndpointUnavailable`); one at the limit is sent.
pub async fn a_payload_over_the_limit_is_refused_before_any_call<M, Fut>(make: &M)
where
    M: Fn(ModelKnobs) -> Fut,
    Fut: Future<Output = Arc<dyn Endpoint>>,
{
    const CHECK: &str = "a_payload_over_the_limit_is_refused_before_any_call";
    let endpoint = make(ModelKnobs {
        unreachable: true,
        ..ModelKnobs::default()
    })
    .await;
    let limit = endpoint.payload_limit();
    let size = usize::try_from(limit + 1).unwrap_or(usize::MAX);
    let got = endpoint
        .invoke(invocation(vec![b'1'; size], CSV, None))
        .await;
    match got {
        Err(Error::PayloadTooLarge { size: s, limit: l }) => {
            assert_eq!((s, l), (limit + 1, limit), "{CHECK}: sizes reported");
        }
        other => panic!(
            "{CHECK}: {} bytes over a limit of {limit}: {other:?}",
            limit + 1
        ),
    }
    let at_limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let got = endpoint
        .invoke(invocation(vec![b'1'; at_limit], CSV, None))
        .await;
    assert!(
        is_unavailable(&got),
        "{CHECK}: a payload at the limit is sent (and finds nobody): {got:?}"
    );
}

/// An endpoint nobody answers at is [`Error::EndpointUnavailable`] (retryable).
pub async fn an_unreachable_endpoint_is_unavailable<M, Fut>(make: &M)
where
    M: Fn(ModelKnobs) -> Fut,
    Fut: Future<Output = Arc<dyn Endpoint>>,
{
    const CHECK: &str = "an_unreachable_endpoint_is_unavailable";
    let endpoint = make(ModelKnobs {
        unreachable: true,
        ..ModelKnobs::default()
    })
    .await;
    let got = endpoint.invoke(invocation(GOOD_ROW, CSV, None)).await;
    assert!(is_unavailable(&got), "{CHECK}: {got:?}");
}

/// Runtime API only: an endpoint that is not ready is [`Error::EndpointUnavailable`].
pub async fn not_ready_is_unavailable<M, Fut>(make: &M)
where
    M: Fn(ModelKnobs) -> Fut,
    Fut: Future<Output = Arc<dyn Endpoint>>,
{
    const CHECK: &str = "not_ready_is_unavailable";
    let endpoint = make(ModelKnobs {
        not_ready: true,
        ..ModelKnobs::default()
    })
    .await;
    let got = endpoint.invoke(invocation(GOOD_ROW, CSV, None)).await;
    assert!(is_unavailable(&got), "{CHECK}: {got:?}");
}

/// Runtime API only: with one slot held by a slow call, a second call at once is throttled,
/// [`Error::EndpointUnavailable`]; the first is answered.
pub async fn past_max_concurrency_is_unavailable<M, Fut>(make: &M)
where
    M: Fn(ModelKnobs) -> Fut,
    Fut: Future<Output = Arc<dyn Endpoint>>,
{
    const CHECK: &str = "past_max_concurrency_is_unavailable";
    let endpoint = make(ModelKnobs {
        latency: Duration::from_secs(3),
        max_concurrency: Some(1),
        ..ModelKnobs::default()
    })
    .await;
    let first = {
        let endpoint = Arc::clone(&endpoint);
        tokio::spawn(async move { endpoint.invoke(invocation(GOOD_ROW, CSV, None)).await })
    };
    // Time for the first call to reach the server and take the slot (loopback: milliseconds);
    // it then holds it for the 3 s of latency.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = endpoint.invoke(invocation(GOOD_ROW, CSV, None)).await;
    assert!(
        is_unavailable(&second),
        "{CHECK}: the second call: {second:?}"
    );
    let first = first.await.unwrap_or_else(|e| panic!("{CHECK}: {e}"));
    assert!(first.is_ok(), "{CHECK}: the first call: {first:?}");
}

/// Every check every endpoint adapter must pass.
pub async fn run_all_adapters<M, Fut>(make: &M)
where
    M: Fn(ModelKnobs) -> Fut,
    Fut: Future<Output = Arc<dyn Endpoint>>,
{
    a_good_row_is_answered_in_the_accepted_type(make).await;
    an_input_the_model_refuses_is_rejected(make).await;
    a_payload_over_the_limit_is_refused_before_any_call(make).await;
    an_unreachable_endpoint_is_unavailable(make).await;
}

/// The checks only the SageMaker Runtime API can be put to (not ready, throttling).
pub async fn run_runtime_api_only<M, Fut>(make: &M)
where
    M: Fn(ModelKnobs) -> Fut,
    Fut: Future<Output = Arc<dyn Endpoint>>,
{
    not_ready_is_unavailable(make).await;
    past_max_concurrency_is_unavailable(make).await;
}

/// Runs each check of the endpoint suite as a test of its own, on adapters made by the factory
/// given (an `async fn(ModelKnobs) -> Arc<dyn Endpoint>`): the checks for all adapters, and
/// with `runtime_api` first also those only the SageMaker Runtime API can be put to.
#[macro_export]
macro_rules! endpoint_conformance_tests {
    (runtime_api, $make:expr) => {
        $crate::endpoint_conformance_tests!($make);
        $crate::endpoint_conformance_tests!(@checks $make;
            not_ready_is_unavailable,
            past_max_concurrency_is_unavailable,
        );
    };
    ($make:expr) => {
        $crate::endpoint_conformance_tests!(@checks $make;
            a_good_row_is_answered_in_the_accepted_type,
            an_input_the_model_refuses_is_rejected,
            a_payload_over_the_limit_is_refused_before_any_call,
            an_unreachable_endpoint_is_unavailable,
        );
    };
    (@checks $make:expr; $($check:ident,)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::conformance::endpoint::$check(&$make).await;
            }
        )+
    };
}
