//! Conformance suite of the [`ClaimStore`] port: each check panics, naming itself, where an
//! adapter breaks a promise. Each check claims request ids of its own, so checks and runs can
//! share a store. An adapter's tests run each check as a test of its own with
//! [`claim_store_conformance_tests!`](crate::claim_store_conformance_tests):
//!
//! ```text
//! sealbox_core::claim_store_conformance_tests!(Subject::new(Arc::new(MyClaims::new()) as _));
//! ```
//!
//! [`run`] runs them all in turn, on one store.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::contract::{
    CONTRACT_VERSION, ClaimDocument, OutcomeDocument, OutcomeKind, Reason, Violation,
};
use crate::ports::claim_store::{Claim, ClaimStore};

/// A request id no other check or run uses, tagged with `name` for the reader of a failure.
fn fresh_id(name: &str) -> String {
    let run = crate::contract::JobMessage::new_job_id();
    format!("{name}-{}", &run[..8])
}

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

/// A first claim is created; the same owner claiming again (a redelivery) still owns it.
pub async fn a_first_claim_is_created_and_its_owner_keeps_it(store: &Arc<dyn ClaimStore>) {
    let first = claim("b1", &fresh_id("first"), "job:a");
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
}

/// Another owner finds the first claim, whole and unchanged; reading answers it too.
pub async fn a_second_owner_finds_the_first_claim_whole(store: &Arc<dyn ClaimStore>) {
    let id = fresh_id("second");
    let first = claim("b1", &id, "job:a");
    assert_eq!(
        store.claim(&first).await.unwrap(),
        Claim::Owned { fresh: true }
    );
    match store.claim(&claim("b1", &id, "job:b")).await.unwrap() {
        Claim::OwnedBy(held) => assert_eq!(*held, first, "the claim held is the first, whole"),
        c => panic!("a second owner must find the first claim, got {c:?}"),
    }
    assert_eq!(
        store.read("b1", &id).await.unwrap(),
        Some(first),
        "read answers the owner's claim"
    );
}

/// Nothing claimed reads as none; another buyer's request of the same id is its own.
pub async fn request_ids_are_per_buyer_and_unclaimed_ones_read_as_none(
    store: &Arc<dyn ClaimStore>,
) {
    let id = fresh_id("per-buyer");
    assert_eq!(store.read("b1", &id).await.unwrap(), None);
    assert_eq!(
        store.claim(&claim("b1", &id, "job:a")).await.unwrap(),
        Claim::Owned { fresh: true }
    );
    assert_eq!(
        store.claim(&claim("b2", &id, "job:c")).await.unwrap(),
        Claim::Owned { fresh: true },
        "request ids are per buyer"
    );
    assert_eq!(store.read("b3", &id).await.unwrap(), None);
}

/// An ingest claim carries its whole rejection, and a job after it finds it.
pub async fn an_ingest_claim_carries_its_whole_rejection(store: &Arc<dyn ClaimStore>) {
    let mut rejecting = claim("b1", &fresh_id("rejected"), "ingest:etag-1");
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
        .claim(&claim("b1", &rejecting.request_id, "job:d"))
        .await
        .unwrap()
    {
        Claim::OwnedBy(held) => assert_eq!(*held, rejecting, "the rejection rides in the claim"),
        c => panic!("a job after a rejection must find the ingest claim, got {c:?}"),
    }
}

/// Of racing claims by different owners, exactly one is created and every other sees it.
pub async fn of_racing_claims_exactly_one_is_created_and_all_see_it(store: &Arc<dyn ClaimStore>) {
    let racing = fresh_id("race");
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

/// Runs every check against `store`, in turn.
pub async fn run(store: Arc<dyn ClaimStore>) {
    a_first_claim_is_created_and_its_owner_keeps_it(&store).await;
    a_second_owner_finds_the_first_claim_whole(&store).await;
    request_ids_are_per_buyer_and_unclaimed_ones_read_as_none(&store).await;
    an_ingest_claim_carries_its_whole_rejection(&store).await;
    of_racing_claims_exactly_one_is_created_and_all_see_it(&store).await;
}

/// Runs each check of the claim store suite as a test of its own, on a [`Subject`] made anew
/// for each by the expression given (evaluated in an async test, so it may `.await`).
///
/// [`Subject`]: crate::conformance::Subject
#[macro_export]
macro_rules! claim_store_conformance_tests {
    ($subject:expr) => {
        $crate::claim_store_conformance_tests!(@checks $subject;
            a_first_claim_is_created_and_its_owner_keeps_it,
            a_second_owner_finds_the_first_claim_whole,
            request_ids_are_per_buyer_and_unclaimed_ones_read_as_none,
            an_ingest_claim_carries_its_whole_rejection,
            of_racing_claims_exactly_one_is_created_and_all_see_it,
        );
    };
    (@checks $subject:expr; $($check:ident,)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let subject: $crate::conformance::Subject<dyn $crate::ports::ClaimStore> =
                    $subject;
                $crate::conformance::claim_store::$check(&subject.adapter).await;
            }
        )+
    };
}
