//! sealbox authz: the seller's keyset and its published keys, the subscription registry, the
//! token service, and token verification for ingest.

pub mod agreements;
pub mod authorizer;
pub mod buyer_secret;
pub mod caller_identity;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod error;
pub mod jose;
pub mod jwks;
pub mod jwks_source;
pub mod jwks_verifier;
pub mod key_store;
pub mod keyset;
pub mod private_file;
pub mod rotation;
pub mod subscriptions;
pub mod token;
#[cfg(feature = "token-service")]
pub mod token_service;
pub mod verify;

pub use authorizer::Authorizer;
pub use error::AuthzError;
pub use jwks_verifier::{JwksVerifier, RefreshPolicy};
pub use key_store::KeyStore;
pub use keyset::{KeyAlg, KeyState, Keyset};
pub use token::{TokenClaims, TokenIssuer};
pub use verify::{TokenRejection, Verifier, VerifierConfig};
