//! The buyer's side of proving its AWS account to the token service: a `sts:GetCallerIdentity`
//! request signed (SigV4) with the default AWS credential chain (environment, profile, role),
//! naming the token service it is for (`sealbox_authz::caller_identity`). No secret.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::Context as _;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use sealbox_authz::caller_identity::{
    AUDIENCE_HEADER, GET_CALLER_IDENTITY, IdentityProof, sts_endpoint_from_env,
};

/// The URL a proof is signed for: the endpoint the environment names for STS (an emulator),
/// else the regional STS endpoint of the configured region.
fn sts_url(region: &str) -> String {
    match sts_endpoint_from_env() {
        Some(url) => format!("{url}/"),
        None => format!("https://sts.{region}.amazonaws.com/"),
    }
}

/// A `GetCallerIdentity` request signed with this machine's AWS credentials, for the token
/// service whose issuer is `issuer`.
pub async fn signed_proof(issuer: &str) -> anyhow::Result<IdentityProof> {
    let config = sealbox_aws::sdk::load_config().await;
    let provider = config.credentials_provider().context(
        "no AWS credentials to prove the buyer's account with: set AWS_PROFILE or \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where a role is attached (or pass \
         --secret-file for a buyer secret)",
    )?;
    let credentials = provider.provide_credentials().await.context(
        "cannot load AWS credentials (environment, profile, role) to prove the buyer's account",
    )?;
    let region = config
        .region()
        .map(ToString::to_string)
        .unwrap_or_else(|| "us-east-1".to_owned());
    sign_proof(
        credentials,
        &region,
        &sts_url(&region),
        issuer,
        SystemTime::now(),
    )
}

/// A `GetCallerIdentity` request to `sts_url` signed at `at` with `credentials` in `region`,
/// for the token service whose issuer is `issuer`.
pub fn sign_proof(
    credentials: Credentials,
    region: &str,
    sts_url: &str,
    issuer: &str,
    at: SystemTime,
) -> anyhow::Result<IdentityProof> {
    let host = sts_url
        .split_once("://")
        .map_or(sts_url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut headers = BTreeMap::from([
        ("host".to_owned(), host),
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
        ),
        (AUDIENCE_HEADER.to_owned(), issuer.to_owned()),
    ]);
    let identity: Identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .context("signing the GetCallerIdentity request")?
        .into();
    let signable = SignableRequest::new(
        "POST",
        sts_url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(GET_CALLER_IDENTITY.as_bytes()),
    )
    .context("signing the GetCallerIdentity request")?;
    let (instructions, _) = sign(signable, &params)
        .context("signing the GetCallerIdentity request")?
        .into_parts();
    for (name, value) in instructions.headers() {
        headers.insert(name.to_ascii_lowercase(), value.to_owned());
    }
    Ok(IdentityProof {
        headers,
        body: GET_CALLER_IDENTITY.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_signs_the_host_the_date_and_the_token_service_it_is_for() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("session".into()), None, "t");
        let p = sign_proof(
            creds,
            "eu-west-1",
            "https://sts.eu-west-1.amazonaws.com/",
            "seller",
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        )
        .unwrap();
        assert_eq!(p.headers["host"], "sts.eu-west-1.amazonaws.com");
        assert_eq!(p.headers[AUDIENCE_HEADER], "seller");
        assert_eq!(p.headers["x-amz-date"], "20270115T080000Z");
        assert_eq!(p.headers["x-amz-security-token"], "session");
        let auth = &p.headers["authorization"];
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20270115/eu-west-1/sts/aws4_request"
            ),
            "{auth}"
        );
        assert!(
            auth.contains(
                "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-sealbox-token-service"
            ),
            "{auth}"
        );
        assert_eq!(p.body, GET_CALLER_IDENTITY);
    }
}
