//! sealbox core: the wire contract v1, the bucket layout, the outcome rules and the ports handlers
//! depend on. No backend: adapters live in `sealbox-embedded` and `sealbox-aws`.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod contract;
pub mod error;
pub mod etag;
pub mod fault;
pub mod layout;
pub mod object_claims;
pub mod outcome;
pub mod ports;
pub mod queue_handler;
pub mod retry;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use error::{Error, Result};
