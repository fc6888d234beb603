//! Seller authorization end to end: subscriptions and the token service through the CLI, key
//! rotation under load, and an outage of the published keys' source.

// Helpers outside #[test] functions: a failed setup is a failed test.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sealbox::cases::{Case, SAMPLE_ROWS};
use sealbox::commands::keys_rotate;
use sealbox::stack::KeysSource;
use sealbox_authz::keyset::RETIRE_AFTER;
use sealbox_authz::{KeyAlg, Keyset, TokenIssuer};
use sealbox_core::contract::{EventKind, OutcomeDocument, Reason};
use sealbox_tests::{Embedded, sealbox, start_up, terminate, text_case, wait_until};

const BUYER: &str = "111122223333";

fn case(id: &str, token: &str) -> Case {
    text_case(BUYER, id, token)
}

fn run(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = sealbox(data).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rejection(data: &Path, id: &str) -> Option<OutcomeDocument> {
    let doc = data.join(format!("buckets/outbox/{BUYER}/rejected/{id}.json"));
    serde_json::from_slice(&std::fs::read(doc).ok()?).ok()
}

#[test]
fn a_granted_buyer_gets_tokens_and_results_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut up = start_up(data, &["--jwks-refresh", "1s"]);
    let secret = data.join("buyer.secret");
    let secret_arg = secret.to_str().unwrap();

    let (ok, _, err) = run(
        data,
        &[
            "seller",
            "grant",
            BUYER,
            "--until",
            "2099-12-31",
            "--secret-out",
            secret_arg,
        ],
    );
    assert!(ok, "{err}");
    let (ok, list, _) = run(data, &["seller", "subscriptions", "--json"]);
    assert!(ok);
    let sub: serde_json::Value = serde_json::from_str(list.trim()).unwrap();
    assert_eq!(
        (
            sub["buyer"].as_str(),
            sub["status"].as_str(),
            sub["expires_at"].as_str()
        ),
        (Some(BUYER), Some("active"), Some("2100-01-01T00:00:00Z"))
    );

    let token_args = [
        "buyer",
        "token",
        "--buyer",
        BUYER,
        "--secret-file",
        secret_arg,
    ];
    let (ok, first, err) = run(data, &token_args);
    assert!(ok, "{err}");
    let (_, again, _) = run(data, &token_args);
    assert_eq!(first, again, "the cached token is reused");

    let input = data.join("rows.csv");
    std::fs::write(&input, SAMPLE_ROWS[0]).unwrap();
    let (ok, _, err) = run(
        data,
        &[
            "buyer",
            "submit",
            "--buyer",
            BUYER,
            "--secret-file",
            secret_arg,
            input.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let result = data.join(format!("buckets/outbox/{BUYER}/results/rows.out"));
    assert!(
        wait_until(Duration::from_secs(30), || result.is_file()),
        "submitted without --token, the request was not answered"
    );

    let (ok, _, err) = run(data, &["seller", "revoke", BUYER]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(data, &[&token_args[..], &["--fresh"]].concat());
    assert!(!ok);
    assert!(err.contains("HTTP 403") && err.contains("revoked"), "{err}");
    let (ok, _, err) = run(data, &["seller", "token", "--buyer", BUYER]);
    assert!(
        !ok && err.contains("revoked"),
        "a revoked buyer gets no token by hand either: {err}"
    );

    // The token issued before the revocation stops within one refresh interval.
    let old = first.trim();
    let late = data.join("late.csv");
    std::fs::write(&late, SAMPLE_ROWS[0]).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let (ok, _, err) = run(
        data,
        &[
            "buyer",
            "submit",
            "--buyer",
            BUYER,
            "--token",
            old,
            late.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let rejected = wait_until(Duration::from_secs(30), || {
        rejection(data, "late").is_some()
    });
    terminate(&up);
    let _ = up.wait();
    assert!(rejected, "the revoked buyer's token was not refused");
    assert_eq!(
        rejection(data, "late").unwrap().reason,
        Reason::TokenBuyerRevoked
    );

    let (ok, _, _) = run(
        data,
        &["seller", "keys", "jwks", "--object", "public/jwks.json"],
    );
    assert!(ok);
    let published: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("buckets/public/jwks.json")).unwrap())
            .unwrap();
    assert_eq!(published["denied_grants"][0]["grant"], sub["grant_id"]);
    let text = published.to_string();
    assert!(
        !text.contains(BUYER) && !text.contains("\"sub\""),
        "the published document names no buyer: {text}"
    );
    assert_eq!(published["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_keys_under_load_rejects_no_request_and_retired_keys_stop_working() {
    // Keys refreshed every 0.5 s, and an unknown kid allowed a fetch of its own only every 10 s
    // (the default): a token from a key published since the last refresh finds no fetch
    // allowed, and its request must wait for the next refresh instead of being rejected.
    let mut e = Embedded::start(|opts| {
        opts.jwks_refresh.unknown_kid_min_interval = Duration::from_secs(10);
    })
    .await;
    let data = e.dir.path().to_owned();
    let keyset_path = e.stack.paths.keyset.clone();
    let product = e.opts.product.clone();
    let first_token = e.ctx.token(BUYER).unwrap();

    // Load: a request every 20 ms, each with a token from whatever key signs at that moment,
    // or the first token of the run (its key goes previous, then ages out at the end).
    let stop = Arc::new(AtomicBool::new(false));
    let store = e.stack.store.clone();
    let load = {
        let stop = stop.clone();
        let first = first_token.clone();
        let path = keyset_path.clone();
        let product = product.clone();
        tokio::spawn(async move {
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let token = if sent.is_multiple_of(3) {
                    first.clone()
                } else {
                    let ks = Keyset::load(&path).unwrap();
                    TokenIssuer::new(&ks)
                        .unwrap()
                        .issue(BUYER, &product, "g-test", Duration::from_secs(600))
                        .unwrap()
                };
                case(&format!("load-{sent:05}"), &token)
                    .put_request(&store)
                    .await
                    .unwrap();
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    // One second apart, about as fast as the keyset is reloaded and published (within 1 s):
    // a token can name a key the verifier has not fetched yet, and its request waits for a
    // fetch newer than itself instead of being rejected. In production rotations are days apart.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        keys_rotate(&data).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(sent > 100, "only {sent} requests sent");

    let mut wrong = Vec::new();
    for _ in 0..sent {
        let n = e.next_note(Duration::from_secs(30)).await;
        if n.event != EventKind::InferenceCompleted {
            wrong.push((n.request_id, n.event, n.reason));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrongly refused during rotations: {wrong:?}"
    );

    // Every previous key ages out: as the keyset will be once their tokens have expired.
    let mut ks = Keyset::load(&keyset_path).unwrap();
    let previous = ks.keys.len() - 2;
    assert_eq!(previous, 3, "three rotations leave three previous keys");
    ks.retire_expired(time::OffsetDateTime::now_utc() + RETIRE_AFTER + Duration::from_secs(1));
    ks.save(&keyset_path).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    e.drop_request(&case("after-retirement", &first_token))
        .await;
    let n = e.next_note(Duration::from_secs(30)).await;
    assert_eq!(
        (n.request_id.as_str(), n.event, n.reason),
        (
            "after-retirement",
            EventKind::RequestRejected,
            Some(Reason::TokenUnknownKid)
        )
    );
    let current = TokenIssuer::new(&ks)
        .unwrap()
        .issue(BUYER, &product, "g-test", Duration::from_secs(600))
        .unwrap();
    e.drop_request(&case("current", &current)).await;
    assert_eq!(
        e.next_note(Duration::from_secs(30)).await.event,
        EventKind::InferenceCompleted
    );
    e.stack.stop().await;
}

/// Serves `doc` at `/jwks.json` on `addr` until the returned handle is aborted.
async fn serve_jwks(
    addr: std::net::SocketAddr,
    doc: serde_json::Value,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_outage_is_bridged_by_the_cache_then_fails_closed_then_recovers() {
    let data = tempfile::tempdir().unwrap();
    // The seller's keys and their published document, served from "elsewhere".
    let keyset_path = sealbox::stack::Paths::new(data.path()).keyset;
    let ks = Keyset::init(&keyset_path, sealbox::stack::DEFAULT_ISSUER, KeyAlg::EdDSA).unwrap();
    let doc = sealbox_authz::jwks::publish(&ks, &[]).unwrap();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let server = serve_jwks(addr, doc.clone()).await;

    let staleness = Duration::from_secs(3);
    let mut e = Embedded::start_in(data, |o| {
        o.keys_source = KeysSource::Url(format!("http://{addr}/jwks.json"));
        o.jwks_max_staleness = staleness;
    })
    .await;
    let token = e.ctx.token(BUYER).unwrap();
    let mut outcome = async |id: &str| {
        e.drop_request(&case(id, &token)).await;
        let n = e.next_note(Duration::from_secs(30)).await;
        assert_eq!(n.request_id, id);
        (n.event, n.reason)
    };
    assert_eq!(outcome("up").await.0, EventKind::InferenceCompleted);

    server.abort();
    let _ = server.await;
    let down_since = std::time::Instant::now();
    assert_eq!(
        outcome("down-but-cached").await.0,
        EventKind::InferenceCompleted,
        "the last copy serves while it is fresh enough"
    );
    assert!(
        down_since.elapsed() < staleness,
        "the machine is too slow for this test"
    );
    tokio::time::sleep(staleness + Duration::from_millis(500)).await;
    assert_eq!(
        outcome("down-and-stale").await,
        (EventKind::RequestRejected, Some(Reason::SigningKeysStale))
    );

    let server = serve_jwks(addr, doc).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        outcome("back").await.0,
        EventKind::InferenceCompleted,
        "recovers when the source returns"
    );
    server.abort();
    e.stack.stop().await;
}

#[test]
fn seller_commands_take_the_product_from_sealbox_product_as_the_buyer_commands_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let with_product = |args: &[&str]| {
        let out = sealbox(data)
            .args(args)
            .env("SEALBOX_PRODUCT", "acme-model")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    with_product(&["seller", "keys", "init"]);
    with_product(&["seller", "grant", BUYER]);
    let token = with_product(&["seller", "token", "--buyer", BUYER]);
    let payload = token.trim().split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "acme-model", "{claims}");
    with_product(&["seller", "revoke", BUYER]);
    let (ok, list, _) = run(data, &["seller", "subscriptions", "--json"]);
    assert!(ok);
    let sub: serde_json::Value = serde_json::from_str(list.trim()).unwrap();
    assert_eq!(
        (sub["product"].as_str(), sub["status"].as_str()),
        (Some("acme-model"), Some("revoked")),
        "{sub}"
    );
}
