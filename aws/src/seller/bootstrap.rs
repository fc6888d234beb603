//! `sealbox aws bootstrap-seller`: creates, idempotently, the seller's development resources on
//! whatever endpoint the AWS environment names (an emulator or a sandbox account): the keys and
//! subscriptions tables and the bucket the keys are published in. Production uses the seller
//! CloudFormation template, which creates the same things.

use sealbox_authz::AuthzError;

use super::SellerClients;
use crate::bootstrap::Names;
use crate::config::Var;
use crate::sdk::Clients;

/// Key of the published keys document in its bucket.
pub const JWKS_KEY: &str = "jwks.json";

/// Creates what is missing of the seller's resources for `name` and returns the settings that
/// reach them.
pub async fn bootstrap_seller(
    clients: &SellerClients,
    config: &aws_config::SdkConfig,
    name: &str,
) -> Result<Vec<(Var, String)>, AuthzError> {
    // The same naming rule as the buyer's stack.
    Names::new(name).map_err(|e| AuthzError::KeyStore(e.to_string()))?;
    let keys = format!("{name}-keys");
    let subscriptions = format!("{name}-subscriptions");
    let bucket = format!("{name}-keys-published");
    super::kms_keys::create_table(&clients.dynamodb, &keys).await?;
    super::dynamodb_subscriptions::create_table(&clients.dynamodb, &subscriptions).await?;
    let region = config
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    crate::bootstrap::create_bucket(&Clients::new(config), &bucket, &region)
        .await
        .map_err(|e| AuthzError::KeyStore(e.to_string()))?;
    Ok(vec![
        (Var::KeysTable, keys),
        (Var::SubscriptionsTable, subscriptions),
        (Var::JwksObject, format!("s3://{bucket}/{JWKS_KEY}")),
    ])
}
