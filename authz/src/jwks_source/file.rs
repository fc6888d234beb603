//! Published keys in a local file (written by `sealbox seller keys jwks --out`, or copied).

use std::io::Read as _;
use std::path::PathBuf;

use async_trait::async_trait;

use super::JwksSource;
use crate::error::AuthzError;
use crate::jwks::MAX_JWKS_BYTES;

/// Published keys read from a file.
pub struct FileJwks {
    path: PathBuf,
}

impl FileJwks {
    /// The document at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileJwks { path: path.into() }
    }
}

#[async_trait]
impl JwksSource for FileJwks {
    async fn fetch(&self) -> Result<Vec<u8>, AuthzError> {
        let path = self.path.clone();
        let unavailable = |detail: String| AuthzError::JwksUnavailable {
            source_name: path.display().to_string(),
            detail,
        };
        let read = tokio::task::spawn_blocking({
            let path = self.path.clone();
            move || -> std::io::Result<Vec<u8>> {
                let mut buf = Vec::new();
                std::fs::File::open(&path)?
                    .take(MAX_JWKS_BYTES as u64 + 1)
                    .read_to_end(&mut buf)?;
                Ok(buf)
            }
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?;
        read.map_err(|e| unavailable(e.to_string()))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
