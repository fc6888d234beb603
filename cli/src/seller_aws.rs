//! The seller's commands with `--backend aws`: keys in KMS (states in DynamoDB), subscriptions
//! in DynamoDB, and the published keys document in S3, with the settings from the environment
//! (`SEALBOX_KEYS_TABLE`, `SEALBOX_SUBSCRIPTIONS_TABLE`, `SEALBOX_JWKS_OBJECT`; a missing one
//! is named). Every command that changes keys or subscriptions publishes the document again.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use sealbox_authz::subscriptions::SubscriptionRegistry as _;
use sealbox_authz::{KeyAlg, KeyStore as _};
use sealbox_aws::config::{Settings, Var};
use sealbox_aws::seller::{Seller, SellerClients};
use time::OffsetDateTime;

use crate::access::{print_grant, print_revoked, print_subscriptions};
use crate::commands::{keys_revoke_in, keys_rotate_in, print_keys, seller_token_in};
use crate::output::emit;

/// The seller's adapters on AWS.
pub struct AwsSeller {
    seller: Seller,
}

impl AwsSeller {
    /// Wires the adapters from the environment; every missing setting is named at once.
    pub async fn from_env() -> anyhow::Result<Self> {
        let settings = Settings::from_env(&Var::SELLER)?;
        let clients = SellerClients::from_env().await;
        Ok(AwsSeller {
            seller: clients.seller(&settings),
        })
    }

    /// Publishes the keys and the deny list; answers the document.
    pub async fn publish(&self) -> anyhow::Result<serde_json::Value> {
        let s = &self.seller;
        let doc = s
            .publisher
            .publish_current(&s.keys, &s.subscriptions)
            .await?;
        eprintln!(
            "published the keys and deny list to {}",
            s.publisher.location()
        );
        Ok(doc)
    }

    /// `seller keys init --backend aws`: two KMS keys, then the first published document.
    pub async fn keys_init(&self, issuer: &str, alg: KeyAlg) -> anyhow::Result<()> {
        let ks = self.seller.keys.init(issuer, alg).await?;
        println!(
            "keyset created in {} (issuer {}, current key {}, in KMS)",
            self.seller.keys.location(),
            ks.issuer,
            ks.current()?.kid
        );
        self.publish().await?;
        Ok(())
    }

    /// `seller keys rotate --backend aws`.
    pub async fn keys_rotate(&self) -> anyhow::Result<()> {
        keys_rotate_in(&self.seller.keys).await?;
        self.publish().await?;
        Ok(())
    }

    /// `seller keys revoke KID --backend aws`.
    pub async fn keys_revoke(&self, kid: &str) -> anyhow::Result<()> {
        keys_revoke_in(&self.seller.keys, kid).await?;
        self.publish().await?;
        Ok(())
    }

    /// `seller keys list --backend aws`.
    pub async fn keys_list(&self, json: bool) -> anyhow::Result<()> {
        print_keys(&self.seller.keys.load().await?, json)
    }

    /// `seller keys jwks --backend aws`: publishes the document and prints it.
    pub async fn keys_jwks(&self) -> anyhow::Result<()> {
        let doc = self.publish().await?;
        emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?))
    }

    /// `seller grant --backend aws`.
    pub async fn grant(
        &self,
        buyer: &str,
        product: &str,
        until: Option<OffsetDateTime>,
        secret_out: Option<&Path>,
        with_secret: bool,
    ) -> anyhow::Result<()> {
        if with_secret || secret_out.is_some() {
            let granted =
                crate::access::grant_secret_in(&self.seller.subscriptions, buyer, product, until)
                    .await?;
            print_grant(granted, secret_out)?;
        } else {
            let sub = crate::access::grant_without_secret_in(
                &self.seller.subscriptions,
                buyer,
                product,
                until,
            )
            .await?;
            eprintln!(
                "granted {buyer} a subscription to {product} ({}); it proves its AWS account to \
                 the token service (`sealbox buyer token --backend aws`), no secret to hand over \
                 (--with-secret makes one, for a buyer outside AWS)",
                sub.expires_at
                    .map(sealbox_core::contract::rfc3339)
                    .unwrap_or_else(|| "no end".into())
            );
        }
        self.publish().await?;
        Ok(())
    }

    /// `seller revoke --backend aws`.
    pub async fn revoke(&self, buyer: &str, product: &str) -> anyhow::Result<()> {
        crate::access::check_buyer(buyer)?;
        self.seller.subscriptions.revoke(buyer, product).await?;
        print_revoked(buyer, product);
        self.publish().await?;
        Ok(())
    }

    /// `seller marketplace replay FILE --backend aws`: then publishes the deny list again.
    pub async fn marketplace_replay(
        &self,
        file: &Path,
        products: crate::marketplace::ReplayProducts<'_>,
        json: bool,
    ) -> anyhow::Result<()> {
        crate::marketplace::replay(&self.seller.subscriptions, file, products, json).await?;
        // Always: a replay after a failed publish (the function's or an earlier replay's)
        // repairs the document.
        self.publish().await?;
        Ok(())
    }

    /// `seller subscriptions --backend aws`.
    pub async fn subscriptions(&self, json: bool) -> anyhow::Result<()> {
        print_subscriptions(&self.seller.subscriptions.list().await?, json)
    }

    /// `seller token --backend aws`: a token signed by the current key in KMS.
    pub async fn token(&self, buyer: &str, product: &str, ttl: Duration) -> anyhow::Result<String> {
        seller_token_in(
            &self.seller.keys,
            Some(&self.seller.subscriptions),
            buyer,
            product,
            ttl,
        )
        .await
    }
}

/// `sealbox aws bootstrap-seller --name NAME [--json]`: creates the seller's development
/// resources and prints the settings that reach them.
pub async fn bootstrap_seller(name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let config = sealbox_aws::sdk::load_config().await;
    let clients = SellerClients::new(&config);
    let settings = sealbox_aws::seller::bootstrap::bootstrap_seller(&clients, &config, name)
        .await
        .with_context(|| format!("bootstrapping the seller's resources {name:?} (is the AWS environment set, e.g. AWS_ENDPOINT_URL for an emulator?)"))?;
    crate::aws::print_settings(&settings, json);
    Ok(ExitCode::SUCCESS)
}
