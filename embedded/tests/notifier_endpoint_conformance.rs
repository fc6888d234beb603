//! The notifier suite against `EventLog` (read back from its file) and the endpoint suite
//! against `HttpEndpoint` pointed at a sample model server started in-process. The container
//! contract (`/invocations`) has no throttling and no "not ready", so only the checks for all
//! adapters apply.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use sealbox_core::conformance::endpoint::ModelKnobs;
use sealbox_core::conformance::notifier;
use sealbox_core::contract::DEFAULT_PAYLOAD_LIMIT;
use sealbox_core::ports::endpoint::Endpoint;
use sealbox_embedded::event_log::{EventLog, read_event_log};
use sealbox_embedded::http_endpoint::HttpEndpoint;
use sealbox_model::{IrisModel, ModelConfig};

mod event_log {
    use std::sync::Arc;

    use sealbox_core::conformance::Subject;
    use sealbox_embedded::event_log::{EventLog, read_event_log};

    sealbox_core::notifier_conformance_tests!({
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let log = EventLog::open(&path, true).unwrap();
        let read = move || {
            let path = path.clone();
            async move { read_event_log(&path).unwrap() }
        };
        (Subject::new(Arc::new(log) as _).keeping(dir), read)
    });
}

#[tokio::test]
async fn the_event_log_keeps_every_publish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let log = EventLog::open(&path, true).unwrap();
    let read = || {
        let path = path.clone();
        async move { read_event_log(&path).unwrap() }
    };
    let published = notifier::run(&log, read).await;

    // The log keeps every publish: the one published twice is there twice, the others once.
    let lines = read_event_log(&path).unwrap();
    let (twice, once) = published.split_last().unwrap();
    let copies = |id: &str| lines.iter().filter(|n| n.event_id == id).count();
    assert_eq!(copies(&twice.event_id), 2);
    for n in once {
        assert_eq!(copies(&n.event_id), 1, "{}", n.request_id);
    }
}

/// A sample model server set up as `knobs` say (or none), and `HttpEndpoint` pointed at it.
async fn http_endpoint(knobs: ModelKnobs) -> Arc<dyn Endpoint> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    if knobs.unreachable {
        // Nobody listens on a port just given back.
        drop(listener);
    } else {
        let cfg = ModelConfig {
            latency: knobs.latency,
            max_concurrency: knobs.max_concurrency,
            not_ready: knobs.not_ready,
        };
        tokio::spawn(sealbox_model::serve(
            listener,
            IrisModel::shared().unwrap(),
            cfg,
            std::future::pending(),
        ));
    }
    Arc::new(
        HttpEndpoint::new(
            &format!("http://{addr}"),
            Duration::from_secs(10),
            DEFAULT_PAYLOAD_LIMIT,
        )
        .unwrap(),
    )
}

mod http_endpoint {
    sealbox_core::endpoint_conformance_tests!(super::http_endpoint);
}
