//! Retryable endpoint failures back off and come back; a job received too often goes to the
//! dead-letter queue, and a redrive after the endpoint recovers completes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use sealbox::cases::{CaseContext, good_cases};
use sealbox::stack::{ModelSource, Observers, Paths, Stack, StackOptions};
use sealbox_authz::Keyset;
use sealbox_core::contract::EventKind;
use sealbox_core::layout::INBOX;
use sealbox_core::ports::{DeadLetterQueue, ObjectStore, PutMode};

/// A model that answers 503 while `down`, and echoes the body otherwise.
#[allow(clippy::unwrap_used)]
async fn flaky_model(down: Arc<AtomicBool>, calls: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().route(
        "/invocations",
        axum::routing::post(move |body: Bytes| {
            let (down, calls) = (down.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if down.load(Ordering::SeqCst) {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Bytes::from_static(b"warming up"),
                    )
                } else {
                    (StatusCode::OK, body)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_is_dead_lettered_and_completes_after_a_redrive() {
    let down = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let url = flaky_model(down.clone(), calls.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StackOptions::new(dir.path());
    opts.model = ModelSource::Url(url);
    opts.max_receives = 2;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
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
    let case = good_cases(&ctx, 1).unwrap().remove(0);
    stack
        .store
        .put(
            INBOX,
            &case.key(),
            Bytes::from(case.body.clone()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();

    let (_, jobs) = Paths::new(dir.path()).queues(opts.max_receives).unwrap();
    let mut dead = 0;
    for _ in 0..200 {
        dead = jobs.dead_count().await.unwrap();
        if dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead, 1, "the job should be dead-lettered after 2 receives");
    // Each receive retried in-process before backing off: 3 calls per receive.
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert!(
        rx.try_recv().is_err(),
        "no outcome while the endpoint is down"
    );

    down.store(false, Ordering::SeqCst);
    assert_eq!(jobs.redrive(10).await.unwrap(), 1);
    let n = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.event, EventKind::InferenceCompleted);
    assert_eq!(n.request_id, case.request_id);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brief_endpoint_outage_is_absorbed_by_retries_with_backoff() {
    let down = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let url = flaky_model(down.clone(), calls.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StackOptions::new(dir.path());
    opts.model = ModelSource::Url(url);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
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
    let case = good_cases(&ctx, 1).unwrap().remove(0);
    stack
        .store
        .put(
            INBOX,
            &case.key(),
            Bytes::from(case.body.clone()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    // Let the first delivery fail, then recover: the job comes back by itself.
    for _ in 0..100 {
        if calls.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    down.store(false, Ordering::SeqCst);
    let n = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.event, EventKind::InferenceCompleted);
    assert_eq!(n.attempts, 2, "completed on the second delivery");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_invocation_keeps_its_message_invisible_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StackOptions::new(dir.path());
    // Each call outlasts the visibility timeout twice over: only the heartbeat keeps the
    // message from being delivered again.
    opts.model = ModelSource::InProcess {
        latency: Duration::from_millis(2500),
        port: 0,
    };
    opts.visibility_timeout = Duration::from_secs(1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (jtx, mut jobs) = tokio::sync::mpsc::unbounded_channel();
    let stack = Stack::start(
        opts.clone(),
        Observers {
            notifications: Some(tx),
            jobs: Some(jtx),
        },
    )
    .await
    .unwrap();
    let keyset = Keyset::load(&stack.paths.keyset).unwrap();
    let ctx = CaseContext::new(&keyset, "111122223333", "444455556666", &opts.product).unwrap();
    let case = good_cases(&ctx, 1).unwrap().remove(0);
    stack
        .store
        .put(
            INBOX,
            &case.key(),
            Bytes::from(case.body.clone()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.event, EventKind::InferenceCompleted);
    assert_eq!(n.attempts, 1);
    // Give a wrongly redelivered copy time to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut reports = Vec::new();
    while let Ok(r) = jobs.try_recv() {
        reports.push(r);
    }
    assert_eq!(reports.len(), 1, "the job ran more than once: {reports:?}");
    assert_eq!(reports[0].invocations, 1);
    assert!(rx.try_recv().is_err(), "one notification only");
    stack.stop().await;
}
