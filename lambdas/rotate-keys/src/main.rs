//! The `rotate-keys` Lambda function, invoked on a schedule: rotates the seller's KMS keys when
//! the current one has signed for `SEALBOX_ROTATE_EVERY` (default 30d), retires keys whose
//! tokens have all expired, and publishes the keys document. Invoked twice in a row (a retried
//! schedule), it rotates once. `main` only reads the settings and wires the adapters.

use std::time::{Duration, Instant};

use lambda_runtime::{LambdaEvent, service_fn};
use sealbox_authz::rotation::rotate_if_due;
use sealbox_aws::config::{Settings, Var};
use sealbox_aws::lambda::{Metric, emf, emit};
use sealbox_aws::seller::{Seller, SellerClients};
use serde_json::Value;

const FUNCTION: &str = "rotate-keys";

/// What one instance builds once.
struct App {
    seller: Seller,
    every: Duration,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    sealbox_aws::lambda::init_logging();
    let app = std::sync::Arc::new(build().await?);
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| {
        let app = app.clone();
        async move { handle(&app).await }
    }))
    .await
}

async fn build() -> anyhow::Result<App> {
    let mut needed = Var::SELLER.to_vec();
    needed.push(Var::RotateEvery);
    let settings = Settings::from_env(&needed)?;
    // Checked by the settings already; a failure here is a bug, reported as an init error.
    let every = humantime::parse_duration(settings.get(Var::RotateEvery))?;
    let seller = SellerClients::from_env().await.seller(&settings);
    Ok(App { seller, every })
}

async fn handle(app: &App) -> Result<Value, lambda_runtime::Error> {
    let started = Instant::now();
    let s = &app.seller;
    let run = rotate_if_due(&s.keys, app.every, time::OffsetDateTime::now_utc()).await?;
    // Published every time: a run after a failed publish repairs the document.
    s.publisher
        .publish_current(&s.keys, &s.subscriptions)
        .await?;
    tracing::info!(
        rotated = run.rotated,
        current = %run.current,
        retired = ?run.retired,
        published = %s.publisher.location(),
        "scheduled rotation"
    );
    emit(&[emf(
        FUNCTION,
        None,
        &[
            Metric::count("KeysRotated", u64::from(run.rotated)),
            Metric::count("KeysRetired", run.retired.len() as u64),
            Metric::millis("RotationLatency", started.elapsed()),
        ],
    )]);
    Ok(serde_json::to_value(&run)?)
}
