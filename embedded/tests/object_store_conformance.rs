//! The object store conformance suite against the file-system adapter.
// Test support: a panic is how a test reports a broken precondition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sealbox_core::conformance::object_store;
use sealbox_embedded::fs_store::FsObjectStore;

#[tokio::test]
async fn fs_object_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = FsObjectStore::new(dir.path(), false);
    object_store::run(&store, "outbox").await;
    // Twice in one bucket: each run keeps to its own prefix.
    object_store::run(&store, "outbox").await;
}

#[tokio::test]
async fn durable_fs_object_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = FsObjectStore::new(dir.path(), true);
    object_store::run(&store, "inbox").await;
}
