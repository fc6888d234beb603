//! sealbox core: the wire contract v1, the ports handlers depend on, and the embedded adapters.

pub mod adapters;
pub mod contract;
pub mod error;
pub mod layout;
pub mod outcome;
pub mod ports;
pub mod retry;

pub use error::{Error, Result};
