//! The seller's side on AWS against moto: signing keys in KMS (ES256: moto has no Ed25519 KMS
//! keys), their states in a DynamoDB item, subscriptions in DynamoDB, and the published keys in
//! S3, driven by `sealbox seller … --backend aws` and read by `sealbox up --backend aws`.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sealbox_authz::keyset::{KeyState, Keyset};
use sealbox_authz::subscriptions::SubscriptionRegistry as _;
use sealbox_authz::{AuthzError, KeyAlg, KeyStore as _};
use sealbox_aws::seller::SellerClients;
use sealbox_aws::seller::kms_keys::KmsKeyStore;
use sealbox_tests::aws_stack::{AwsStack, BUYER, SellerSide};
use sealbox_tests::moto::Moto;
use sealbox_tests::{python, sealbox, wait_until};

/// The PyJWT tool's `verify` (scripts/pyjwt_tool.py): a JWT library sealbox did not write.
fn pyjwt_verify(jwks: &std::path::Path, token: &str) -> Result<serde_json::Value, String> {
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pyjwt_tool.py");
    let out = Command::new(python())
        .arg(tool)
        .args(["verify", "--jwks", jwks.to_str().unwrap(), "--token", token])
        .args([
            "--audience",
            "iris-classifier",
            "--issuer",
            "sealbox-seller",
        ])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn bucket_and_key(location: &str) -> (&str, &str) {
    location
        .strip_prefix("s3://")
        .and_then(|l| l.split_once('/'))
        .unwrap()
}

async fn key_store(config: &aws_config::SdkConfig, table: &str) -> KmsKeyStore {
    let clients = SellerClients::new(config);
    KmsKeyStore::new(clients.kms, clients.dynamodb, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_in_kms_verifies_in_pyjwt_and_ingest_on_aws_accepts_it() {
    let stack = AwsStack::start_with("kms-token", &[], SellerSide::Aws);
    let (bucket, key) = bucket_and_key(stack.get("SEALBOX_JWKS"));
    let doc = stack.get_object(bucket, key);
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, &doc).unwrap();
    let claims = pyjwt_verify(&jwks, &stack.token).unwrap()["claims"].clone();
    assert_eq!(claims["sub"], BUYER);
    assert_eq!(claims["grant"].as_str().map(str::len), Some(22));
    assert!(
        !doc.contains(BUYER),
        "the published document names no buyer"
    );

    let config = stack.sdk_config().await;
    let head = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
    .head_object()
    .bucket(bucket)
    .key(key)
    .send()
    .await
    .unwrap();
    assert_eq!(head.cache_control(), Some("public, max-age=60"));
    assert_eq!(head.content_type(), Some("application/jwk-set+json"));

    let daemon = stack.up(&[]);
    stack.put(
        stack.get("SEALBOX_INBOX_BUCKET"),
        &[stack.request("signed-in-kms")],
    );
    assert_eq!(stack.outcome_of("signed-in-kms"), "results");
    drop(daemon);

    // What is stored holds public keys and KMS key ids only; no code path reads a private key.
    let store = key_store(&config, stack.get("SEALBOX_KEYS_TABLE")).await;
    let keyset = store.load().await.unwrap();
    let item = aws_sdk_dynamodb::Client::new(&config)
        .get_item()
        .table_name(stack.get("SEALBOX_KEYS_TABLE"))
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S("keyset".into()),
        )
        .send()
        .await
        .unwrap();
    let stored = format!("{:?}", item.item.unwrap());
    assert!(!stored.contains("private"), "{stored}");
    for k in &keyset.keys {
        assert!(k.kms_key_id.is_some(), "{k:?}");
        assert!(matches!(
            k.private_pkcs8_pem(),
            Err(AuthzError::NotLocal(_))
        ));
        assert!(matches!(k.encoding_key(), Err(AuthzError::NotLocal(_))));
    }
}

/// Checks that `after` is `before` rotated `n` times (1 or 2): one current, one next, and the
/// keys that were current in between now previous.
fn assert_rotated(before: &Keyset, after: &Keyset, n: usize) {
    let one = |s| after.kids(s).into_iter().collect::<Vec<_>>();
    assert_eq!(one(KeyState::Current).len(), 1, "{after:?}");
    assert_eq!(one(KeyState::Next).len(), 1, "{after:?}");
    let mut previous = before.kids(KeyState::Previous);
    previous.extend(before.kids(KeyState::Current));
    if n == 2 {
        previous.extend(before.kids(KeyState::Next));
    } else {
        assert_eq!(after.kids(KeyState::Current), before.kids(KeyState::Next));
    }
    assert_eq!(after.kids(KeyState::Previous), previous, "{after:?}");
    assert_eq!(after.keys.len(), before.keys.len() + n, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_at_once_end_with_one_consistent_keyset_twenty_times() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let mut env = moto.env();
    let made = sealbox(dir.path())
        .args(["aws", "bootstrap-seller", "--name", "races", "--json"])
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(made.status.success());
    let settings: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&made.stdout).unwrap();
    env.extend(settings.clone());
    let run = |args: &[&str]| {
        sealbox(dir.path())
            .args(args)
            .args(["--backend", "aws"])
            .envs(env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let init = run(&["seller", "keys", "init", "--alg", "es256"])
        .wait_with_output()
        .unwrap();
    assert!(init.status.success());
    let config = moto.sdk_config().await;
    let store = key_store(&config, &settings["SEALBOX_KEYS_TABLE"]).await;

    // Two processes started at once: when both read the keyset before either wrote, one wins
    // and the other says so; when one finished first, the other rotates again. Either way the
    // keyset is consistent and the outputs say how many rotations there were.
    let mut raced = 0;
    for i in 0..20 {
        let before = store.load().await.unwrap();
        let (a, b) = (
            run(&["seller", "keys", "rotate"]),
            run(&["seller", "keys", "rotate"]),
        );
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let mut rotations = 0;
        for out in &outs {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if text.starts_with("rotated:") {
                rotations += 1;
            } else {
                assert!(
                    text.contains("another rotation changed the keyset first"),
                    "{text}"
                );
                raced += 1;
            }
        }
        let after = store.load().await.unwrap();
        assert_rotated(&before, &after, rotations);
    }
    eprintln!("{raced} of 20 pairs of processes raced");

    // The same race, forced: two rotations from the same key, in one process, 20 times.
    for _ in 0..20 {
        let before = store.load().await.unwrap();
        let from = before.current().unwrap().kid.clone();
        let now = time::OffsetDateTime::now_utc();
        let (a, b) = tokio::join!(store.rotate(&from, now), store.rotate(&from, now));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            u8::from(a.rotated) + u8::from(b.rotated),
            1,
            "exactly one rotation wins"
        );
        let after = store.load().await.unwrap();
        assert_rotated(&before, &after, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_buyer_is_refused_within_one_refresh_and_a_new_grant_works() {
    let stack = AwsStack::start_with("revoke", &[], SellerSide::Aws);
    let daemon = stack.up(&["--jwks-refresh", "1s"]);
    let inbox = stack.get("SEALBOX_INBOX_BUCKET").to_owned();
    stack.put(&inbox, &[stack.request("before-revoke")]);
    assert_eq!(stack.outcome_of("before-revoke"), "results");

    stack.sealbox_aws(&["seller", "revoke", BUYER]);
    let doc: serde_json::Value = serde_json::from_str(&stack.published_keys()).unwrap();
    assert_eq!(doc["denied_grants"].as_array().unwrap().len(), 1, "{doc}");
    assert!(
        !doc.to_string().contains(BUYER),
        "no buyer id published: {doc}"
    );
    // One refresh interval (1 s) and a margin: the old token is refused from then on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.put(&inbox, &[stack.request("after-revoke")]);
    assert_eq!(stack.outcome_of("after-revoke"), "rejected");
    let rejection = stack.get_object(
        stack.get("SEALBOX_OUTBOX_BUCKET"),
        &format!("{BUYER}/rejected/after-revoke.json"),
    );
    assert!(rejection.contains("token_buyer_revoked"), "{rejection}");

    // A new grant: its tokens are issued after the revocation (a later second) and work.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    stack.sealbox_aws(&["seller", "grant", BUYER]);
    let token = stack.sealbox_aws(&["seller", "token", "--buyer", BUYER]);
    let body = serde_json::to_string(&sealbox::cases::text_request(
        "regranted",
        Some(token.trim()),
        sealbox::cases::SAMPLE_ROWS[0],
    ))
    .unwrap();
    stack.put(
        &inbox,
        &[(format!("{BUYER}/requests/regranted.json"), body)],
    );
    assert_eq!(stack.outcome_of("regranted"), "results");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_kms_keys_under_load_rejects_no_request() {
    let stack = AwsStack::start_with("rotate-load", &[], SellerSide::Aws);
    let daemon = stack.up(&[]);
    let config = stack.sdk_config().await;
    let clients = SellerClients::new(&config);
    let store = Arc::new(key_store(&config, stack.get("SEALBOX_KEYS_TABLE")).await);
    let grant = sealbox_aws::seller::dynamodb_subscriptions::DynamoDbSubscriptions::new(
        clients.dynamodb.clone(),
        stack.get("SEALBOX_SUBSCRIPTIONS_TABLE"),
    )
    .credentials(BUYER, "iris-classifier")
    .await
    .unwrap()
    .unwrap()
    .subscription
    .grant_id;
    let first_token = stack.token.clone();
    let inbox = stack.get("SEALBOX_INBOX_BUCKET").to_owned();

    // Load: a request every 50 ms with a token signed in KMS by whatever key is current at
    // that moment, or (every third) the first token of the run, whose key goes previous.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let store = store.clone();
        let s3 = clients.s3.clone();
        tokio::spawn(async move {
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let token = if sent.is_multiple_of(3) {
                    first_token.clone()
                } else {
                    let ks = store.load().await.unwrap();
                    sealbox_authz::token::issue_through(
                        store.as_ref(),
                        &ks,
                        BUYER,
                        "iris-classifier",
                        &grant,
                        Duration::from_secs(600),
                    )
                    .await
                    .unwrap()
                };
                let id = format!("load-{sent:04}");
                let body = serde_json::to_vec(&sealbox::cases::text_request(
                    &id,
                    Some(&token),
                    sealbox::cases::SAMPLE_ROWS[0],
                ))
                .unwrap();
                s3.put_object()
                    .bucket(&inbox)
                    .key(format!("{BUYER}/requests/{id}.json"))
                    .body(body.into())
                    .send()
                    .await
                    .unwrap();
                sent += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sent
        })
    };
    // Three rotations one second apart, each published by the command itself.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let out = stack
            .sealbox()
            .args(["seller", "keys", "rotate", "--backend", "aws"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(sent > 40, "only {sent} requests sent");
    let ids: Vec<String> = (0..sent).map(|i| format!("load-{i:04}")).collect();
    let mut results = BTreeSet::new();
    let done = wait_until(Duration::from_secs(120), || {
        results = stack.answered("results");
        results.len() + stack.answered("rejected").len() + stack.answered("failed").len() >= sent
    });
    assert!(done, "{} of {sent} answered", results.len());
    let wrong: Vec<&String> = ids.iter().filter(|id| !results.contains(*id)).collect();
    assert!(
        wrong.is_empty(),
        "not completed during rotations: {wrong:?}"
    );
    assert_eq!(
        store.load().await.unwrap().keys.len(),
        5,
        "three rotations leave three previous keys"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_too_large_for_kms_is_refused_before_any_call() {
    let moto = Moto::start();
    let config = moto.sdk_config().await;
    let clients = SellerClients::new(&config);
    sealbox_aws::seller::kms_keys::create_table(&clients.dynamodb, "big-keys")
        .await
        .unwrap();
    let store = KmsKeyStore::new(clients.kms, clients.dynamodb, "big-keys");
    let ks = store.init("seller", KeyAlg::ES256).await.unwrap();
    let key = ks.current().unwrap();
    let big = vec![b'a'; sealbox_authz::jose::KMS_MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        store.sign(key, &big).await,
        Err(AuthzError::TooLargeToSign(4097))
    ));
    let fits = vec![b'a'; sealbox_authz::jose::KMS_MAX_MESSAGE_BYTES];
    assert_eq!(store.sign(key, &fits).await.unwrap().len(), 64);
    assert!(matches!(
        store.init("seller", KeyAlg::ES256).await,
        Err(AuthzError::Exists(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_kids_costs_one_fetch_per_interval_and_ends_in_unknown_kid() {
    let stack = AwsStack::start_with("kid-flood", &[], SellerSide::Aws);
    let (bucket, key) = bucket_and_key(stack.get("SEALBOX_JWKS"));
    let fetches = stack.moto.count_requests(&format!("GET /{bucket}/{key}"));
    let interval = Duration::from_secs(2);
    let daemon = stack.up(&["--jwks-refresh", "2s"]);
    let started = std::time::Instant::now();
    // 100 requests, each with a token of a key nobody published (100 different kids).
    let objects: Vec<(String, String)> = (0..100)
        .map(|i| {
            let stranger = Keyset::generate("sealbox-seller", KeyAlg::EdDSA).unwrap();
            let token = sealbox_authz::TokenIssuer::new(&stranger)
                .unwrap()
                .issue(
                    BUYER,
                    "iris-classifier",
                    "g-made-up",
                    Duration::from_secs(600),
                )
                .unwrap();
            let id = format!("flood-{i:03}");
            let body = serde_json::to_string(&sealbox::cases::text_request(
                &id,
                Some(&token),
                sealbox::cases::SAMPLE_ROWS[0],
            ))
            .unwrap();
            (format!("{BUYER}/requests/{id}.json"), body)
        })
        .collect();
    stack.put(stack.get("SEALBOX_INBOX_BUCKET"), &objects);
    let mut rejected = BTreeSet::new();
    let done = wait_until(Duration::from_secs(90), || {
        rejected = stack.answered("rejected");
        rejected.len() >= 100
    });
    let elapsed = started.elapsed();
    assert!(done, "{} of 100 rejected", rejected.len());
    assert!(stack.answered("results").is_empty());
    for id in ["flood-000", "flood-050", "flood-099"] {
        let doc = stack.get_object(
            stack.get("SEALBOX_OUTBOX_BUCKET"),
            &format!("{BUYER}/rejected/{id}.json"),
        );
        assert!(doc.contains("token_unknown_kid"), "{doc}");
    }
    // The periodic refresh and the unknown-kid fetches share one rate limit: fetches are at
    // least one interval apart. Allowed: the first load (before `started`), one per interval
    // begun, and one the count may see before `elapsed` was taken. Twice the rate (a fetch
    // for the flood beside each periodic one) would exceed it.
    let n = fetches.load(std::sync::atomic::Ordering::SeqCst);
    let allowed = (elapsed.as_secs_f64() / interval.as_secs_f64()).ceil() as usize + 2;
    eprintln!("{n} fetches of the published keys in {elapsed:?} (at most {allowed})");
    assert!(n <= allowed, "{n} fetches in {elapsed:?}");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_keys_pass_the_key_store_suite() {
    let moto = Moto::start();
    let config = moto.sdk_config().await;
    let n = std::sync::atomic::AtomicUsize::new(0);
    sealbox_authz::key_store::conformance::run(|| {
        let table = format!("suite-keys-{}", n.fetch_add(1, Ordering::SeqCst));
        let clients = SellerClients::new(&config);
        async move {
            sealbox_aws::seller::kms_keys::create_table(&clients.dynamodb, &table)
                .await
                .unwrap();
            Arc::new(KmsKeyStore::new(clients.kms, clients.dynamodb, &table))
                as Arc<dyn sealbox_authz::KeyStore>
        }
    })
    .await;
}

/// A key store whose first read answers an older keyset: a publisher that read the keys just
/// before another writer rotated them and published. With `flapping`, every other read does.
struct ReadBeforeARotation {
    inner: sealbox_authz::key_store::file::FileKeyStore,
    before: Keyset,
    reads: std::sync::atomic::AtomicUsize,
    flapping: bool,
}

#[async_trait::async_trait]
impl sealbox_authz::KeyStore for ReadBeforeARotation {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn init(&self, issuer: &str, alg: KeyAlg) -> Result<Keyset, AuthzError> {
        self.inner.init(issuer, alg).await
    }
    async fn load(&self) -> Result<Keyset, AuthzError> {
        let read = self.reads.fetch_add(1, Ordering::SeqCst);
        if read == 0 || (self.flapping && read.is_multiple_of(2)) {
            Ok(self.before.clone())
        } else {
            self.inner.load().await
        }
    }
    async fn rotate(
        &self,
        from: &str,
        now: time::OffsetDateTime,
    ) -> Result<sealbox_authz::key_store::Rotation, AuthzError> {
        self.inner.rotate(from, now).await
    }
    async fn revoke(
        &self,
        kid: &str,
        now: time::OffsetDateTime,
    ) -> Result<(Keyset, KeyState), AuthzError> {
        self.inner.revoke(kid, now).await
    }
    async fn retire_expired(&self, now: time::OffsetDateTime) -> Result<Keyset, AuthzError> {
        self.inner.retire_expired(now).await
    }
    async fn sign(
        &self,
        key: &sealbox_authz::keyset::KeyEntry,
        input: &[u8],
    ) -> Result<Vec<u8>, AuthzError> {
        self.inner.sign(key, input).await
    }
}

/// A bucket on the shared moto server, a file keyset rotated once, an empty subscription
/// registry, and the keys as read `before` the rotation and `after` it.
struct PublishRace {
    _moto: sealbox_tests::moto::MotoLease,
    _dir: tempfile::TempDir,
    s3: aws_sdk_s3::Client,
    bucket: String,
    keys: ReadBeforeARotation,
    registry: sealbox_embedded::sqlite_subscriptions::SqliteSubscriptions,
    after: Keyset,
}

impl PublishRace {
    async fn new(bucket: &str, flapping: bool) -> Self {
        let moto = tokio::task::spawn_blocking(sealbox_tests::moto::shared)
            .await
            .unwrap();
        let s3 = sealbox_aws::sdk::Clients::new(&moto.sdk_config().await).s3;
        s3.create_bucket().bucket(bucket).send().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file =
            sealbox_authz::key_store::file::FileKeyStore::new(dir.path().join("keyset.json"));
        let before = file.init("sealbox-seller", KeyAlg::EdDSA).await.unwrap();
        let current = before.kids(KeyState::Current).into_iter().next().unwrap();
        let after = file
            .rotate(&current, time::OffsetDateTime::now_utc())
            .await
            .unwrap()
            .keyset;
        assert_ne!(
            sealbox_authz::jwks::publish(&after, &[]).unwrap(),
            sealbox_authz::jwks::publish(&before, &[]).unwrap(),
            "the rotation changed the document"
        );
        let registry = sealbox_embedded::sqlite_subscriptions::SqliteSubscriptions::open(
            &dir.path().join("subscriptions.db"),
        )
        .unwrap();
        let keys = ReadBeforeARotation {
            inner: file,
            before,
            reads: Default::default(),
            flapping,
        };
        PublishRace {
            _moto: moto,
            _dir: dir,
            s3,
            bucket: bucket.to_owned(),
            keys,
            registry,
            after,
        }
    }

    fn publisher(&self) -> sealbox_aws::seller::publish::S3Publisher {
        sealbox_aws::seller::publish::S3Publisher::new(
            self.s3.clone(),
            format!("s3://{}/jwks.json", self.bucket),
        )
    }

    async fn stored(&self) -> serde_json::Value {
        let body = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key("jwks.json")
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        serde_json::from_slice(&body).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_read_the_keys_before_a_rotation_publishes_the_rotated_keys() {
    let race = PublishRace::new("publish-race", false).await;

    let answered = race
        .publisher()
        .publish_current(&race.keys, &race.registry)
        .await
        .unwrap();

    let expected = sealbox_authz::jwks::publish(&race.after, &[]).unwrap();
    assert_eq!(
        race.stored().await,
        expected,
        "the stored document holds the rotated keys"
    );
    assert_eq!(answered, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_keys_change_at_every_read_gives_up_saying_so() {
    let race = PublishRace::new("publish-flapping", true).await;

    let err = race
        .publisher()
        .publish_current(&race.keys, &race.registry)
        .await
        .unwrap_err();

    let message = err.to_string();
    assert!(
        message.contains("changed 5 times") && message.contains("publish again"),
        "{message}"
    );
    assert_eq!(
        race.keys.reads.load(Ordering::SeqCst),
        6,
        "five writes, six reads"
    );
}
