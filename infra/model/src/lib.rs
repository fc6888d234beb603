//! Sample seller model for sealbox: an Iris classifier behind the Amazon SageMaker
//! inference container contract (`GET /ping`, `POST /invocations` on port 8080).
//!
//! The same server also answers the SageMaker Runtime `InvokeEndpoint` API
//! (`POST /endpoints/{name}/invocations`), so the AWS SDK can be pointed at it with
//! `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`; errors use SageMaker's wire shapes (`ModelError`,
//! `ModelNotReadyException`, `ThrottlingException`, `ValidationError`).
//!
//! The model is a multinomial logistic regression trained with `smartcore` at start-up on the
//! Iris dataset bundled in that crate; see [`IrisModel`]. The HTTP contract lives in [`router`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod http;
mod model;
mod runtime;

pub use http::{CUSTOM_ATTRIBUTES_HEADER, MAX_PAYLOAD_BYTES, router};
pub use model::{IrisModel, LABELS, NUM_FEATURES, Prediction};
pub use runtime::{ERROR_TYPE_HEADER, INVOKED_VARIANT_HEADER, PRODUCTION_VARIANT};

/// Serving options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelConfig {
    /// Artificial latency added to every invocation (for benchmarks); zero disables it.
    pub latency: Duration,
    /// Most Runtime-API invocations served at once; more answer `ThrottlingException`.
    /// `None` is unlimited. The container route `/invocations` is never limited.
    pub max_concurrency: Option<usize>,
    /// Answer every Runtime-API invocation with `ModelNotReadyException` (HTTP 429).
    pub not_ready: bool,
}

impl ModelConfig {
    /// Default options with the given artificial `latency`.
    pub const fn with_latency(latency: Duration) -> Self {
        ModelConfig {
            latency,
            max_concurrency: None,
            not_ready: false,
        }
    }
}

/// Errors from training or serving the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The Iris dataset bundled in `smartcore` did not have the expected shape.
    #[error(
        "bundled Iris dataset is malformed: {0} (check the smartcore version / `datasets` feature)"
    )]
    Dataset(String),
    /// The smartcore solver failed or returned unusable coefficients.
    #[error("training the Iris logistic regression failed: {0}")]
    Training(String),
    /// The trained model is too inaccurate to serve.
    #[error(
        "trained model reaches only {accuracy:.3} training accuracy (minimum {minimum}); check the solver parameters"
    )]
    Underfit {
        /// Training-set accuracy achieved.
        accuracy: f64,
        /// Minimum accepted accuracy.
        minimum: f64,
    },
    /// The HTTP server failed while accepting or serving connections.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Serves [`router`] on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    model: Arc<IrisModel>,
    cfg: ModelConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ModelError> {
    axum::serve(listener, router(model, cfg))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ModelError::Serve)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn serve_answers_ping_over_tcp_and_stops_on_shutdown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let model = IrisModel::shared().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, model, ModelConfig::default(), async {
            let _ = rx.await;
        }));

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");

        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[test]
    fn model_config_defaults_to_zero_latency() {
        assert_eq!(ModelConfig::default().latency, Duration::ZERO);
    }

    #[test]
    fn model_config_defaults_to_unlimited_and_ready() {
        let cfg = ModelConfig::default();
        assert_eq!(cfg.max_concurrency, None);
        assert!(!cfg.not_ready);
    }

    #[test]
    fn with_latency_changes_only_latency() {
        let latency = Duration::from_millis(7);
        assert_eq!(
            ModelConfig::with_latency(latency),
            ModelConfig {
                latency,
                ..ModelConfig::default()
            }
        );
    }

    #[tokio::test]
    async fn runtime_api_error_headers_reach_the_wire() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let model = IrisModel::shared().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, model, ModelConfig::default(), async {
            let _ = rx.await;
        }));

        let body = "1,2,3\n";
        let request = format!(
            "POST /endpoints/iris/invocations HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 424"), "{response}");
        let lower = response.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nx-amzn-errortype: modelerror\r\n"),
            "{response}"
        );
        assert!(lower.contains("\r\nx-amzn-requestid: "), "{response}");
        assert!(
            response.contains(r#""OriginalStatusCode":400"#),
            "{response}"
        );

        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
