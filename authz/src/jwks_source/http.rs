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
            // The document may sit behind a cache (it is served with max-age): a verifier
            // counts a fetch as newer than a request, so it must get the origin's copy, not an
            // older one a cache kept (RFC 9111 §5.2.1.4).
            .header(reqwest::header::CACHE_CONTROL, "no-cache")
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn a_fetch_asks_caches_for_the_origins_copy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            let body = br#"{"keys": []}"#;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            conn.write_all(head.as_bytes()).await.unwrap();
            conn.write_all(body).await.unwrap();
            String::from_utf8_lossy(&request).to_ascii_lowercase()
        });
        let source =
            HttpJwks::new(&format!("http://{addr}/jwks.json"), Duration::from_secs(5)).unwrap();
        assert_eq!(source.fetch().await.unwrap(), br#"{"keys": []}"#);
        let request = server.await.unwrap();
        assert!(request.contains("cache-control: no-cache"), "{request}");
    }
}
