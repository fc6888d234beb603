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
