//! The key store port: where the seller's signing keys live, how their states change, and what
//! signs with them. Verifiers never need it: they read the published keys.
//!
//! Adapters: [`file::FileKeyStore`] (the keyset file, owner-only, on one machine) and the KMS key
//! store of `sealbox-aws` (private keys made in KMS that never leave it, states in DynamoDB).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod file;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::AuthzError;
use crate::keyset::{KeyAlg, KeyEntry, KeyState, Keyset};

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The keyset after it.
    pub keyset: Keyset,
    /// False when the key the caller started from was no longer current: another rotation
    /// won, and `keyset` is what it made.
    pub rotated: bool,
}

/// Where the seller's keys live and change.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Where the keys are, for messages (a file, a table).
    fn location(&self) -> String;

    /// Creates a keyset with a current and a next key for `issuer`; `AuthzError::Exists` if
    /// there is one already.
    async fn init(&self, issuer: &str, alg: KeyAlg) -> Result<Keyset, AuthzError>;

    /// The keyset now; `AuthzError::NoKeyset` if none was made.
    async fn load(&self) -> Result<Keyset, AuthzError>;

    /// Rotates once if `from` is still the current key id (see [`Keyset::rotate`]). Of several
    /// rotations started from the same keyset, exactly one rotates; the others answer
    /// `rotated: false` with the winner's keyset, so a retried or doubled rotation never
    /// skips a key past verifiers that have not seen it.
    async fn rotate(&self, from: &str, now: OffsetDateTime) -> Result<Rotation, AuthzError>;

    /// Revokes key `kid` at once (see [`Keyset::revoke`]); answers the keyset after it and the
    /// state the key had.
    async fn revoke(
        &self,
        kid: &str,
        now: OffsetDateTime,
    ) -> Result<(Keyset, KeyState), AuthzError>;

    /// Drops previous keys whose tokens have all expired, and revoked-key entries that no
    /// longer matter; answers the keyset after it.
    async fn retire_expired(&self, now: OffsetDateTime) -> Result<Keyset, AuthzError>;

    /// The JOSE signature of `input` by `key`, a key of this store's keyset.
    async fn sign(&self, key: &KeyEntry, input: &[u8]) -> Result<Vec<u8>, AuthzError>;
}
