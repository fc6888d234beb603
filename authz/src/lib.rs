//! sealbox authz: the seller's keyset, token issue, and token verification for ingest.

pub mod error;
pub mod keyset;
pub mod token;
pub mod verify;

pub use error::AuthzError;
pub use keyset::{KeyAlg, KeyState, Keyset};
pub use token::{Claims, TokenIssuer};
pub use verify::{TokenRejection, Verifier, VerifierConfig};
