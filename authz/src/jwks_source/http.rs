//! Published keys served over HTTP(S), e.g. the token service's `/.well-known/jwks.json`.

use std::time::Duration;

use async_trait::async_trait;

use super::JwksSource;
use crate::error::AuthzError;
use crate::jwks::MAX_JWKS_BYTES;

/// Published keys fetched from a URL.
pub struct HttpJwks {
    url: String,
    client: reqwest::Client,
}

impl HttpJwks {
    /// The document at `url`; each fetch gives up after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, AuthzError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect could lead anywhere; the seller publishes at one address.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AuthzError::JwksUnavailable {
                source_name: url.to_owned(),
                detail: e.to_string(),
            })?;
        Ok(HttpJwks {
            url: url.to_owned(),
            client,
        })
    }
}

#[async_trait]
impl JwksSource for HttpJwks {
    async fn fetch(&self) -> Result<Vec<u8>, AuthzError> {
        let unavailable = |detail: String| AuthzError::JwksUnavailable {
            source_name: self.url.clone(),
            detail,
        };
        let mut resp = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| unavailable(e.to_string()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(unavailable(format!("larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}
