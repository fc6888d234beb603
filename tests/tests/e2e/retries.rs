//! Retryable endpoint failures back off and come back; a job received too often goes to the
//! dead-letter queue, and a redrive after the endpoint recovers completes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use sealbox::cases::good_cases;
use sealbox::stack::{ModelSource, Paths};
use sealbox_core::contract::EventKind;
use sealbox_core::ports::QueueAdmin;
use sealbox_tests::Embedded;

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
    let mut e = Embedded::start(|o| {
        o.model = ModelSource::Url(url);
        o.max_receives = 2;
    })
    .await;
    let case = good_cases(&e.ctx, 1).unwrap().remove(0);
    e.drop_request(&case).await;

    let (_, jobs) = Paths::new(e.dir.path())
        .queues(e.opts.max_receives)
        .unwrap();
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
        e.notes.try_recv().is_err(),
        "no outcome while the endpoint is down"
    );

    down.store(false, Ordering::SeqCst);
    assert_eq!(jobs.redrive(10).await.unwrap(), 1);
    let n = e.next_note(Duration::from_secs(30)).await;
    assert_eq!(n.event, EventKind::InferenceCompleted);
    assert_eq!(n.request_id, case.request_id);
    e.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brief_endpoint_outage_is_absorbed_by_retries_with_backoff() {
    let down = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let url = flaky_model(down.clone(), calls.clone()).await;
    let mut e = Embedded::start(|o| o.model = ModelSource::Url(url)).await;
    let case = good_cases(&e.ctx, 1).unwrap().remove(0);
    e.drop_request(&case).await;
    // Let the first delivery fail, then recover: the job comes back by itself.
    for _ in 0..100 {
        if calls.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    down.store(false, Ordering::SeqCst);
    let n = e.next_note(Duration::from_secs(30)).await;
    assert_eq!(n.event, EventKind::InferenceCompleted);
    assert_eq!(n.attempts, 2, "completed on the second delivery");
    e.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_invocation_keeps_its_message_invisible_and_runs_once() {
    // Each call outlasts the visibility timeout twice over: only the heartbeat keeps the
    // message from being delivered again.
    let mut e = Embedded::start(|o| {
        o.model = ModelSource::InProcess {
            latency: Duration::from_millis(2500),
            port: 0,
        };
        o.visibility_timeout = Duration::from_secs(1);
    })
    .await;
    let case = good_cases(&e.ctx, 1).unwrap().remove(0);
    e.drop_request(&case).await;
    let n = e.next_note(Duration::from_secs(30)).await;
    assert_eq!(n.event, EventKind::InferenceCompleted);
    assert_eq!(n.attempts, 1);
    // Give a wrongly redelivered copy time to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut reports = Vec::new();
    while let Ok(r) = e.jobs.try_recv() {
        reports.push(r);
    }
    assert_eq!(reports.len(), 1, "the job ran more than once: {reports:?}");
    assert_eq!(reports[0].invocations, 1);
    assert!(e.notes.try_recv().is_err(), "one notification only");
    e.stack.stop().await;
}
