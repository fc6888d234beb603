//! The Marketplace Agreement Service's `DescribeAgreement`, for agreement events that name no
//! product (created, amended and ended events never do).

use async_trait::async_trait;
use aws_sdk_marketplaceagreement::Client;
use sealbox_authz::AuthzError;
use sealbox_authz::agreements::{AgreementDirectory, Described};
use time::OffsetDateTime;

/// The Agreement Service through the SDK.
#[derive(Debug, Clone)]
pub struct AgreementService {
    client: Client,
}

impl AgreementService {
    /// The service through `client`.
    pub fn new(client: Client) -> Self {
        AgreementService { client }
    }

    /// The service as `config` reaches it (`AWS_ENDPOINT_URL_MARKETPLACE_AGREEMENT` moves it).
    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        AgreementService::new(Client::new(config))
    }
}

#[async_trait]
impl AgreementDirectory for AgreementService {
    async fn describe(&self, id: &str) -> Result<Described, AuthzError> {
        match self
            .client
            .describe_agreement()
            .agreement_id(id)
            .send()
            .await
        {
            Ok(out) => Ok(Described::Found {
                products: out
                    .proposal_summary()
                    .map(|p| p.resources())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| r.id().map(str::to_owned))
                    .collect(),
                until: out
                    .end_time()
                    .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok()),
            }),
            Err(e) => {
                // Not found, denied or invalid: asking again will not change the answer (the
                // agreement is not this seller's, or the role lacks the permission, which the
                // function's error log and alarm surface).
                let refused = e.as_service_error().is_some_and(|s| {
                    s.is_resource_not_found_exception()
                        || s.is_access_denied_exception()
                        || s.is_validation_exception()
                });
                let sentence = super::sdk_sentence(&e);
                if refused {
                    Ok(Described::Refused(sentence))
                } else {
                    Err(AuthzError::Marketplace(format!(
                        "DescribeAgreement {id} failed: {sentence}"
                    )))
                }
            }
        }
    }
}
