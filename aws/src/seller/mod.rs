//! The seller's side on AWS: signing keys that never leave KMS, with their states in a DynamoDB
//! item; the subscription registry in a DynamoDB table; the published keys document in S3.
//! Behind the `seller` feature, so no buyer's Lambda function compiles it.

pub mod bootstrap;
pub mod dynamodb_subscriptions;
pub mod kms_keys;
#[cfg(feature = "marketplace")]
pub mod marketplace;
pub mod publish;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::config::{Settings, Var};
use crate::sdk::Clients;

/// The clients of the seller's side, from one SDK configuration.
#[derive(Debug, Clone)]
pub struct SellerClients {
    /// S3, for the published keys (path-style when an endpoint URL is set).
    pub s3: aws_sdk_s3::Client,
    /// KMS, for the signing keys.
    pub kms: aws_sdk_kms::Client,
    /// DynamoDB, for key states and subscriptions.
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl SellerClients {
    /// Clients for `config`.
    pub fn new(config: &SdkConfig) -> Self {
        SellerClients {
            s3: Clients::new(config).s3,
            kms: aws_sdk_kms::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
        }
    }

    /// Clients from the standard AWS environment.
    pub async fn from_env() -> Self {
        SellerClients::new(&crate::sdk::load_config().await)
    }

    /// The key store, subscription registry and publisher that `settings` name (which must
    /// hold [`Var::SELLER`]).
    pub fn seller(&self, settings: &Settings) -> Seller {
        Seller {
            keys: kms_keys::KmsKeyStore::new(
                self.kms.clone(),
                self.dynamodb.clone(),
                settings.get(Var::KeysTable),
            ),
            subscriptions: dynamodb_subscriptions::DynamoDbSubscriptions::new(
                self.dynamodb.clone(),
                settings.get(Var::SubscriptionsTable),
            ),
            publisher: publish::S3Publisher::new(self.s3.clone(), settings.get(Var::JwksObject)),
        }
    }
}

/// The seller's adapters on AWS, wired from settings.
#[derive(Debug, Clone)]
pub struct Seller {
    /// Signing keys in KMS.
    pub keys: kms_keys::KmsKeyStore,
    /// Subscriptions in DynamoDB.
    pub subscriptions: dynamodb_subscriptions::DynamoDbSubscriptions,
    /// The published keys document in S3.
    pub publisher: publish::S3Publisher,
}

/// An SDK failure in a sentence: a service's refusal as its code and message (the raw response
/// would bury them), anything else (no connection, a timeout) with its chain of causes.
pub fn sdk_sentence<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("(no message)")
        ),
        None => DisplayErrorContext(e).to_string(),
    }
}
