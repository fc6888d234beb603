//! Sample seller model for sealbox: an Iris classifier behind the Amazon SageMaker
//! inference container contract (`GET /ping`, `POST /invocations` on port 8080).
//!
//! The model is a multinomial logistic regression trained with `smartcore` at start-up on the
//! Iris dataset bundled in that crate; see [`IrisModel`]. The HTTP contract lives in [`router`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod http;
mod model;

pub use http::{CUSTOM_ATTRIBUTES_HEADER, MAX_PAYLOAD_BYTES, router};
pub use model::{IrisModel, LABELS, NUM_FEATURES, Prediction};

/// Serving options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelConfig {
    /// Artificial latency added to every invocation (for benchmarks); zero disables it.
    pub latency: Duration,
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
        let model = Arc::new(IrisModel::train().unwrap());
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
}
