//! The demo's table of bad request objects and hostile tokens on the AWS backend (`sealbox up
//! --backend aws` on moto): every case gets the same outcome and reason as embedded, announced
//! on the topic.

use std::io::BufRead as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sealbox::cases::{CaseContext, bad_cases, good_cases};
use sealbox::demo::{collect, progress_bar, submit};
use sealbox_aws::s3::S3ObjectStore;
use sealbox_core::contract::Notification;
use sealbox_core::layout::{INBOX, OUTBOX};
use sealbox_core::ports::{ByteStream, ObjectMeta, ObjectStore, PutOptions};
use sealbox_tests::Daemon;
use sealbox_tests::aws_stack::{AwsStack, BUYER};

/// The cases name the embedded buckets (`inbox`, `outbox`); this maps them to the stack's.
struct Buckets {
    s3: S3ObjectStore,
    inbox: String,
    outbox: String,
}

impl Buckets {
    fn name<'a>(&'a self, bucket: &'a str) -> &'a str {
        match bucket {
            INBOX => &self.inbox,
            OUTBOX => &self.outbox,
            other => other,
        }
    }
}

#[async_trait]
impl ObjectStore for Buckets {
    async fn put_opts(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        opts: PutOptions,
    ) -> sealbox_core::Result<ObjectMeta> {
        self.s3.put_opts(self.name(bucket), key, body, opts).await
    }
    async fn put_stream_opts(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        opts: PutOptions,
    ) -> sealbox_core::Result<ObjectMeta> {
        self.s3
            .put_stream_opts(self.name(bucket), key, body, opts)
            .await
    }
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> sealbox_core::Result<(ObjectMeta, Bytes)> {
        self.s3.get(self.name(bucket), key, max_bytes).await
    }
    async fn get_stream(
        &self,
        bucket: &str,
        key: &str,
    ) -> sealbox_core::Result<(ObjectMeta, ByteStream)> {
        self.s3.get_stream(self.name(bucket), key).await
    }
    async fn head(&self, bucket: &str, key: &str) -> sealbox_core::Result<Option<ObjectMeta>> {
        self.s3.head(self.name(bucket), key).await
    }
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> sealbox_core::Result<Vec<ObjectMeta>> {
        self.s3
            .list(self.name(bucket), prefix, start_after, max)
            .await
    }
    async fn delete(&self, bucket: &str, key: &str) -> sealbox_core::Result<()> {
        self.s3.delete(self.name(bucket), key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bad_input_table_gives_the_same_reasons_on_aws_as_embedded() {
    let stack = AwsStack::start("bad-input", &[]);
    let notes_url = stack.subscribe("table-notifications", None);
    let mut child = stack
        .sealbox()
        .args(["up", "--backend", "aws", "--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _daemon = Daemon(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("sealbox ready on AWS"), "{line:?}");

    let config = stack.sdk_config().await;
    let clients = sealbox_aws::sdk::Clients::new(&config);
    let store = Buckets {
        s3: S3ObjectStore::new(clients.s3.clone()),
        inbox: stack.get("SEALBOX_INBOX_BUCKET").to_owned(),
        outbox: stack.get("SEALBOX_OUTBOX_BUCKET").to_owned(),
    };
    // The notifications, as a subscriber of the topic receives them.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Notification>();
    let sqs = clients.sqs.clone();
    let reader = tokio::spawn(async move {
        loop {
            let got = sqs
                .receive_message()
                .queue_url(&notes_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in got.messages.unwrap_or_default() {
                let n: Notification = serde_json::from_str(m.body().unwrap()).unwrap();
                if tx.send(n).is_err() {
                    return;
                }
                sqs.delete_message()
                    .queue_url(&notes_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    });

    let keyset = sealbox_authz::Keyset::load(&stack.dir.path().join("seller/keyset.json")).unwrap();
    let ctx = CaseContext::new(&keyset, BUYER, "444455556666", "iris-classifier").unwrap();
    let mut cases = bad_cases(&ctx).unwrap();
    let bad = cases.len();
    cases.extend(good_cases(&ctx, 6).unwrap());
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let written = submit(store.as_ref(), &cases, 0).await.unwrap();
    let report = collect(
        store.as_ref(),
        &cases,
        &written,
        &mut rx,
        &progress_bar(0, true),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert!(report.ok(), "{:#?}", report.mismatches);
    assert!(bad >= 20, "{bad} bad cases");
    assert_eq!(report.completed, 6);
    reader.abort();
}
