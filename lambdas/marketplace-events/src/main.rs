//! The `marketplace-events` Lambda function, on an EventBridge rule for AWS Marketplace's
//! agreement events (`aws.agreement-marketplace`): a created or amended agreement grants its
//! buyer the product (until the agreement's end), an ended one revokes it, order-safe and
//! idempotent ([`sealbox_authz::agreements`]). After an end it publishes the keys document
//! again, so the revoked buyer's tokens are refused at the buyers' next refresh.
//!
//! An error (the registry, the Agreement Service or S3 failing) fails the invocation, so Lambda
//! retries the event and, after its retries, sends it to the dead-letter queue. Anything about
//! the event itself (malformed, another product) is answered and logged, not retried.
//! `main` only reads the settings and wires the adapters; `sealbox seller marketplace replay`
//! runs the same handler.

use std::time::Instant;

use lambda_runtime::{LambdaEvent, service_fn};
use sealbox_authz::agreements::{AgreementEvents, AgreementStep, Outcome, ProductMap};
use sealbox_aws::config::{Settings, Var};
use sealbox_aws::lambda::{Metric, emf, emit};
use sealbox_aws::seller::marketplace::AgreementService;
use sealbox_aws::seller::{Seller, SellerClients};
use serde_json::Value;

const FUNCTION: &str = "marketplace-events";

/// What one instance builds once.
struct App {
    seller: Seller,
    directory: AgreementService,
    products: ProductMap,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    sealbox_aws::lambda::init_logging();
    let app = std::sync::Arc::new(build().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let app = app.clone();
        async move { handle(&app, &event.payload).await }
    }))
    .await
}

async fn build() -> anyhow::Result<App> {
    let mut needed = Var::SELLER.to_vec();
    needed.push(Var::MarketplaceProducts);
    let settings = Settings::from_env(&needed)?;
    let products = ProductMap::parse(settings.get(Var::MarketplaceProducts))
        .map_err(|e| anyhow::anyhow!("{}: {e}", Var::MarketplaceProducts))?;
    let config = sealbox_aws::sdk::load_config().await;
    let seller = SellerClients::new(&config).seller(&settings);
    let directory = AgreementService::from_config(&config);
    Ok(App {
        seller,
        directory,
        products,
    })
}

async fn handle(app: &App, event: &Value) -> Result<Value, lambda_runtime::Error> {
    let started = Instant::now();
    let s = &app.seller;
    let events = AgreementEvents {
        registry: &s.subscriptions,
        directory: Some(&app.directory),
        products: &app.products,
        unnamed: None,
    };
    let handled = events.handle(event).await?;
    // After an end (applied now or by an earlier try of this event), the deny list may have
    // changed: publish it. Publishing is idempotent.
    let ended = handled.step == Some(AgreementStep::Ended) && handled.product.is_some();
    if ended || handled.outcome == Outcome::Revoked {
        s.publisher
            .publish_current(&s.keys, &s.subscriptions)
            .await?;
    }
    let (outcome, why) = match &handled.outcome {
        Outcome::Granted => ("granted", ""),
        Outcome::Revoked => ("revoked", ""),
        Outcome::Recorded(why) => ("recorded", why.as_str()),
        Outcome::Skipped(why) => ("skipped", why.as_str()),
        Outcome::Ignored(why) => ("ignored", why.as_str()),
    };
    tracing::info!(
        event_id = %handled.event_id,
        detail_type = %handled.detail_type,
        buyer = handled.buyer.as_deref().unwrap_or("-"),
        agreement = handled.agreement.as_deref().unwrap_or("-"),
        product = handled.product.as_deref().unwrap_or("-"),
        outcome,
        why,
        "agreement event"
    );
    let count = |name, hit: bool| Metric::count(name, u64::from(hit));
    emit(&[emf(
        FUNCTION,
        None,
        &[
            count("AgreementGranted", handled.outcome == Outcome::Granted),
            count("AgreementRevoked", handled.outcome == Outcome::Revoked),
            count(
                "AgreementEventIgnored",
                matches!(handled.outcome, Outcome::Ignored(_)),
            ),
            Metric::millis("AgreementEventLatency", started.elapsed()),
        ],
    )]);
    Ok(serde_json::to_value(&handled)?)
}
