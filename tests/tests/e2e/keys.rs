//! Key rotation and revocation while the embedded stack runs.

use std::time::Duration;

use sealbox::cases::Case;
use sealbox::commands::{keys_revoke, keys_rotate};
use sealbox_authz::{Keyset, TokenIssuer};
use sealbox_core::contract::{EventKind, Reason};
use sealbox_tests::{Embedded, text_case};

const BUYER: &str = "111122223333";

fn case(id: &str, token: &str) -> Case {
    text_case(BUYER, id, token)
}

async fn outcome(e: &mut Embedded, id: &str, token: &str) -> (EventKind, Option<Reason>) {
    e.drop_request(&case(id, token)).await;
    let n = e.next_note(Duration::from_secs(30)).await;
    assert_eq!(n.request_id, id);
    (n.event, n.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_issued_tokens_working_and_revocation_stops_them_at_once() {
    let mut e = Embedded::start(|_| {}).await;
    let data = e.dir.path().to_owned();
    let product = e.opts.product.clone();
    let old_token = e.ctx.token(BUYER).unwrap();
    let old_kid = Keyset::load(&e.stack.paths.keyset)
        .unwrap()
        .current()
        .unwrap()
        .kid
        .clone();
    assert_eq!(
        outcome(&mut e, "before", &old_token).await.0,
        EventKind::InferenceCompleted
    );

    keys_rotate(&data).await.unwrap();
    let ks = Keyset::load(&e.stack.paths.keyset).unwrap();
    assert_ne!(ks.current().unwrap().kid, old_kid);
    let new_token = TokenIssuer::new(&ks)
        .unwrap()
        .issue(BUYER, &product, "g-test", Duration::from_secs(600))
        .unwrap();
    // The new current key was published as `next` before the rotation: usable at once.
    assert_eq!(
        outcome(&mut e, "new-key", &new_token).await.0,
        EventKind::InferenceCompleted
    );
    assert_eq!(
        outcome(&mut e, "old-key", &old_token).await.0,
        EventKind::InferenceCompleted
    );

    keys_revoke(&data, &old_kid).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        outcome(&mut e, "revoked", &old_token).await,
        (EventKind::RequestRejected, Some(Reason::TokenKeyRevoked))
    );
    assert_eq!(
        outcome(&mut e, "after", &new_token).await.0,
        EventKind::InferenceCompleted
    );
    e.stack.stop().await;
}
