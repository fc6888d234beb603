//! The S3 adapter of the object store port against moto (one server shared by the tests of the
//! process, a bucket per test): the port's conformance suite, each check a test, then what
//! only S3 has (ETag quoting, conditional writes racing, multipart uploads left behind, listing
//! pages of the service, pinned reads).
// Test support: a panic is how a test reports a broken precondition.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use sealbox_aws::s3::{ETag, PART_SIZE, PinnedReadError, S3ObjectStore};
use sealbox_aws::sdk::Clients;
use sealbox_core::Error;
use sealbox_core::conformance::object_store::{self as suite, pattern, pattern_stream};
use sealbox_core::ports::{ByteStream, ObjectStore, PutMode};
use sealbox_tests::moto::{self, MotoLease};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncRead, ReadBuf};

/// A bucket of its own on the shared moto server, and the adapter over it.
struct S3 {
    store: S3ObjectStore,
    client: aws_sdk_s3::Client,
    bucket: String,
    // Last: dropping it may stop the server.
    _moto: MotoLease,
}

impl S3 {
    /// The adapter over `bucket`, made if need be.
    async fn start_in(bucket: &str) -> S3 {
        let moto = tokio::task::spawn_blocking(moto::shared).await.unwrap();
        let config = moto.sdk_config().await;
        let client = Clients::new(&config).s3;
        // Tests running at once may create the same bucket: whoever created it, it must exist.
        let _ = client.create_bucket().bucket(bucket).send().await;
        client.head_bucket().bucket(bucket).send().await.unwrap();
        S3 {
            store: S3ObjectStore::new(client.clone()),
            client,
            bucket: bucket.to_owned(),
            _moto: moto,
        }
    }

    /// A bucket no other test of this process uses.
    async fn start() -> S3 {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        S3::start_in(&format!(
            "s3-adapter-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
        .await
    }

    /// Multipart uploads begun and neither completed nor aborted, under `prefix`.
    async fn open_uploads(&self, prefix: &str) -> Vec<String> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        out.uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_owned))
            .collect()
    }
}

mod s3_object_store {
    use super::*;
    use sealbox_core::conformance::Subject;
    use std::sync::Arc;

    sealbox_core::object_store_conformance_tests!({
        let s3 = S3::start_in(suite::BUCKET).await;
        Subject::new(Arc::new(s3.store.clone()) as _).keeping(s3)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_suite_runs_twice_in_one_bucket_and_leaves_no_multipart_upload_behind() {
    let s3 = S3::start().await;
    suite::run(&s3.store, &s3.bucket).await;
    // Twice in one bucket: each run keeps to its own prefix.
    suite::run(&s3.store, &s3.bucket).await;
    assert!(
        s3.open_uploads("").await.is_empty(),
        "the suite left multipart uploads behind"
    );
}

#[test]
fn quoted_and_unquoted_etags_normalize_alike() {
    let quoted = "\"d41d8cd98f00b204e9800998ecf8427e\"";
    let unquoted = "d41d8cd98f00b204e9800998ecf8427e";
    assert_eq!(ETag::new(quoted), ETag::new(unquoted));
    assert_eq!(ETag::new(quoted), unquoted);
    // Multipart ETags keep their part count.
    assert_eq!(ETag::new("\"abc-3\""), "abc-3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etags_have_one_unquoted_form_in_put_head_get_and_list() {
    let s3 = S3::start().await;
    let small = s3
        .store
        .put(
            &s3.bucket,
            "etag/small",
            Bytes::from("x"),
            PutMode::CreateNew,
        )
        .await
        .unwrap();
    let large = s3
        .store
        .put_stream(
            &s3.bucket,
            "etag/large",
            pattern_stream(2 * PART_SIZE + 5),
            PutMode::CreateNew,
        )
        .await
        .unwrap();
    assert!(
        large.etag.ends_with("-3"),
        "a three-part upload: {}",
        large.etag
    );
    for put in [&small, &large] {
        let key = put.key.as_str();
        assert!(!put.etag.contains('"'), "{key}: {}", put.etag);
        let head = s3.store.head(&s3.bucket, key).await.unwrap().unwrap();
        let (got, _) = s3.store.get(&s3.bucket, key, u64::MAX).await.unwrap();
        let (streamed, _) = s3.store.get_stream(&s3.bucket, key).await.unwrap();
        let listed = s3.store.list(&s3.bucket, key, None, 1).await.unwrap();
        for etag in [&head.etag, &got.etag, &streamed.etag, &listed[0].etag] {
            assert_eq!(etag, &put.etag, "{key}");
        }
        // What S3 itself answers is quoted; normalized, it is the adapter's.
        let raw = s3
            .client
            .head_object()
            .bucket(&s3.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let raw = raw.e_tag().unwrap();
        assert!(raw.starts_with('"'), "moto quotes ETags like S3: {raw}");
        assert_eq!(ETag::new(raw), put.etag, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_new_puts_have_exactly_one_winner() {
    let s3 = S3::start().await;
    for round in 0..20 {
        let key = format!("race/{round}/claim.json");
        let tasks: Vec<_> = ["first", "second"]
            .into_iter()
            .map(|who| {
                let (store, bucket, key) = (s3.store.clone(), s3.bucket.clone(), key.clone());
                tokio::spawn(async move {
                    let r = store
                        .put(&bucket, &key, Bytes::from(who), PutMode::CreateNew)
                        .await;
                    (who, r)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (who, Ok(meta)) => winners.push((who, meta)),
                (_, Err(Error::AlreadyExists { bucket, key: k })) => {
                    assert_eq!(
                        (bucket.as_str(), k.as_str()),
                        (s3.bucket.as_str(), key.as_str())
                    );
                }
                (who, Err(e)) => panic!("round {round}: {who}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let (who, meta) = &winners[0];
        let (got, body) = s3.store.get(&s3.bucket, &key, 100).await.unwrap();
        assert_eq!(
            &body[..],
            who.as_bytes(),
            "round {round}: the winner's body"
        );
        assert_eq!(got.etag, meta.etag, "round {round}: the winner's ETag");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_multipart_create_new_leaves_no_upload_behind() {
    let s3 = S3::start().await;
    let key = "refused/result.out";
    let first = s3
        .store
        .put(&s3.bucket, key, Bytes::from("first"), PutMode::CreateNew)
        .await
        .unwrap();
    let again = s3
        .store
        .put_stream(
            &s3.bucket,
            key,
            pattern_stream(PART_SIZE + 1),
            PutMode::CreateNew,
        )
        .await;
    assert!(
        matches!(again, Err(Error::AlreadyExists { .. })),
        "{again:?}"
    );
    assert_eq!(s3.open_uploads("refused/").await, Vec::<String>::new());
    let (meta, body) = s3.store.get(&s3.bucket, key, 100).await.unwrap();
    assert_eq!((meta.etag, &body[..]), (first.etag, &b"first"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_failing_mid_upload_aborts_the_upload() {
    let s3 = S3::start().await;
    let key = "failing/result.out";
    // Fails after two and a half parts: two parts are up (or on their way) by then.
    let body: ByteStream = Box::pin(FailingReader {
        left: 2 * PART_SIZE + PART_SIZE / 2,
    });
    let put = s3
        .store
        .put_stream(&s3.bucket, key, body, PutMode::Overwrite)
        .await;
    assert!(matches!(put, Err(Error::Io { .. })), "{put:?}");
    assert_eq!(s3.open_uploads("failing/").await, Vec::<String>::new());
    assert_eq!(s3.store.head(&s3.bucket, key).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_of_exactly_one_part_is_one_put() {
    let s3 = S3::start().await;
    let key = "one-part/result.out";
    let put = s3
        .store
        .put_stream(
            &s3.bucket,
            key,
            pattern_stream(PART_SIZE),
            PutMode::CreateNew,
        )
        .await
        .unwrap();
    // A multipart ETag ends in `-<parts>`; a single PutObject's is the body's MD5.
    assert!(!put.etag.contains('-'), "{}", put.etag);
    let (_, body) = s3
        .store
        .get(&s3.bucket, key, PART_SIZE as u64)
        .await
        .unwrap();
    assert!(body == pattern(PART_SIZE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_follows_continuation_tokens_past_a_service_page() {
    let s3 = S3::start().await;
    // S3 answers at most 1000 keys a call: 1005 keys take two.
    let mut keys: Vec<String> = (0..1005).map(|i| format!("many/{i:04}")).collect();
    keys.sort();
    let mut puts = tokio::task::JoinSet::new();
    for chunk in keys.chunks(64) {
        let (store, bucket, chunk) = (s3.store.clone(), s3.bucket.clone(), chunk.to_vec());
        puts.spawn(async move {
            for key in chunk {
                store
                    .put(&bucket, &key, Bytes::from("x"), PutMode::Overwrite)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = puts.join_next().await {
        done.unwrap();
    }
    let listed: Vec<String> = s3
        .store
        .list(&s3.bucket, "many/", None, 2000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, keys);
    let capped = s3
        .store
        .list(&s3.bucket, "many/", None, 1003)
        .await
        .unwrap();
    assert_eq!(capped.len(), 1003);
    assert_eq!(capped.last().unwrap().key, keys[1002]);
    let after = s3
        .store
        .list(&s3.bucket, "many/", Some(&keys[3]), 1001)
        .await
        .unwrap();
    assert_eq!(after.len(), 1001);
    assert_eq!(after[0].key, keys[4]);
    assert_eq!(after.last().unwrap().key, keys[1004]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_if_match_reads_the_pinned_version_and_tells_changed_from_gone() {
    let s3 = S3::start().await;
    let key = "pinned/input.csv";
    let v1 = s3
        .store
        .put(&s3.bucket, key, Bytes::from("v1"), PutMode::CreateNew)
        .await
        .unwrap();
    let quoted = format!("\"{}\"", v1.etag);
    for etag in [v1.etag.as_str(), quoted.as_str()] {
        let (meta, body) = s3
            .store
            .get_if_match(&s3.bucket, key, &ETag::new(etag), 10)
            .await
            .unwrap();
        assert_eq!((&meta.etag, &body[..]), (&v1.etag, &b"v1"[..]), "{etag}");
    }
    let capped = s3.store.get_if_match(&s3.bucket, key, &v1.etag, 1).await;
    assert!(
        matches!(
            capped,
            Err(PinnedReadError::Store(Error::TooLarge {
                size: 2,
                limit: 1,
                ..
            }))
        ),
        "{capped:?}"
    );

    s3.store
        .put(&s3.bucket, key, Bytes::from("v2"), PutMode::Overwrite)
        .await
        .unwrap();
    let changed = s3.store.get_if_match(&s3.bucket, key, &v1.etag, 10).await;
    match changed {
        Err(PinnedReadError::Changed {
            bucket,
            key: k,
            etag,
        }) => {
            assert_eq!((bucket.as_str(), k.as_str()), (s3.bucket.as_str(), key));
            assert_eq!(etag, v1.etag);
        }
        other => panic!("a replaced object: {other:?}"),
    }

    s3.store.delete(&s3.bucket, key).await.unwrap();
    let gone = s3.store.get_if_match(&s3.bucket, key, &v1.etag, 10).await;
    assert!(
        matches!(gone, Err(PinnedReadError::Store(Error::NotFound { .. }))),
        "a deleted object: {gone:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_bucket_is_a_retryable_storage_fault_naming_it() {
    let s3 = S3::start().await;
    let bucket = "no-such-bucket-here";
    let put = s3
        .store
        .put(bucket, "k", Bytes::from("x"), PutMode::Overwrite)
        .await;
    let got = s3.store.get(bucket, "k", 10).await.map(|_| ());
    let listed = s3.store.list(bucket, "", None, 10).await.map(|_| ());
    for (what, result) in [("put", put.map(|_| ())), ("get", got), ("list", listed)] {
        match result {
            Err(e @ Error::Storage { .. }) => {
                assert!(e.is_retryable(), "{what}: {e}");
                let text = e.to_string();
                assert!(
                    text.contains("bucket \"no-such-bucket-here\" does not exist"),
                    "{what}: {text}"
                );
            }
            other => panic!("{what} in a missing bucket: {other:?}"),
        }
    }
    // A HEAD answer has no body to tell a missing bucket from a missing key.
    assert_eq!(s3.store.head(bucket, "k").await.unwrap(), None);
}

/// Yields the conformance pattern for `left` bytes, then fails.
struct FailingReader {
    left: usize,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(std::io::Error::other("the producer died")));
        }
        let n = buf.remaining().min(self.left).min(64 * 1024);
        buf.put_slice(&vec![b'x'; n]);
        self.left -= n;
        Poll::Ready(Ok(()))
    }
}
