//! The subscription registry conformance suite against the SQLite adapter.
// Test support: a panic is how a test reports a broken precondition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sealbox_embedded::sqlite_subscriptions::SqliteSubscriptions;

#[tokio::test]
async fn sqlite_subscriptions_pass_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let registry =
        SqliteSubscriptions::open(&dir.path().join("subscriptions.db")).expect("a new registry");
    sealbox_authz::conformance::run_all(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_subscriptions_pass_the_conformance_suite_on_a_multi_thread_runtime() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let registry =
        SqliteSubscriptions::open(&dir.path().join("subscriptions.db")).expect("a new registry");
    sealbox_authz::conformance::run_all(&registry).await;
}
