//! The object store conformance suite against the file-system adapter, each check a test of its
//! own on a store in a fresh folder, with and without syncing to disk.

mod fs_store {
    use std::sync::Arc;

    use sealbox_core::conformance::Subject;
    use sealbox_embedded::fs_store::FsObjectStore;

    sealbox_core::object_store_conformance_tests!({
        let dir = tempfile::tempdir().expect("a temporary folder");
        Subject::new(Arc::new(FsObjectStore::new(dir.path(), false)) as _).keeping(dir)
    });
}

mod durable_fs_store {
    use std::sync::Arc;

    use sealbox_core::conformance::Subject;
    use sealbox_embedded::fs_store::FsObjectStore;

    sealbox_core::object_store_conformance_tests!({
        let dir = tempfile::tempdir().expect("a temporary folder");
        Subject::new(Arc::new(FsObjectStore::new(dir.path(), true)) as _).keeping(dir)
    });
}

/// Twice in one bucket: each run keeps to its own prefix.
#[tokio::test]
async fn the_suite_runs_twice_in_one_bucket_of_the_fs_store() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = sealbox_embedded::fs_store::FsObjectStore::new(dir.path(), false);
    sealbox_core::conformance::object_store::run(&store, "outbox").await;
    sealbox_core::conformance::object_store::run(&store, "outbox").await;
}
