//! The keyset file as a key store: one JSON file readable by its owner only, changed under an
//! exclusive lock so two key commands at once cannot undo each other.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{KeyStore, Rotation};
use crate::error::AuthzError;
use crate::keyset::{KeyAlg, KeyEntry, KeyState, Keyset, RETIRE_AFTER};

/// Keys in a keyset file, private halves included (mode 0600).
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    path: PathBuf,
}

impl FileKeyStore {
    /// The key store of the keyset file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileKeyStore { path: path.into() }
    }

    /// The keyset file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads, changes and saves the keyset under the lock file beside it. Blocking.
    fn change<T>(
        path: &Path,
        change: impl FnOnce(&mut Keyset) -> Result<(T, bool), AuthzError>,
    ) -> Result<(Keyset, T), AuthzError> {
        // Loaded once before locking, so a missing keyset says `seller keys init` and the lock
        // file is never created in a folder without one.
        Keyset::load(path)?;
        let lock_path = path.with_extension("lock");
        let io = |source| AuthzError::Io {
            path: lock_path.display().to_string(),
            source,
        };
        let lock = std::fs::File::create(&lock_path).map_err(io)?;
        lock.lock().map_err(io)?;
        let mut ks = Keyset::load(path)?;
        let (out, changed) = change(&mut ks)?;
        if changed {
            ks.save(path)?;
        }
        Ok((ks, out))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> Result<T, AuthzError> + Send + 'static,
    ) -> Result<T, AuthzError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&path))
            .await
            .map_err(|e| AuthzError::KeyStore(format!("keyset file task: {e}")))?
    }
}

#[async_trait]
impl KeyStore for FileKeyStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn init(&self, issuer: &str, alg: KeyAlg) -> Result<Keyset, AuthzError> {
        let issuer = issuer.to_owned();
        self.blocking(move |path| Keyset::init(path, &issuer, alg))
            .await
    }

    async fn load(&self) -> Result<Keyset, AuthzError> {
        self.blocking(Keyset::load).await
    }

    async fn rotate(&self, from: &str, now: OffsetDateTime) -> Result<Rotation, AuthzError> {
        let from = from.to_owned();
        let (keyset, rotated) = self
            .blocking(move |path| {
                Self::change(path, |ks| {
                    if ks.current()?.kid != from {
                        return Ok((false, false));
                    }
                    ks.rotate(now, RETIRE_AFTER)?;
                    Ok((true, true))
                })
            })
            .await?;
        Ok(Rotation { keyset, rotated })
    }

    async fn revoke(
        &self,
        kid: &str,
        now: OffsetDateTime,
    ) -> Result<(Keyset, KeyState), AuthzError> {
        let kid = kid.to_owned();
        self.blocking(move |path| {
            Self::change(path, |ks| Ok((ks.revoke(&kid, now, RETIRE_AFTER)?, true)))
        })
        .await
    }

    async fn retire_expired(&self, now: OffsetDateTime) -> Result<Keyset, AuthzError> {
        let (ks, ()) = self
            .blocking(move |path| {
                Self::change(path, |ks| {
                    let before = (ks.keys.len(), ks.revoked.len());
                    ks.retire_expired(now);
                    Ok(((), before != (ks.keys.len(), ks.revoked.len())))
                })
            })
            .await?;
        Ok(ks)
    }

    async fn sign(&self, key: &KeyEntry, input: &[u8]) -> Result<Vec<u8>, AuthzError> {
        key.sign_locally(input)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_store_passes_the_key_store_suite() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        crate::key_store::conformance::run(|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let store: Arc<dyn KeyStore> = Arc::new(FileKeyStore::new(
                dir.path().join(format!("keyset-{i}.json")),
            ));
            async move { store }
        })
        .await;
    }
}
