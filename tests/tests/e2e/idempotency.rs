//! Exactly one outcome per (buyer, request_id), however often a request arrives.

use std::time::Duration;

use sealbox::cases::good_cases;
use sealbox_core::contract::event_id;
use sealbox_core::layout::{OUTBOX, claim_key};
use sealbox_core::ports::ObjectStore;
use sealbox_tests::Embedded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_object_uploaded_twice_yields_one_outcome() {
    let mut e = Embedded::start(|_| {}).await;
    let c = good_cases(&e.ctx, 1).unwrap().remove(0);
    // Twice at once, then once more after the outcome exists.
    e.drop_request(&c).await;
    e.drop_request(&c).await;
    let first = e.next_note(Duration::from_secs(30)).await;
    e.drop_request(&c).await;
    let mut notes = vec![first];
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(3), e.notes.recv()).await {
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
    let stored: Vec<String> = e
        .stack
        .store
        .list(OUTBOX, &format!("{}/", c.buyer), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    // One claim and one outcome.
    let claim = claim_key(&c.buyer, &c.request_id);
    let outcomes: Vec<_> = stored.iter().filter(|k| **k != claim).collect();
    assert_eq!(outcomes.len(), 1, "{stored:?}");
    assert!(stored.contains(&claim), "{stored:?}");
    e.stack.stop().await;
}
