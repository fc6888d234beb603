//! `sealbox-model`: serves the Iris sample model under the SageMaker container contract.
//!
//! SageMaker starts the container as `docker run IMAGE serve`; the `serve` argument is optional.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use sealbox_model::{IrisModel, ModelConfig, serve};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Command {
    /// Train the model and serve /ping, /invocations and /endpoints/{name}/invocations.
    Serve,
}

#[derive(Debug, Parser)]
#[command(name = "sealbox-model", version, about)]
struct Args {
    /// Container command passed by SageMaker.
    #[arg(value_enum, default_value_t = Command::Serve)]
    command: Command,
    /// TCP port to listen on (all interfaces).
    #[arg(long, env = "SAGEMAKER_BIND_TO_PORT", default_value_t = 8080)]
    port: u16,
    /// Artificial latency added to every invocation, in milliseconds (benchmarks).
    #[arg(long, env = "SEALBOX_MODEL_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Most concurrent SageMaker Runtime invocations (`/endpoints/{name}/invocations`);
    /// more answer ThrottlingException. Unlimited when unset.
    #[arg(long, env = "SEALBOX_MODEL_MAX_CONCURRENCY")]
    max_concurrency: Option<NonZeroUsize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let args = Args::parse();
    let Command::Serve = args.command;

    let started = Instant::now();
    let model = Arc::new(IrisModel::train().context("training the Iris model at start-up")?);
    let train_ms = started.elapsed().as_secs_f64() * 1e3;

    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding {addr} (set SAGEMAKER_BIND_TO_PORT to use another port)")
    })?;
    let cfg = ModelConfig {
        max_concurrency: args.max_concurrency.map(NonZeroUsize::get),
        ..ModelConfig::with_latency(Duration::from_millis(args.latency_ms))
    };
    tracing::info!(
        %addr,
        training_accuracy = model.training_accuracy(),
        train_ms,
        latency_ms = args.latency_ms,
        max_concurrency = ?args.max_concurrency,
        "sealbox-model ready"
    );
    serve(listener, model, cfg, shutdown_signal()).await?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` and SageMaker send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}
