//! Conformance suite of the object store port: what every adapter (the embedded file store, S3,
//! the test kit's) must do the same way. Each check is public, named after the behaviour it
//! checks, and takes a key prefix of its own, so a check never meets another's objects and the
//! suite can run any number of times against one bucket. An adapter's tests run each check as a
//! test of its own with
//! [`object_store_conformance_tests!`](crate::object_store_conformance_tests), given an
//! expression that makes a [`Subject`](super::Subject) whose [`BUCKET`] exists:
//!
//! ```text
//! sealbox_core::object_store_conformance_tests!(Subject::new(Arc::new(MyStore::new()) as _));
//! ```
//!
//! [`run`] runs them all in turn, on one store.
//!
//! Keys are chosen so that the file-system adapter can hold them all: no key is both an object
//! and the folder of other keys.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::Error;
use crate::ports::object_store::{
    ByteStream, Metadata, ObjectMeta, ObjectStore, PutMode, PutOptions,
};

/// Size of the streamed body: two S3 parts of 8 MiB and one byte, so an adapter that uploads in
/// parts (of 5 MiB, S3's least, or more) must join at least two parts and a short last one.
pub const STREAM_BODY_LEN: usize = 16 * 1024 * 1024 + 1;

/// How far an object's `last_modified` may be from this machine's clock (clock skew, slow runs).
const CLOCK_TOLERANCE: Duration = Duration::minutes(15);

/// The bucket the checks run in when run by
/// [`object_store_conformance_tests!`](crate::object_store_conformance_tests).
pub const BUCKET: &str = "conformance";

/// Runs every check against `store`, in `bucket` (which must exist), under a fresh prefix.
pub async fn run(store: &dyn ObjectStore, bucket: &str) {
    let p = unique_prefix();
    put_then_get_round_trips_body_and_metadata(store, bucket, &format!("{p}round-trip/")).await;
    every_read_reports_the_same_etag(store, bucket, &format!("{p}same-etag/")).await;
    empty_objects_round_trip(store, bucket, &format!("{p}empty/")).await;
    create_new_writes_a_new_key(store, bucket, &format!("{p}create-new/")).await;
    create_new_refuses_an_existing_key_and_keeps_the_old_object(
        store,
        bucket,
        &format!("{p}create-new-exists/"),
    )
    .await;
    overwrite_replaces_the_object_and_changes_the_etag(store, bucket, &format!("{p}overwrite/"))
        .await;
    get_over_the_limit_is_too_large(store, bucket, &format!("{p}too-large/")).await;
    missing_objects_are_not_found(store, bucket, &format!("{p}missing/")).await;
    put_stream_round_trips_a_multi_part_body(store, bucket, &format!("{p}stream/")).await;
    listing_filters_by_prefix_in_key_order(store, bucket, &format!("{p}list/")).await;
    listing_starts_after_the_given_key(store, bucket, &format!("{p}list-after/")).await;
    listing_stops_at_max(store, bucket, &format!("{p}list-max/")).await;
    listing_pages_cover_every_key_once(store, bucket, &format!("{p}list-pages/")).await;
    delete_removes_and_deleting_a_missing_key_succeeds(store, bucket, &format!("{p}delete/")).await;
    unusual_keys_round_trip(store, bucket, &format!("{p}odd keys/")).await;
    metadata_round_trips_through_head_and_get(store, bucket, &format!("{p}metadata/")).await;
    a_put_without_metadata_has_none(store, bucket, &format!("{p}no-metadata/")).await;
    create_new_with_metadata_keeps_the_first_objects_metadata(
        store,
        bucket,
        &format!("{p}metadata-create-new/"),
    )
    .await;
    overwrite_replaces_the_metadata_with_the_new_objects(
        store,
        bucket,
        &format!("{p}metadata-overwrite/"),
    )
    .await;
    metadata_s3_would_refuse_is_refused_before_writing(
        store,
        bucket,
        &format!("{p}metadata-refused/"),
    )
    .await;
}

/// A prefix no other run uses: `conformance/<time>-<pid>-<n>/`.
pub fn unique_prefix() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    format!("conformance/{now:x}-{}-{n}/", std::process::id())
}

/// A put answers the object's key, size, a non-empty ETag and a current `last_modified`, and a
/// get, a streaming get and a head give back the same body and metadata.
pub async fn put_then_get_round_trips_body_and_metadata(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "put_then_get_round_trips_body_and_metadata";
    let key = format!("{prefix}object.json");
    let body = Bytes::from_static(b"{\"hello\":\"world\"}");
    let put = store
        .put(bucket, &key, body.clone(), PutMode::Overwrite)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
    assert_eq!(put.key, key, "{CHECK}: the put's key");
    assert_eq!(put.size, body.len() as u64, "{CHECK}: the put's size");
    assert!(!put.etag.is_empty(), "{CHECK}: the put's ETag is empty");
    assert_recent(CHECK, "the put's last_modified", put.last_modified);

    let (meta, got) = store
        .get(bucket, &key, 1024)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get {key}: {e}"));
    assert_eq!(got, body, "{CHECK}: the body read back");
    assert_eq!(meta.key, key, "{CHECK}: the get's key");
    assert_eq!(meta.size, body.len() as u64, "{CHECK}: the get's size");
    assert!(!meta.etag.is_empty(), "{CHECK}: the get's ETag is empty");
    assert_recent(CHECK, "the get's last_modified", meta.last_modified);

    let (meta, mut stream) = store
        .get_stream(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get_stream {key}: {e}"));
    assert_eq!(meta.key, key, "{CHECK}: the streaming get's key");
    assert_eq!(
        meta.size,
        body.len() as u64,
        "{CHECK}: the streaming get's size"
    );
    let mut streamed = Vec::new();
    stream
        .read_to_end(&mut streamed)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: reading the stream of {key}: {e}"));
    assert_eq!(streamed, body, "{CHECK}: the body streamed back");

    let head = store
        .head(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: head {key}: {e}"))
        .unwrap_or_else(|| panic!("{CHECK}: head {key} found nothing"));
    assert_eq!(head.key, key, "{CHECK}: the head's key");
    assert_eq!(head.size, body.len() as u64, "{CHECK}: the head's size");
    assert_recent(CHECK, "the head's last_modified", head.last_modified);
}

/// The ETag of one version of an object is the same string whichever call reports it: put,
/// get, streaming get, head and list (the pipeline compares them to pin a version).
pub async fn every_read_reports_the_same_etag(store: &dyn ObjectStore, bucket: &str, prefix: &str) {
    const CHECK: &str = "every_read_reports_the_same_etag";
    let key = format!("{prefix}object.txt");
    let put = store
        .put(
            bucket,
            &key,
            Bytes::from_static(b"etag"),
            PutMode::CreateNew,
        )
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
    assert_same_etag_everywhere(CHECK, store, bucket, &put).await;

    let key = format!("{prefix}streamed.bin");
    let streamed = store
        .put_stream(bucket, &key, pattern_stream(1000), PutMode::CreateNew)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put_stream {key}: {e}"));
    assert_same_etag_everywhere(CHECK, store, bucket, &streamed).await;
}

/// An object of no bytes is an object: written whole or streamed, it reads back empty.
pub async fn empty_objects_round_trip(store: &dyn ObjectStore, bucket: &str, prefix: &str) {
    const CHECK: &str = "empty_objects_round_trip";
    let key = format!("{prefix}put");
    let put = store
        .put(bucket, &key, Bytes::new(), PutMode::CreateNew)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
    assert_eq!(put.size, 0, "{CHECK}: the put's size");
    let (meta, body) = store
        .get(bucket, &key, 0)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get {key} with a limit of 0: {e}"));
    assert_eq!((meta.size, body.len()), (0, 0), "{CHECK}: {key} read back");

    let key = format!("{prefix}stream");
    let put = store
        .put_stream(bucket, &key, pattern_stream(0), PutMode::CreateNew)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put_stream {key}: {e}"));
    assert_eq!(put.size, 0, "{CHECK}: the streamed put's size");
    let head = store
        .head(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: head {key}: {e}"));
    assert_eq!(head.map(|m| m.size), Some(0), "{CHECK}: head of {key}");
}

/// Create-new on a key nobody wrote succeeds, whole or streamed.
pub async fn create_new_writes_a_new_key(store: &dyn ObjectStore, bucket: &str, prefix: &str) {
    const CHECK: &str = "create_new_writes_a_new_key";
    let key = format!("{prefix}claim.json");
    let put = store
        .put(
            bucket,
            &key,
            Bytes::from_static(b"mine"),
            PutMode::CreateNew,
        )
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
    let (meta, body) = store
        .get(bucket, &key, 100)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get {key}: {e}"));
    assert_eq!(&body[..], b"mine", "{CHECK}: the body read back");
    assert_eq!(meta.etag, put.etag, "{CHECK}: the ETag read back");

    let key = format!("{prefix}streamed.out");
    store
        .put_stream(bucket, &key, pattern_stream(10), PutMode::CreateNew)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put_stream {key}: {e}"));
    let (_, body) = store
        .get(bucket, &key, 100)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get {key}: {e}"));
    assert_eq!(body, pattern(10), "{CHECK}: the streamed body read back");
}

/// Create-new on a key that holds an object fails with `AlreadyExists` naming the object, and
/// leaves the object as it was (body and ETag), whether the refused write was whole or streamed.
pub async fn create_new_refuses_an_existing_key_and_keeps_the_old_object(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "create_new_refuses_an_existing_key_and_keeps_the_old_object";
    let key = format!("{prefix}claim.json");
    let first = store
        .put(bucket, &key, Bytes::from_static(b"one"), PutMode::CreateNew)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: first put {key}: {e}"));

    let second = store
        .put(bucket, &key, Bytes::from_static(b"two"), PutMode::CreateNew)
        .await;
    assert_already_exists(CHECK, "a second put", bucket, &key, second);
    let streamed = store
        .put_stream(bucket, &key, pattern_stream(5), PutMode::CreateNew)
        .await;
    assert_already_exists(CHECK, "a streamed put", bucket, &key, streamed);

    let (meta, body) = store
        .get(bucket, &key, 100)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get {key}: {e}"));
    assert_eq!(&body[..], b"one", "{CHECK}: the first body must remain");
    assert_eq!(meta.etag, first.etag, "{CHECK}: the first ETag must remain");
}

/// Overwrite replaces an object: the new body is read back and the ETag is new (the bodies
/// differ: S3's ETag of a single-part object is the MD5 of its body, so rewriting the same bytes
/// may keep it).
pub async fn overwrite_replaces_the_object_and_changes_the_etag(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "overwrite_replaces_the_object_and_changes_the_etag";
    let key = format!("{prefix}request.json");
    let a = store
        .put(bucket, &key, Bytes::from_static(b"a"), PutMode::Overwrite)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: first put {key}: {e}"));
    let b = store
        .put(bucket, &key, Bytes::from_static(b"bb"), PutMode::Overwrite)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: second put {key}: {e}"));
    assert_ne!(a.etag, b.etag, "{CHECK}: the ETag must change");
    assert_eq!(b.size, 2, "{CHECK}: the second put's size");
    let (meta, body) = store
        .get(bucket, &key, 100)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get {key}: {e}"));
    assert_eq!(&body[..], b"bb", "{CHECK}: the new body");
    assert_eq!(meta.etag, b.etag, "{CHECK}: the get's ETag is the new one");
    let head = store
        .head(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: head {key}: {e}"));
    assert_eq!(
        head.map(|m| m.etag),
        Some(b.etag.clone()),
        "{CHECK}: the head's ETag is the new one"
    );

    // Overwrite also works through a stream, over an object written whole.
    let c = store
        .put_stream(bucket, &key, pattern_stream(3), PutMode::Overwrite)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: streamed overwrite of {key}: {e}"));
    assert_ne!(c.etag, b.etag, "{CHECK}: the streamed overwrite's ETag");
    let (_, body) = store
        .get(bucket, &key, 100)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get {key}: {e}"));
    assert_eq!(body, pattern(3), "{CHECK}: the streamed body");
}

/// A get with a limit below the object's size fails with `TooLarge` reporting the object's
/// whole size (known before reading, not counted up to the limit) and the limit; a limit of
/// exactly the size reads it.
pub async fn get_over_the_limit_is_too_large(store: &dyn ObjectStore, bucket: &str, prefix: &str) {
    const CHECK: &str = "get_over_the_limit_is_too_large";
    let key = format!("{prefix}large.bin");
    store
        .put(bucket, &key, pattern(1000), PutMode::Overwrite)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
    for limit in [999, 10, 0] {
        let got = store.get(bucket, &key, limit).await;
        match got {
            Err(Error::TooLarge {
                bucket: b,
                key: k,
                size,
                limit: l,
            }) => {
                assert_eq!((b.as_str(), k.as_str()), (bucket, key.as_str()), "{CHECK}");
                assert_eq!(size, 1000, "{CHECK}: the size reported with limit {limit}");
                assert_eq!(l, limit, "{CHECK}: the limit reported");
            }
            other => panic!("{CHECK}: get with limit {limit} answered {other:?}"),
        }
    }
    let (meta, body) = store
        .get(bucket, &key, 1000)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get {key} with a limit of its size: {e}"));
    assert_eq!(meta.size, 1000, "{CHECK}: the size");
    assert_eq!(body, pattern(1000), "{CHECK}: the body at the limit");
}

/// Reads of a key that holds nothing: get and streaming get fail with `NotFound` naming it, head
/// answers `None`.
pub async fn missing_objects_are_not_found(store: &dyn ObjectStore, bucket: &str, prefix: &str) {
    const CHECK: &str = "missing_objects_are_not_found";
    let key = format!("{prefix}nothing-here.json");
    let got = store.get(bucket, &key, 100).await.map(|_| ());
    assert_not_found(CHECK, "get", bucket, &key, got);
    let streamed = store.get_stream(bucket, &key).await.map(|_| ());
    assert_not_found(CHECK, "get_stream", bucket, &key, streamed);
    let head = store
        .head(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: head {key}: {e}"));
    assert_eq!(head, None, "{CHECK}: head of a missing key");
    // A key below a missing "folder" is as missing as any other.
    let deep = format!("{prefix}no/such/folder/x");
    let got = store.get(bucket, &deep, 100).await.map(|_| ());
    assert_not_found(CHECK, "get beneath a missing folder", bucket, &deep, got);
}

/// `put_stream` of a body larger than several upload parts, arriving in uneven short reads,
/// stores it byte for byte; the size is known to every read and a capped get refuses it whole.
pub async fn put_stream_round_trips_a_multi_part_body(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "put_stream_round_trips_a_multi_part_body";
    let len = STREAM_BODY_LEN;
    let key = format!("{prefix}result.out");
    let put = store
        .put_stream(bucket, &key, pattern_stream(len), PutMode::CreateNew)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put_stream {key}: {e}"));
    assert_eq!(put.size, len as u64, "{CHECK}: the put's size");
    assert!(!put.etag.is_empty(), "{CHECK}: the put's ETag is empty");

    let (meta, mut stream) = store
        .get_stream(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get_stream {key}: {e}"));
    assert_eq!(meta.size, len as u64, "{CHECK}: the streaming get's size");
    assert_eq!(meta.etag, put.etag, "{CHECK}: the streaming get's ETag");
    let mut back = Vec::with_capacity(len);
    stream
        .read_to_end(&mut back)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: reading {key}: {e}"));
    assert_eq!(back.len(), len, "{CHECK}: bytes streamed back");
    // Compare without printing 16 MiB on failure.
    let expected = pattern(len);
    if let Some(at) = back.iter().zip(expected.iter()).position(|(a, b)| a != b) {
        panic!("{CHECK}: the body read back differs from the one written at byte {at}");
    }

    let (_, whole) = store
        .get(bucket, &key, len as u64)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get {key} with a limit of its size: {e}"));
    assert!(
        whole == expected,
        "{CHECK}: the body of a capped get differs"
    );
    match store.get(bucket, &key, 1024 * 1024).await {
        Err(Error::TooLarge { size, .. }) => {
            assert_eq!(size, len as u64, "{CHECK}: TooLarge reports the whole size");
        }
        other => panic!(
            "{CHECK}: get with a 1 MiB limit answered {:?}",
            other.map(|(m, _)| m)
        ),
    }

    // Create-new of a large stream over an existing object is refused too (on S3 at the end of
    // a multipart upload) and leaves the object alone.
    let again = store
        .put_stream(bucket, &key, pattern_stream(len), PutMode::CreateNew)
        .await;
    assert_already_exists(CHECK, "a second large put_stream", bucket, &key, again);
    let head = store
        .head(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: head {key}: {e}"));
    assert_eq!(
        head.map(|m| m.etag),
        Some(put.etag),
        "{CHECK}: the first object must remain"
    );
}

/// A listing has exactly the keys that start with the prefix (a prefix need not end at a
/// `/`), in byte order of the keys, with each object's size and ETag.
pub async fn listing_filters_by_prefix_in_key_order(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "listing_filters_by_prefix_in_key_order";
    // '.' < '/' < '0': "a.b" sorts before "a/x" although a folder "a" would sort before "a.b".
    let inside = ["l/b", "l/a0", "l/a/y/z", "l/a.b", "l/a/x"];
    let outside = ["l2", "m/c", "k"];
    let mut metas = Vec::new();
    for (i, k) in inside.iter().chain(outside.iter()).enumerate() {
        let key = format!("{prefix}{k}");
        let meta = store
            .put(bucket, &key, pattern(i + 1), PutMode::Overwrite)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
        metas.push(meta);
    }
    let listed = list_all(CHECK, store, bucket, &format!("{prefix}l/"), None, 1000).await;
    let mut expected: Vec<ObjectMeta> = metas[..inside.len()].to_vec();
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        keys(&listed),
        keys(&expected),
        "{CHECK}: keys under {prefix}l/"
    );
    for (got, want) in listed.iter().zip(&expected) {
        assert_eq!(
            got.size, want.size,
            "{CHECK}: the listed size of {}",
            got.key
        );
        assert_eq!(
            got.etag, want.etag,
            "{CHECK}: the listed ETag of {}",
            got.key
        );
        assert_recent(CHECK, "a listed last_modified", got.last_modified);
    }

    let partial = list_all(CHECK, store, bucket, &format!("{prefix}l/a"), None, 1000).await;
    let want: Vec<String> = ["l/a.b", "l/a/x", "l/a/y/z", "l/a0"]
        .iter()
        .map(|k| format!("{prefix}{k}"))
        .collect();
    assert_eq!(
        keys(&partial),
        want,
        "{CHECK}: a prefix ending inside a name"
    );

    let exact = list_all(CHECK, store, bucket, &format!("{prefix}l/b"), None, 1000).await;
    assert_eq!(
        keys(&exact),
        [format!("{prefix}l/b")],
        "{CHECK}: a prefix equal to a key"
    );
    let none = list_all(CHECK, store, bucket, &format!("{prefix}nothing/"), None, 10).await;
    assert!(none.is_empty(), "{CHECK}: a prefix with no keys: {none:?}");
}

/// `start_after` skips every key up to and including it, whether or not it names an object.
pub async fn listing_starts_after_the_given_key(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "listing_starts_after_the_given_key";
    let names = ["a.b", "a/x", "a/y/z", "a0", "b"];
    for name in names {
        let key = format!("{prefix}{name}");
        store
            .put(bucket, &key, Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
    }
    let full =
        |names: &[&str]| -> Vec<String> { names.iter().map(|n| format!("{prefix}{n}")).collect() };
    let cases: [(String, Vec<String>); 5] = [
        (format!("{prefix}a/x"), full(&["a/y/z", "a0", "b"])),
        // Not a key: the listing starts at the next key after it.
        (format!("{prefix}a/m"), full(&["a/x", "a/y/z", "a0", "b"])),
        // A "folder" name: keys beneath it sort after it.
        (format!("{prefix}a/"), full(&["a/x", "a/y/z", "a0", "b"])),
        // Before the prefix: everything.
        (prefix.to_owned(), full(&names)),
        // After every key: nothing.
        (format!("{prefix}c"), Vec::new()),
    ];
    for (after, want) in cases {
        let listed = list_all(CHECK, store, bucket, prefix, Some(&after), 1000).await;
        assert_eq!(keys(&listed), want, "{CHECK}: start_after {after:?}");
    }
}

/// A listing answers at most `max` keys (the first ones in key order); `max` 0 answers none.
pub async fn listing_stops_at_max(store: &dyn ObjectStore, bucket: &str, prefix: &str) {
    const CHECK: &str = "listing_stops_at_max";
    let all: Vec<String> = (0..5).map(|i| format!("{prefix}{i}")).collect();
    for key in &all {
        store
            .put(bucket, key, Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
    }
    for max in [0, 1, 2, 5, 6] {
        let listed = list_all(CHECK, store, bucket, prefix, None, max).await;
        assert_eq!(
            keys(&listed),
            all[..max.min(all.len())],
            "{CHECK}: max {max}"
        );
    }
    let listed = list_all(CHECK, store, bucket, prefix, Some(&all[1]), 2).await;
    assert_eq!(
        keys(&listed),
        all[2..4],
        "{CHECK}: max 2 after {:?}",
        all[1]
    );
}

/// Paging with `start_after` set to the last key of the previous page visits every key once, in
/// order, across several pages; one listing with a larger `max` answers them all.
pub async fn listing_pages_cover_every_key_once(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "listing_pages_cover_every_key_once";
    let mut all: Vec<String> = (0..30)
        .map(|i| {
            // Some in "folders", to mix objects and common prefixes in a page.
            if i % 3 == 0 {
                format!("{prefix}{i:03}/r.json")
            } else {
                format!("{prefix}{i:03}.json")
            }
        })
        .collect();
    all.sort();
    for key in &all {
        store
            .put(bucket, key, Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = list_all(CHECK, store, bucket, prefix, after.as_deref(), 10).await;
        assert!(page.len() <= 10, "{CHECK}: a page of {} keys", page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        seen.extend(keys(&page));
        pages += 1;
        assert!(pages <= 4, "{CHECK}: too many pages; seen {seen:?}");
    }
    assert_eq!(pages, 3, "{CHECK}: pages of 10 over 30 keys");
    assert_eq!(seen, all, "{CHECK}: keys over all pages");
    let one = list_all(CHECK, store, bucket, prefix, None, 1000).await;
    assert_eq!(keys(&one), all, "{CHECK}: one listing of all keys");
}

/// A delete removes the object from reads and listings; deleting a key that holds nothing (never
/// written, or deleted already) succeeds.
pub async fn delete_removes_and_deleting_a_missing_key_succeeds(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "delete_removes_and_deleting_a_missing_key_succeeds";
    let key = format!("{prefix}gone.json");
    let kept = format!("{prefix}kept.json");
    for k in [&key, &kept] {
        store
            .put(bucket, k, Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: put {k}: {e}"));
    }
    store
        .delete(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: delete {key}: {e}"));
    let head = store
        .head(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: head {key}: {e}"));
    assert_eq!(head, None, "{CHECK}: head after delete");
    let got = store.get(bucket, &key, 100).await.map(|_| ());
    assert_not_found(CHECK, "get after delete", bucket, &key, got);
    let listed = list_all(CHECK, store, bucket, prefix, None, 100).await;
    assert_eq!(keys(&listed), [kept], "{CHECK}: listing after delete");

    store
        .delete(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: deleting {key} again: {e}"));
    let never = format!("{prefix}never/written.json");
    store
        .delete(bucket, &never)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: deleting {never}, never written: {e}"));
    // Create-new works again on a deleted key.
    store
        .put(bucket, &key, Bytes::from_static(b"y"), PutMode::CreateNew)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: create-new on {key} after its delete: {e}"));
}

/// Keys with spaces, `+`, `%`, `&`, `=` and non-ASCII letters are stored and listed as given
/// (nothing decodes `+` as a space or `%20` as one).
pub async fn unusual_keys_round_trip(store: &dyn ObjectStore, bucket: &str, prefix: &str) {
    const CHECK: &str = "unusual_keys_round_trip";
    let names = [
        "with space.json",
        "plus+sign.json",
        "a+b c.json",
        "percent%20not-a-space.json",
        "amp&eq=q.json",
        "ünïcødé-日本語.json",
        "emoji-🦀.json",
        "tilde~(paren)'quote'.json",
    ];
    let mut all = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let key = format!("{prefix}{name}");
        let body = Bytes::from(format!("{i}"));
        let put = store
            .put(bucket, &key, body.clone(), PutMode::CreateNew)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: put {key:?}: {e}"));
        assert_eq!(put.key, key, "{CHECK}: the put's key");
        let (meta, got) = store
            .get(bucket, &key, 100)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: get {key:?}: {e}"));
        assert_eq!(got, body, "{CHECK}: the body of {key:?}");
        assert_eq!(meta.key, key, "{CHECK}: the get's key");
        let head = store
            .head(bucket, &key)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: head {key:?}: {e}"));
        assert_eq!(
            head.map(|m| m.etag),
            Some(put.etag),
            "{CHECK}: head of {key:?}"
        );
        all.push(key);
    }
    all.sort();
    let listed = list_all(CHECK, store, bucket, prefix, None, 100).await;
    assert_eq!(keys(&listed), all, "{CHECK}: the keys listed");
    // A prefix with a space and a plus selects by the literal characters.
    let plus = list_all(CHECK, store, bucket, &format!("{prefix}a+b "), None, 100).await;
    assert_eq!(
        keys(&plus),
        [format!("{prefix}a+b c.json")],
        "{CHECK}: listing by a prefix with `+` and a space"
    );
    for key in &all {
        store
            .delete(bucket, key)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: delete {key:?}: {e}"));
    }
    let listed = list_all(CHECK, store, bucket, prefix, None, 100).await;
    assert!(
        listed.is_empty(),
        "{CHECK}: left after deleting: {listed:?}"
    );
}

/// `len` bytes that differ from their neighbours and from any shifted copy of themselves, so a
/// lost, doubled or reordered part shows.
pub fn pattern(len: usize) -> Bytes {
    (0..len).map(pattern_byte).collect::<Vec<u8>>().into()
}

/// [`pattern`] as a stream that yields it in short, uneven reads.
pub fn pattern_stream(len: usize) -> ByteStream {
    Box::pin(PatternReader { pos: 0, len })
}

fn pattern_byte(i: usize) -> u8 {
    // 251 is prime and 8191 not a multiple of it: the bytes repeat with neither period.
    ((i % 251) ^ (i / 8191 % 256)) as u8
}

/// Yields [`pattern`] at most 65_521 bytes (a prime, so reads never align to parts) at a time.
struct PatternReader {
    pos: usize,
    len: usize,
}

impl AsyncRead for PatternReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.len - self.pos).min(65_521);
        let start = self.pos;
        let chunk: Vec<u8> = (start..start + n).map(pattern_byte).collect();
        buf.put_slice(&chunk);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Metadata as the pipeline writes it: a compact JSON value and a short one.
fn sample_metadata() -> Metadata {
    Metadata::from([
        (
            "sealbox-usage".to_owned(),
            r#"{"invocations":2,"records":7,"metered":true}"#.to_owned(),
        ),
        ("sealbox-test".to_owned(), "a b=c".to_owned()),
    ])
}

fn with_metadata(mode: PutMode, metadata: Metadata) -> PutOptions {
    PutOptions { mode, metadata }
}

/// The metadata a put carries comes back from head, get and streaming get, whole or streamed
/// (a streamed body of two parts and a byte, so S3's multipart upload carries it too); the
/// put answers it as well. Listings do not carry metadata (S3's do not), so theirs is empty.
pub async fn metadata_round_trips_through_head_and_get(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "metadata_round_trips_through_head_and_get";
    let metadata = sample_metadata();
    let key = format!("{prefix}whole.out");
    let opts = with_metadata(PutMode::Overwrite, metadata.clone());
    let put = store
        .put_opts(bucket, &key, Bytes::from_static(b"1,2\n"), opts.clone())
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
    assert_eq!(put.metadata, metadata, "{CHECK}: the put's metadata");
    assert_metadata_everywhere(CHECK, store, bucket, &key, &metadata).await;

    for len in [10, STREAM_BODY_LEN] {
        let key = format!("{prefix}streamed-{len}.out");
        let put = store
            .put_stream_opts(bucket, &key, pattern_stream(len), opts.clone())
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: put_stream {key}: {e}"));
        assert_eq!(
            put.metadata, metadata,
            "{CHECK}: the streamed put's metadata"
        );
        assert_eq!(put.size, len as u64, "{CHECK}: the streamed put's size");
        assert_metadata_everywhere(CHECK, store, bucket, &key, &metadata).await;
    }
    let listed = list_all(CHECK, store, bucket, prefix, None, 10).await;
    assert_eq!(listed.len(), 3, "{CHECK}: listing {prefix}");
    for meta in listed {
        assert!(
            meta.metadata.is_empty(),
            "{CHECK}: listed {} with metadata",
            meta.key
        );
    }
}

/// A put without metadata, whole or streamed, reads back with none.
pub async fn a_put_without_metadata_has_none(store: &dyn ObjectStore, bucket: &str, prefix: &str) {
    const CHECK: &str = "a_put_without_metadata_has_none";
    let key = format!("{prefix}plain.out");
    let put = store
        .put(bucket, &key, Bytes::from_static(b"x"), PutMode::CreateNew)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
    assert!(put.metadata.is_empty(), "{CHECK}: the put's metadata");
    assert_metadata_everywhere(CHECK, store, bucket, &key, &Metadata::new()).await;
    let key = format!("{prefix}streamed.out");
    store
        .put_stream(bucket, &key, pattern_stream(10), PutMode::CreateNew)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: put_stream {key}: {e}"));
    assert_metadata_everywhere(CHECK, store, bucket, &key, &Metadata::new()).await;
}

/// Create-new with metadata writes it with a new object; a refused create-new (whole or
/// streamed) leaves the first object's metadata as it was.
pub async fn create_new_with_metadata_keeps_the_first_objects_metadata(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "create_new_with_metadata_keeps_the_first_objects_metadata";
    let key = format!("{prefix}r.out");
    let first = sample_metadata();
    store
        .put_opts(
            bucket,
            &key,
            Bytes::from_static(b"one"),
            with_metadata(PutMode::CreateNew, first.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: first put {key}: {e}"));
    let other = Metadata::from([("sealbox-usage".to_owned(), "second".to_owned())]);
    let second = store
        .put_opts(
            bucket,
            &key,
            Bytes::from_static(b"two"),
            with_metadata(PutMode::CreateNew, other.clone()),
        )
        .await;
    assert_already_exists(CHECK, "a second put", bucket, &key, second);
    let streamed = store
        .put_stream_opts(
            bucket,
            &key,
            pattern_stream(5),
            with_metadata(PutMode::CreateNew, other),
        )
        .await;
    assert_already_exists(CHECK, "a streamed put", bucket, &key, streamed);
    assert_metadata_everywhere(CHECK, store, bucket, &key, &first).await;
}

/// Metadata belongs to one version of an object: an overwrite with other metadata (or none)
/// replaces it whole, as S3's PutObject does.
pub async fn overwrite_replaces_the_metadata_with_the_new_objects(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "overwrite_replaces_the_metadata_with_the_new_objects";
    let key = format!("{prefix}r.out");
    let put = |body: &'static [u8], metadata: Metadata| {
        let key = key.clone();
        async move {
            store
                .put_opts(
                    bucket,
                    &key,
                    Bytes::from_static(body),
                    with_metadata(PutMode::Overwrite, metadata),
                )
                .await
                .unwrap_or_else(|e| panic!("{CHECK}: put {key}: {e}"));
        }
    };
    put(b"one", sample_metadata()).await;
    let second = Metadata::from([("sealbox-other".to_owned(), "2".to_owned())]);
    put(b"two", second.clone()).await;
    assert_metadata_everywhere(CHECK, store, bucket, &key, &second).await;
    put(b"three", Metadata::new()).await;
    assert_metadata_everywhere(CHECK, store, bucket, &key, &Metadata::new()).await;
}

/// Metadata S3 would refuse or alter (an uppercase name, a value that is not printable ASCII,
/// more than 2 KB) is refused with `InvalidKey`, and nothing is written.
pub async fn metadata_s3_would_refuse_is_refused_before_writing(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
) {
    const CHECK: &str = "metadata_s3_would_refuse_is_refused_before_writing";
    let key = format!("{prefix}r.out");
    for (what, metadata) in [
        ("an uppercase name", [("Sealbox-Usage", "1".to_owned())]),
        (
            "a line break in a value",
            [("sealbox-usage", "a\nb".to_owned())],
        ),
        ("2 KB and more", [("sealbox-usage", "v".repeat(2048))]),
    ] {
        let metadata: Metadata = metadata
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let whole = store
            .put_opts(
                bucket,
                &key,
                Bytes::from_static(b"x"),
                with_metadata(PutMode::CreateNew, metadata.clone()),
            )
            .await;
        assert!(
            matches!(whole, Err(Error::InvalidKey { .. })),
            "{CHECK}: a put with {what} answered {whole:?}"
        );
        let streamed = store
            .put_stream_opts(
                bucket,
                &key,
                pattern_stream(3),
                with_metadata(PutMode::CreateNew, metadata),
            )
            .await;
        assert!(
            matches!(streamed, Err(Error::InvalidKey { .. })),
            "{CHECK}: a streamed put with {what} answered {streamed:?}"
        );
    }
    let head = store
        .head(bucket, &key)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: head {key}: {e}"));
    assert_eq!(head, None, "{CHECK}: a refused put wrote {key}");
}

async fn assert_metadata_everywhere(
    check: &str,
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    metadata: &Metadata,
) {
    let head = store
        .head(bucket, key)
        .await
        .unwrap_or_else(|e| panic!("{check}: head {key}: {e}"))
        .unwrap_or_else(|| panic!("{check}: head {key} found nothing"));
    let (got, _) = store
        .get(bucket, key, u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("{check}: get {key}: {e}"));
    let (streamed, _) = store
        .get_stream(bucket, key)
        .await
        .unwrap_or_else(|e| panic!("{check}: get_stream {key}: {e}"));
    for (what, got) in [
        ("head", &head.metadata),
        ("get", &got.metadata),
        ("get_stream", &streamed.metadata),
    ] {
        assert_eq!(got, metadata, "{check}: the metadata of {key} from {what}");
    }
}

/// Lists with the port, failing the check on an error.
async fn list_all(
    check: &str,
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    start_after: Option<&str>,
    max: usize,
) -> Vec<ObjectMeta> {
    store
        .list(bucket, prefix, start_after, max)
        .await
        .unwrap_or_else(|e| panic!("{check}: list {prefix:?} after {start_after:?}: {e}"))
}

fn keys(metas: &[ObjectMeta]) -> Vec<String> {
    metas.iter().map(|m| m.key.clone()).collect()
}

fn assert_recent(check: &str, what: &str, at: OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    assert!(
        (at - now).abs() < CLOCK_TOLERANCE,
        "{check}: {what} is {at}, far from now ({now})"
    );
}

async fn assert_same_etag_everywhere(
    check: &str,
    store: &dyn ObjectStore,
    bucket: &str,
    put: &ObjectMeta,
) {
    let key = &put.key;
    let (got, _) = store
        .get(bucket, key, u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("{check}: get {key}: {e}"));
    let (streamed, _) = store
        .get_stream(bucket, key)
        .await
        .unwrap_or_else(|e| panic!("{check}: get_stream {key}: {e}"));
    let head = store
        .head(bucket, key)
        .await
        .unwrap_or_else(|e| panic!("{check}: head {key}: {e}"))
        .unwrap_or_else(|| panic!("{check}: head {key} found nothing"));
    let listed = list_all(check, store, bucket, key, None, 1).await;
    let listed = listed
        .first()
        .unwrap_or_else(|| panic!("{check}: listing {key} found nothing"));
    assert!(!put.etag.is_empty(), "{check}: the put's ETag is empty");
    for (what, etag) in [
        ("get", &got.etag),
        ("get_stream", &streamed.etag),
        ("head", &head.etag),
        ("list", &listed.etag),
    ] {
        assert_eq!(
            etag, &put.etag,
            "{check}: the ETag of {key} from {what} differs from the put's"
        );
    }
}

fn assert_already_exists<T: std::fmt::Debug>(
    check: &str,
    what: &str,
    bucket: &str,
    key: &str,
    got: Result<T, Error>,
) {
    match got {
        Err(Error::AlreadyExists { bucket: b, key: k }) => assert_eq!(
            (b.as_str(), k.as_str()),
            (bucket, key),
            "{check}: AlreadyExists of {what} names the object"
        ),
        other => panic!("{check}: {what} with create-new over {key} answered {other:?}"),
    }
}

fn assert_not_found(check: &str, what: &str, bucket: &str, key: &str, got: Result<(), Error>) {
    match got {
        Err(Error::NotFound { bucket: b, key: k }) => assert_eq!(
            (b.as_str(), k.as_str()),
            (bucket, key),
            "{check}: NotFound of {what} names the object"
        ),
        other => panic!("{check}: {what} of missing {key} answered {other:?}"),
    }
}
/// Runs each check of the object store suite as a test of its own, on a [`Subject`] made anew
/// for each by the expression given (evaluated in an async test, so it may `.await`).
///
/// [`Subject`]: crate::conformance::Subject
#[macro_export]
macro_rules! object_store_conformance_tests {
    ($subject:expr) => {
        $crate::object_store_conformance_tests!(@checks $subject;
            put_then_get_round_trips_body_and_metadata,
            every_read_reports_the_same_etag,
            empty_objects_round_trip,
            create_new_writes_a_new_key,
            create_new_refuses_an_existing_key_and_keeps_the_old_object,
            overwrite_replaces_the_object_and_changes_the_etag,
            get_over_the_limit_is_too_large,
            missing_objects_are_not_found,
            put_stream_round_trips_a_multi_part_body,
            listing_filters_by_prefix_in_key_order,
            listing_starts_after_the_given_key,
            listing_stops_at_max,
            listing_pages_cover_every_key_once,
            delete_removes_and_deleting_a_missing_key_succeeds,
            unusual_keys_round_trip,
            metadata_round_trips_through_head_and_get,
            a_put_without_metadata_has_none,
            create_new_with_metadata_keeps_the_first_objects_metadata,
            overwrite_replaces_the_metadata_with_the_new_objects,
            metadata_s3_would_refuse_is_refused_before_writing,
        );
    };
    (@checks $subject:expr; $($check:ident,)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let subject: $crate::conformance::Subject<dyn $crate::ports::ObjectStore> =
                    $subject;
                $crate::conformance::object_store::$check(
                    &*subject.adapter,
                    $crate::conformance::object_store::BUCKET,
                    &$crate::conformance::object_store::unique_prefix(),
                )
                .await;
            }
        )+
    };
}
