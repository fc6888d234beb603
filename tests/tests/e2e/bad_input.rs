//! The table of bad request objects and hostile tokens: each ends in a rejection document with
//! its own reason code, a notification, and no panic.

use std::collections::BTreeSet;
use std::time::Duration;

use sealbox::cases::{Expect, bad_cases, good_cases};
use sealbox::demo::{collect, progress_bar, submit};
use sealbox_core::contract::OutcomeDocument;
use sealbox_core::layout::{OUTBOX, rejected_key};
use sealbox_core::ports::ObjectStore;
use sealbox_tests::Embedded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_in_the_table_gets_a_rejection_document_with_its_own_reason() {
    let mut e = Embedded::start(|_| {}).await;
    let ctx = &e.ctx;
    let bad = bad_cases(ctx).unwrap();
    let reasons: BTreeSet<_> = bad
        .iter()
        .filter_map(|c| match c.expect {
            Expect::Rejected(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(
        bad.len() >= 20 && reasons.len() >= 20,
        "{} cases, {} reasons",
        bad.len(),
        reasons.len()
    );

    let mut cases = bad.clone();
    cases.extend(good_cases(ctx, 12).unwrap());
    let written = submit(&e.stack.store, &cases, 0).await.unwrap();
    let report = collect(
        &e.stack.store,
        &cases,
        &written,
        &mut e.notes,
        &progress_bar(0, true),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(report.ok(), "{:#?}", report.mismatches);
    assert_eq!(report.completed, 12);

    // The document names the reason, the field and the rule.
    for c in bad
        .iter()
        .filter(|c| matches!(c.expect, Expect::Rejected(_)))
    {
        let (_, body) = e
            .stack
            .store
            .get(OUTBOX, &rejected_key(&c.buyer, &c.request_id), 1 << 20)
            .await
            .unwrap();
        let doc: OutcomeDocument = serde_json::from_slice(&body).unwrap();
        assert_eq!(Expect::Rejected(doc.reason), c.expect, "{}", c.name);
        assert!(
            !doc.message.is_empty() && doc.field.is_some(),
            "{}: {doc:?}",
            c.name
        );
    }
    e.stack.stop().await;
}
