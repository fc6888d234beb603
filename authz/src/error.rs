//! Errors of the seller's key and token operations.

/// What went wrong with a keyset or while issuing a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// The keyset file does not exist yet.
    #[error("no keyset at {0}: run `sealbox seller keys init`")]
    NoKeyset(String),
    /// The keyset file exists but cannot be read or written.
    #[error("keyset file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The keyset file is not a valid keyset.
    #[error("keyset file {path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A keyset already exists where a new one was to be created.
    #[error("a keyset already exists at {0}; rotate it instead of replacing it")]
    Exists(String),
    /// No key with this id is in the keyset.
    #[error("no key {0:?} in the keyset; see `sealbox seller keys list`")]
    UnknownKey(String),
    /// The key's private half is not in the keyset file (it lives in KMS).
    #[error("key {0} lives in KMS: sign through the key store")]
    NotLocal(String),
    /// The key store's backend failed (KMS, DynamoDB, a lock file).
    #[error("key store: {0}")]
    KeyStore(String),
    /// The signing input is larger than KMS signs in one call.
    #[error("a token of {0} bytes to sign is over KMS's {max}-byte message limit", max = crate::jose::KMS_MAX_MESSAGE_BYTES)]
    TooLargeToSign(usize),
    /// The keyset has no key in state `current`.
    #[error("the keyset has no current signing key")]
    NoCurrentKey,
    /// Key generation or signing failed in the crypto library.
    #[error("crypto failure: {0}")]
    Crypto(String),
    /// A requested token lifetime is out of range.
    #[error("token lifetime must be between 1 s and 12 h, got {0} s")]
    BadLifetime(u64),
    /// The buyer id is not acceptable.
    #[error("invalid buyer id {0:?}: 1-64 of [A-Za-z0-9._-]")]
    BadBuyer(String),
    /// A published key document is not a usable JWK Set.
    #[error("published keys are not usable: {0}")]
    BadJwks(String),
    /// The published keys could not be fetched.
    #[error("cannot fetch the published keys from {source_name}: {detail}")]
    JwksUnavailable {
        /// Where they were fetched from.
        source_name: String,
        /// What went wrong.
        detail: String,
    },
    /// The subscription registry failed.
    #[error("subscription registry: {0}")]
    Registry(String),
    /// The Marketplace Agreement Service failed in a way worth retrying (an outage, throttling).
    #[error("Marketplace Agreement Service: {0}")]
    Marketplace(String),
    /// The buyer has no subscription to the product.
    #[error("buyer {buyer} has no subscription to {product}; see `sealbox seller subscriptions`")]
    NoSubscription {
        /// Buyer id.
        buyer: String,
        /// Product id.
        product: String,
    },
}
