//! Conformance suite of the [`ClaimStore`] port: [`run`] panics, naming the check, where an
//! adapter breaks a promise. Each run claims request ids of its own, so runs can share a store.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::contract::{
    CONTRACT_VERSION, ClaimDocument, OutcomeDocument, OutcomeKind, Reason, Violation,
};
use crate::ports::claim_store::{Claim, ClaimStore};

fn claim(buyer: &str, request_id: &str, owner: &str) -> ClaimDocument {
    ClaimDocument {
        version: CONTRACT_VERSION,
        buyer: buyer.into(),
        request_id: request_id.into(),
        owner: owner.into(),
        request_etag: "etag-1".into(),
        // Whole seconds: what every adapter keeps of an RFC 3339 time.
        claimed_at: OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp())
            .unwrap(),
        rejection: None,
    }
}

/// Runs every check against `store`.
pub async fn run(store: Arc<dyn ClaimStore>) {
    let run = crate::contract::JobMessage::new_job_id();
    let id = |name: &str| format!("{name}-{}", &run[..8]);

    // The first claim creates; the same owner again (a redelivery) still owns it.
    let first = claim("b1", &id("first"), "job:a");
    assert_eq!(
        store.claim(&first).await.unwrap(),
        Claim::Owned { fresh: true },
        "a first claim is created"
    );
    assert_eq!(
        store.claim(&first).await.unwrap(),
        Claim::Owned { fresh: false },
        "the same owner claiming again still owns it, not freshly"
    );
    // Another owner finds the first, unchanged.
    let other = claim("b1", &id("first"), "job:b");
    match store.claim(&other).await.unwrap() {
        Claim::OwnedBy(held) => assert_eq!(*held, first, "the claim held is the first, whole"),
        c => panic!("a second owner must find the first claim, got {c:?}"),
    }
    assert_eq!(
        store.read("b1", &id("first")).await.unwrap(),
        Some(first.clone()),
        "read answers the owner's claim"
    );
    // Nothing claimed: none; another buyer's request of the same id is its own.
    assert_eq!(store.read("b1", &id("never")).await.unwrap(), None);
    assert_eq!(
        store
            .claim(&claim("b2", &id("first"), "job:c"))
            .await
            .unwrap(),
        Claim::Owned { fresh: true },
        "request ids are per buyer"
    );

    // An ingest claim carries its whole rejection.
    let mut rejecting = claim("b1", &id("rejected"), "ingest:etag-1");
    let mut doc = OutcomeDocument::new(
        OutcomeKind::Rejected,
        "b1",
        &rejecting.request_id,
        &format!("b1/requests/{}.json", rejecting.request_id),
        &Violation::new(Reason::TokenExpired, "token", "exp passed"),
    );
    doc.received_at = rejecting.claimed_at;
    doc.decided_at = rejecting.claimed_at;
    rejecting.rejection = Some(doc);
    assert_eq!(
        store.claim(&rejecting).await.unwrap(),
        Claim::Owned { fresh: true }
    );
    match store
        .claim(&claim("b1", &id("rejected"), "job:d"))
        .await
        .unwrap()
    {
        Claim::OwnedBy(held) => assert_eq!(*held, rejecting, "the rejection rides in the claim"),
        c => panic!("a job after a rejection must find the ingest claim, got {c:?}"),
    }

    // Of racing claims by different owners, exactly one is created and all see it.
    let racing = id("race");
    let claims = (0..8).map(|i| {
        let store = store.clone();
        let c = claim("b1", &racing, &format!("job:{i}"));
        tokio::spawn(async move { store.claim(&c).await })
    });
    let mut fresh = 0;
    let mut owners = std::collections::BTreeSet::new();
    for c in claims {
        match c.await.unwrap().unwrap() {
            Claim::Owned { fresh: true } => fresh += 1,
            Claim::Owned { fresh: false } => panic!("no racer shares an owner"),
            Claim::OwnedBy(held) => {
                owners.insert(held.owner);
            }
        }
    }
    let winner = store.read("b1", &racing).await.unwrap().unwrap().owner;
    assert_eq!(fresh, 1, "exactly one of 8 racing claims is created");
    assert!(
        owners.iter().all(|o| *o == winner),
        "every loser sees the winner {winner}: {owners:?}"
    );
}
