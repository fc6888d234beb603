//! Claims as objects: `<buyer>/claims/<request_id>.json` in the outbox of any [`ObjectStore`],
//! created with create-new (`If-None-Match: *` on S3, `RENAME_NOREPLACE` on a file system). The
//! [`ClaimStore`] of the embedded runtime, and of AWS stacks whose claims live in S3.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::contract::ClaimDocument;
use crate::error::{Error, Result};
use crate::layout::claim_key;
use crate::ports::claim_store::{Claim, ClaimStore};
use crate::ports::object_store::{ObjectStore, PutMode};

/// Largest claim read back (a claim carries at most one rejection document).
const MAX_CLAIM_BYTES: u64 = 64 * 1024;

/// Claims kept as objects in `bucket` of `store`.
#[derive(Clone)]
pub struct ObjectClaims {
    store: Arc<dyn ObjectStore>,
    bucket: String,
}

impl ObjectClaims {
    /// Claims in `bucket` (the outbox) of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, bucket: impl Into<String>) -> ObjectClaims {
        ObjectClaims {
            store,
            bucket: bucket.into(),
        }
    }
}

#[async_trait]
impl ClaimStore for ObjectClaims {
    async fn claim(&self, claim: &ClaimDocument) -> Result<Claim> {
        let key = claim_key(&claim.buyer, &claim.request_id);
        let body = serde_json::to_vec(claim).map_err(|e| Error::json("encoding a claim", e))?;
        match self
            .store
            .put(&self.bucket, &key, Bytes::from(body), PutMode::CreateNew)
            .await
        {
            Ok(_) => Ok(Claim::Owned { fresh: true }),
            Err(Error::AlreadyExists { .. }) => {
                match self.read(&claim.buyer, &claim.request_id).await? {
                    Some(held) if held.owner == claim.owner => Ok(Claim::Owned { fresh: false }),
                    Some(held) => Ok(Claim::OwnedBy(Box::new(held))),
                    None => Err(Error::Task(format!("{key} vanished after a conflict"))),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn read(&self, buyer: &str, request_id: &str) -> Result<Option<ClaimDocument>> {
        let key = claim_key(buyer, request_id);
        match self.store.get(&self.bucket, &key, MAX_CLAIM_BYTES).await {
            Ok((_, body)) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| Error::json(format!("reading claim {key}"), e)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Claims moved from the outbox to another store (`now`), as when a stack upgrades in place to
/// claims in DynamoDB: a claim made in the outbox before the move still decides its request.
/// Each claim first reads the outbox's (one GET, a 404 nearly always); only where there is none
/// does `now` decide. Once the outbox's claims are past the outcomes' retention, `now` alone
/// will do.
#[derive(Clone)]
pub struct MovedClaims {
    before: ObjectClaims,
    now: Arc<dyn ClaimStore>,
}

impl MovedClaims {
    /// Claims in `now`, the outbox's claims of `before` still deciding their requests.
    pub fn new(before: ObjectClaims, now: Arc<dyn ClaimStore>) -> MovedClaims {
        MovedClaims { before, now }
    }
}

#[async_trait]
impl ClaimStore for MovedClaims {
    async fn claim(&self, claim: &ClaimDocument) -> Result<Claim> {
        match self.before.read(&claim.buyer, &claim.request_id).await? {
            Some(held) if held.owner == claim.owner => Ok(Claim::Owned { fresh: false }),
            Some(held) => Ok(Claim::OwnedBy(Box::new(held))),
            None => self.now.claim(claim).await,
        }
    }

    async fn read(&self, buyer: &str, request_id: &str) -> Result<Option<ClaimDocument>> {
        match self.before.read(buyer, request_id).await? {
            Some(held) => Ok(Some(held)),
            None => self.now.read(buyer, request_id).await,
        }
    }
}
