//! A [`ClaimStore`] in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::Result;
use crate::contract::ClaimDocument;
use crate::ports::claim_store::{Claim, ClaimStore};

/// Claims by (buyer, request id).
#[derive(Default)]
pub struct MemoryClaims {
    claims: Mutex<HashMap<(String, String), ClaimDocument>>,
}

impl MemoryClaims {
    /// No claims.
    pub fn new() -> MemoryClaims {
        MemoryClaims::default()
    }
}

#[async_trait]
impl ClaimStore for MemoryClaims {
    async fn claim(&self, claim: &ClaimDocument) -> Result<Claim> {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        let at = (claim.buyer.clone(), claim.request_id.clone());
        Ok(match claims.get(&at) {
            None => {
                claims.insert(at, claim.clone());
                Claim::Owned { fresh: true }
            }
            Some(held) if held.owner == claim.owner => Claim::Owned { fresh: false },
            Some(held) => Claim::OwnedBy(Box::new(held.clone())),
        })
    }

    async fn read(&self, buyer: &str, request_id: &str) -> Result<Option<ClaimDocument>> {
        let claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        Ok(claims
            .get(&(buyer.to_owned(), request_id.to_owned()))
            .cloned())
    }
}
