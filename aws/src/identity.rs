//! Proving this process's AWS account to the seller's token service without a secret: a
//! `sts:GetCallerIdentity` request signed (SigV4) with the credentials the SDK finds
//! (environment, profile, the Lambda function's role), naming the token service it is for
//! (`sealbox_authz::caller_identity`). The CLI's `buyer token --backend aws` signs one;
//! [`IamTokenSource`] gets tokens with it for the ingest function (`TokenSource: iam`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use sealbox_authz::caller_identity::{
    AUDIENCE_HEADER, GET_CALLER_IDENTITY, IdentityProof, sts_endpoint_from_env,
};
use sealbox_core::ports::{TokenSource, TokenUnavailable};
use time::OffsetDateTime;

/// Why no proof could be made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The SDK found no credentials, or could not load them.
    #[error(
        "no AWS credentials to prove the account with: {0} (set AWS_PROFILE or \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where a role is attached)"
    )]
    NoCredentials(String),
    /// The request could not be signed.
    #[error("cannot sign the GetCallerIdentity request: {0}")]
    Signing(String),
}

/// The URL a proof is signed for: the endpoint the environment names for STS (an emulator),
/// else the regional STS endpoint of the configured region.
fn sts_url(region: &str) -> String {
    match sts_endpoint_from_env() {
        Some(url) => format!("{url}/"),
        None => format!("https://sts.{region}.amazonaws.com/"),
    }
}

/// A `GetCallerIdentity` request signed with the credentials of `config`, for the token
/// service whose issuer is `issuer`.
pub async fn signed_proof(
    config: &SdkConfig,
    issuer: &str,
) -> Result<IdentityProof, IdentityError> {
    let provider = config
        .credentials_provider()
        .ok_or_else(|| IdentityError::NoCredentials("no credential provider".into()))?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| IdentityError::NoCredentials(e.to_string()))?;
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
) -> Result<IdentityProof, IdentityError> {
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
        .map_err(|e| IdentityError::Signing(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        sts_url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(GET_CALLER_IDENTITY.as_bytes()),
    )
    .map_err(|e| IdentityError::Signing(e.to_string()))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| IdentityError::Signing(e.to_string()))?
        .into_parts();
    for (name, value) in instructions.headers() {
        headers.insert(name.to_ascii_lowercase(), value.to_owned());
    }
    Ok(IdentityProof {
        headers,
        body: GET_CALLER_IDENTITY.to_owned(),
    })
}

/// A token is reused while it has at least this long to live.
const REUSE_MARGIN: Duration = Duration::from_secs(120);

/// How long the token service has to answer: well inside the ingest function's 10 s timeout, so
/// a slow service is an outage the batch reports (its events retried), not a killed invocation.
const TOKEN_SERVICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Tokens from the seller's token service, proving the account of this process's AWS
/// credentials (the ingest function's role under `TokenSource: iam`). One token is kept and
/// reused until two minutes before it expires; callers that arrive while it is being fetched
/// wait for that one fetch.
pub struct IamTokenSource {
    config: SdkConfig,
    route: String,
    issuer: String,
    client: reqwest::Client,
    cached: tokio::sync::Mutex<Option<(String, OffsetDateTime)>>,
}

impl IamTokenSource {
    /// Tokens from the token service at `url` (its base URL or its `/token` route) of the
    /// seller whose issuer is `issuer`, proving the account of `config`'s credentials.
    pub fn new(config: SdkConfig, url: &str, issuer: &str) -> IamTokenSource {
        let base = url.trim().trim_end_matches('/');
        let base = base.strip_suffix("/token").unwrap_or(base);
        IamTokenSource {
            config,
            route: format!("{}/token", base.trim_end_matches('/')),
            issuer: issuer.to_owned(),
            client: reqwest::Client::builder()
                .timeout(TOKEN_SERVICE_TIMEOUT)
                .build()
                .unwrap_or_default(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The token source `settings` ask for: with `SEALBOX_TOKEN_SOURCE=iam`, tokens from the
    /// token service at `SEALBOX_TOKEN_SERVICE_URL` (then required) for `SEALBOX_ISSUER`;
    /// otherwise none (request objects carry their own).
    pub fn from_settings(
        config: SdkConfig,
        settings: &crate::config::Settings,
    ) -> Result<Option<std::sync::Arc<dyn TokenSource>>, crate::config::ConfigError> {
        use crate::config::{Settings, Var};
        if settings.get(Var::TokenSource) != "iam" {
            return Ok(None);
        }
        let needed = Settings::from_env(&[Var::TokenServiceUrl, Var::Issuer])?;
        let url = needed.get(Var::TokenServiceUrl);
        tracing::info!(token_service = %url, "request objects without a token get one with this process's AWS identity");
        let source = IamTokenSource::new(config, url, needed.get(Var::Issuer));
        Ok(Some(std::sync::Arc::new(source)))
    }

    async fn fetch(&self) -> Result<(String, OffsetDateTime), TokenUnavailable> {
        // Credentials we cannot load or sign with are our own fault, not the request's.
        let proof = signed_proof(&self.config, &self.issuer)
            .await
            .map_err(|e| TokenUnavailable::Unreachable(e.to_string()))?;
        let unreachable = |why: String| {
            TokenUnavailable::Unreachable(format!("the token service at {}: {why}", self.route))
        };
        let resp = self
            .client
            .post(&self.route)
            .json(&serde_json::json!({ "aws_sts": proof }))
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        let said = || {
            format!(
                "HTTP {} {}: {}",
                status.as_u16(),
                answer["error"].as_str().unwrap_or("?"),
                answer["message"].as_str().unwrap_or("")
            )
        };
        // A refusal about the proof or the account is the request's answer; a wrong URL
        // (404), throttling and the service's own failures are waited out.
        if status.is_client_error() && !matches!(status.as_u16(), 404 | 408 | 429) {
            return Err(TokenUnavailable::Refused(said()));
        }
        if !status.is_success() {
            return Err(unreachable(said()));
        }
        let token = answer["token"].as_str();
        let expires_at = answer["expires_at"].as_str().and_then(|s| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        });
        match (token, expires_at) {
            (Some(t), Some(e)) => Ok((t.trim().to_owned(), e)),
            _ => Err(unreachable(format!(
                "HTTP {} without a token and its expiry: is this a sealbox token service?",
                status.as_u16()
            ))),
        }
    }
}

#[async_trait]
impl TokenSource for IamTokenSource {
    async fn token(&self) -> Result<String, TokenUnavailable> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires_at)) = cached.as_ref()
            && *expires_at - OffsetDateTime::now_utc() > REUSE_MARGIN
        {
            return Ok(token.clone());
        }
        let (token, expires_at) = self.fetch().await?;
        tracing::info!(expires_at = %expires_at, "got a token from the token service with this function's AWS identity");
        *cached = Some((token.clone(), expires_at));
        Ok(token)
    }
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
