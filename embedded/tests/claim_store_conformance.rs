//! The claim store conformance suite against claims as objects on the file-system store (the
//! embedded runtime's claims).

use std::sync::Arc;

use sealbox_core::conformance::claim_store;
use sealbox_core::object_claims::ObjectClaims;
use sealbox_embedded::fs_store::FsObjectStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_claims_on_the_file_system_pass_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = Arc::new(FsObjectStore::new(dir.path(), false));
    claim_store::run(Arc::new(ObjectClaims::new(store.clone(), "outbox"))).await;
    // Twice in one store: each run claims ids of its own.
    claim_store::run(Arc::new(ObjectClaims::new(store, "outbox"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_moved_to_another_store_pass_the_suite_and_the_outbox_claims_still_decide() {
    use sealbox_core::contract::{CONTRACT_VERSION, ClaimDocument};
    use sealbox_core::object_claims::MovedClaims;
    use sealbox_core::ports::{Claim, ClaimStore};

    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = Arc::new(FsObjectStore::new(dir.path(), false));
    let before = ObjectClaims::new(store.clone(), "outbox");
    // `now` is a store of its own (another bucket standing in for a table).
    let now = Arc::new(ObjectClaims::new(store, "elsewhere"));
    let moved = Arc::new(MovedClaims::new(before.clone(), now.clone()));
    claim_store::run(moved.clone()).await;

    // A claim made in the outbox before the move decides: its owner still owns the request,
    // and nobody else can claim it in the new store.
    let old = ClaimDocument {
        version: CONTRACT_VERSION,
        buyer: "b1".into(),
        request_id: "from-before".into(),
        owner: "job:old".into(),
        request_etag: "e".into(),
        claimed_at: time::OffsetDateTime::UNIX_EPOCH,
        rejection: None,
    };
    assert_eq!(
        before.claim(&old).await.unwrap(),
        Claim::Owned { fresh: true }
    );
    let mut other = old.clone();
    other.owner = "job:new".into();
    assert_eq!(
        moved.claim(&other).await.unwrap(),
        Claim::OwnedBy(Box::new(old.clone()))
    );
    assert_eq!(
        moved.claim(&old).await.unwrap(),
        Claim::Owned { fresh: false }
    );
    assert_eq!(now.read("b1", "from-before").await.unwrap(), None);
    assert_eq!(moved.read("b1", "from-before").await.unwrap(), Some(old));
}
