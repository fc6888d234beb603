//! Claim store port: who owns a request, decided once. The first claim of (buyer, request_id)
//! wins for good; its owner (a job and its redeliveries, or ingest rejecting one version of the
//! request object) writes the outcome, and everyone else reads who that is.

use async_trait::async_trait;

use crate::contract::ClaimDocument;
use crate::error::Result;

/// What an attempt to claim a request found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This attempt owns the request. `fresh`: it created the claim just now; otherwise an
    /// earlier delivery of the same owner did, and may have written the outcome already.
    Owned {
        /// Created by this call.
        fresh: bool,
    },
    /// Another attempt owns the request.
    OwnedBy(Box<ClaimDocument>),
}

/// Where claims live: create-new, then read by anyone.
#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Records `claim` unless (buyer, request_id) is claimed already: [`Claim::Owned`] when
    /// this call created it or the claim there has the same owner, else [`Claim::OwnedBy`]
    /// the claim there, unchanged. Of racing claims, exactly one is created.
    async fn claim(&self, claim: &ClaimDocument) -> Result<Claim>;

    /// The claim of (buyer, request_id), whole (an ingest claim's rejection included), if any.
    async fn read(&self, buyer: &str, request_id: &str) -> Result<Option<ClaimDocument>>;
}
