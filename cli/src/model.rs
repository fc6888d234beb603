//! `sealbox model serve`: the sample model, answering the container contract (`/ping`,
//! `/invocations`) and the SageMaker Runtime API (`POST /endpoints/{name}/invocations`), so the
//! real SDK client can be pointed at it with `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use sealbox_model::{IrisModel, ModelConfig};

/// Options of `sealbox model serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Artificial latency of every invocation, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Invocations in flight at once before SageMaker's ThrottlingException (default: no limit).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrency: Option<u64>,
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let model = IrisModel::shared().context("training the sample model")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (choose another with --port)"))?;
    let local = listener.local_addr()?;
    let cfg = ModelConfig {
        max_concurrency: args.max_concurrency.map(|n| n as usize),
        ..ModelConfig::with_latency(Duration::from_millis(args.latency_ms))
    };
    println!(
        "model serving on http://{local} (SageMaker Runtime: AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://{local})"
    );
    sealbox_model::serve(listener, model, cfg, async {
        if let Err(e) = crate::commands::wait_for_signal().await {
            tracing::warn!(error = %e, "cannot listen for signals; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
