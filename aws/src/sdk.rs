//! The SDK clients, built once from the standard AWS environment (`AWS_ENDPOINT_URL*`, profiles,
//! roles), a counter of the calls they make, and how SDK failures become port errors.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use sealbox_core::Error;

/// SageMaker stops a container's answer after 60 s; one attempt may take a little longer than
/// that before the worker (which retries by itself) calls it a timeout.
pub const INVOKE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(65);

/// Counts every attempt the clients send, by `service.Operation` (for `sealbox bench`).
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    /// Calls so far, by operation.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// All calls so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "sealbox.CallCounter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let key = cfg
            .load::<Metadata>()
            .map(|m| format!("{}.{}", m.service(), m.name()))
            .unwrap_or_else(|| "unknown".into());
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(key).or_default() += 1;
        }
        Ok(())
    }
}

/// The clients every role builds once, sharing one configuration and one counter.
#[derive(Debug, Clone)]
pub struct Clients {
    /// S3 (path-style addressing when an endpoint URL is set, as emulators need).
    pub s3: aws_sdk_s3::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// SNS.
    pub sns: aws_sdk_sns::Client,
    /// SageMaker Runtime: one attempt, bounded, since the worker retries by itself.
    pub sagemaker: aws_sdk_sagemakerruntime::Client,
    /// DynamoDB, for claims in a table.
    #[cfg(feature = "dynamodb-claims")]
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Calls made through the clients.
    pub calls: CallCounter,
}

/// The shared SDK configuration from the standard AWS environment.
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

impl Clients {
    /// Clients for `config`.
    pub fn new(config: &SdkConfig) -> Clients {
        let calls = CallCounter::default();
        let path_style =
            config.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .interceptor(calls.clone())
            .build();
        let sqs = aws_sdk_sqs::config::Builder::from(config)
            .interceptor(calls.clone())
            .build();
        let sns = aws_sdk_sns::config::Builder::from(config)
            .interceptor(calls.clone())
            .build();
        let sagemaker = sagemaker_client(config, &calls, None);
        Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            sns: aws_sdk_sns::Client::from_conf(sns),
            sagemaker,
            #[cfg(feature = "dynamodb-claims")]
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(config)
                    .interceptor(calls.clone())
                    .build(),
            ),
            calls,
        }
    }

    /// Clients for `config` whose SageMaker Runtime client sends to `endpoint_url` (e.g. the
    /// sample model served in-process, which answers the SageMaker Runtime API) instead of the
    /// endpoint `config` names. Same single attempt, timeout and call counter as [`Clients::new`];
    /// the other clients are exactly those of [`Clients::new`].
    pub fn with_sagemaker_endpoint(config: &SdkConfig, endpoint_url: &str) -> Clients {
        let mut clients = Clients::new(config);
        clients.sagemaker = sagemaker_client(config, &clients.calls, Some(endpoint_url));
        clients
    }

    /// Clients from the standard AWS environment.
    pub async fn from_env() -> Clients {
        Clients::new(&load_config().await)
    }
}

/// The SageMaker Runtime client: one attempt, bounded by [`INVOKE_ATTEMPT_TIMEOUT`], since the
/// worker retries by itself; at `endpoint_url` if given, else where `config` says.
fn sagemaker_client(
    config: &SdkConfig,
    calls: &CallCounter,
    endpoint_url: Option<&str>,
) -> aws_sdk_sagemakerruntime::Client {
    let mut builder = aws_sdk_sagemakerruntime::config::Builder::from(config)
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(INVOKE_ATTEMPT_TIMEOUT)
                .build(),
        )
        .interceptor(calls.clone());
    if let Some(url) = endpoint_url {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_sagemakerruntime::Client::from_conf(builder.build())
}

/// A failure of a bucket, queue or topic service as a port error (retryable: nothing about the
/// job), with the SDK's whole chain of causes in its text.
pub fn storage_error(context: impl Into<String>, err: impl std::error::Error) -> Error {
    Error::storage(context, DisplayErrorContext(err).to_string())
}
