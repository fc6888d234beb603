//! The claim store conformance suite against claims as objects on the file-system store (the
//! embedded runtime's claims).

use std::sync::Arc;

use sealbox_core::conformance::claim_store;
use sealbox_core::object_claims::ObjectClaims;
use sealbox_embedded::fs_store::FsObjectStore;

mod object_claims_on_the_file_system {
    use std::sync::Arc;

    use sealbox_core::conformance::Subject;
    use sealbox_core::object_claims::ObjectClaims;
    use sealbox_embedded::fs_store::FsObjectStore;

    sealbox_core::claim_store_conformance_tests!({
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = Arc::new(FsObjectStore::new(dir.path(), false));
        Subject::new(Arc::new(ObjectClaims::new(store, "outbox")) as _).keeping(dir)
    });
}

mod claims_moved_to_another_store {
    use std::sync::Arc;

    use sealbox_core::conformance::Subject;
    use sealbox_core::object_claims::{MovedClaims, ObjectClaims};
    use sealbox_embedded::fs_store::FsObjectStore;

    sealbox_core::claim_store_conformance_tests!({
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = Arc::new(FsObjectStore::new(dir.path(), false));
        let before = ObjectClaims::new(store.clone(), "outbox");
        let now = ObjectClaims::new(store, "elsewhere");
        Subject::new(Arc::new(MovedClaims::new(before, Arc::new(now))) as _).keeping(dir)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_twice_in_one_store() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = Arc::new(FsObjectStore::new(dir.path(), false));
    // Each run claims ids of its own.
    claim_store::run(Arc::new(ObjectClaims::new(store.clone(), "outbox"))).await;
    claim_store::run(Arc::new(ObjectClaims::new(store, "outbox"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_move_the_claims_made_in_the_outbox_still_decide() {
    use sealbox_core::contract::{CONTRACT_VERSION, ClaimDocument};
    use sealbox_core::object_claims::MovedClaims;
    use sealbox_core::ports::{Claim, ClaimStore};

    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = Arc::new(FsObjectStore::new(dir.path(), false));
    let before = ObjectClaims::new(store.clone(), "outbox");
    // `now` is a store of its own (another bucket standing in for a table).
    let now = Arc::new(ObjectClaims::new(store, "elsewhere"));
    let moved = Arc::new(MovedClaims::new(before.clone(), now.clone()));

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
