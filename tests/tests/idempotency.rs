//! Exactly one outcome per (buyer, request_id), however often a request arrives.

use std::time::Duration;

use bytes::Bytes;
use sealbox::cases::{CaseContext, good_cases};
use sealbox::stack::{Observers, Stack, StackOptions};
use sealbox_authz::Keyset;
use sealbox_core::contract::event_id;
use sealbox_core::layout::{INBOX, OUTBOX};
use sealbox_core::ports::{ObjectStore, PutMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_object_uploaded_twice_yields_one_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = StackOptions::new(dir.path());
    let stack = Stack::start(
        opts.clone(),
        Observers {
            notifications: Some(tx),
            jobs: None,
        },
    )
    .await
    .unwrap();
    let keyset = Keyset::load(&stack.paths.keyset).unwrap();
    let ctx = CaseContext::new(&keyset, "111122223333", "444455556666", &opts.product).unwrap();
    let cases = good_cases(&ctx, 4).unwrap();
    let c = &cases[0];
    // Twice at once, then once more after the outcome exists.
    for _ in 0..2 {
        stack
            .store
            .put(
                INBOX,
                &c.key(),
                Bytes::from(c.body.clone()),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
    }
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    stack
        .store
        .put(
            INBOX,
            &c.key(),
            Bytes::from(c.body.clone()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let mut notes = vec![first];
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
        notes.push(n);
    }
    assert!(
        notes.len() >= 2,
        "the later copy is announced again: {notes:?}"
    );
    assert!(
        notes
            .iter()
            .all(|n| n.event_id == event_id(&c.buyer, &c.request_id))
    );
    let outcomes = stack
        .store
        .list(OUTBOX, &format!("{}/", c.buyer), None, 100)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    stack.stop().await;
}
