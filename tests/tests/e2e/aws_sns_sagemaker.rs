//! The AWS adapters of the notifier and endpoint ports against stand-ins: `SnsNotifier` and
//! `BatchingSnsNotifier` against moto (the suite's checks on the server shared by the tests of
//! the process, a topic each; what only SNS has on a server of its own), read back through SQS
//! queues subscribed to the topic; `SageMakerEndpoint` through the SDK against the sample model's
//! in-process SageMaker Runtime API, with the client `Clients` builds (one attempt).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use sealbox_aws::sagemaker::SageMakerEndpoint;
use sealbox_aws::sdk::Clients;
use sealbox_aws::sns::{BatchingSnsNotifier, SnsNotifier};
use sealbox_core::Error;
use sealbox_core::conformance::endpoint::{self, ModelKnobs};
use sealbox_core::conformance::notifier;
use sealbox_core::contract::{EventKind, Notification};
use sealbox_core::ports::endpoint::{Endpoint, Invocation};
use sealbox_core::ports::notifier::Notifier;
use sealbox_model::{IrisModel, ModelConfig};
use sealbox_tests::moto::{self, Moto, MotoLease};
use std::future::Future;

/// Message attributes as subscribers see them: name → string value.
type Attributes = BTreeMap<String, String>;

use sealbox_tests::moto::sdk_config;

/// A queue subscribed to `topic`, with subscription `attributes`; returns its URL.
async fn subscribed_queue(
    clients: &Clients,
    topic: &str,
    name: &str,
    attributes: &[(&str, &str)],
) -> String {
    let url = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap();
    let mut subscribe = clients
        .sns
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(arn)
        .return_subscription_arn(true);
    for (k, v) in attributes {
        subscribe = subscribe.attributes(*k, *v);
    }
    subscribe.send().await.unwrap();
    url
}

/// Receives (and deletes) what is waiting on `queue`: each body with its SQS message attributes.
async fn drain(clients: &Clients, queue: &str) -> Vec<(String, Attributes)> {
    let out = clients
        .sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let mut got = Vec::new();
    for m in out.messages.unwrap_or_default() {
        let attributes = m
            .message_attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
            .collect();
        clients
            .sqs
            .delete_message()
            .queue_url(queue)
            .receipt_handle(m.receipt_handle.unwrap())
            .send()
            .await
            .unwrap();
        got.push((m.body.unwrap(), attributes));
    }
    got
}

/// The SNS envelope of a delivery that is not raw: the notification and the attributes in it.
fn unwrap_envelope(body: &str) -> (Notification, Attributes) {
    let envelope: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(envelope["Type"], "Notification", "{body}");
    let n = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    let attributes = envelope["MessageAttributes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    assert_eq!(v["Type"], "String", "{body}");
                    (k.clone(), v["Value"].as_str().unwrap().to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    (n, attributes)
}

fn assert_attributes(n: &Notification, attributes: &Attributes) {
    assert_eq!(
        attributes.get("event").map(String::as_str),
        Some(n.event.as_str()),
        "{attributes:?}"
    );
    assert_eq!(
        attributes.get("buyer").map(String::as_str),
        Some(n.buyer.as_str()),
        "{attributes:?}"
    );
}

/// A fresh topic on the shared moto server with a queue subscribed for raw delivery, and a
/// `read` that drains that queue.
async fn topic_with_reader() -> (
    MotoLease,
    Clients,
    String,
    impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Vec<Notification>> + Send>> + Send,
) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let moto = tokio::task::spawn_blocking(moto::shared).await.unwrap();
    let clients = Clients::new(&moto.sdk_config().await);
    let topic = clients
        .sns
        .create_topic()
        .name(format!("notifier-suite-{n}"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let queue = subscribed_queue(
        &clients,
        &topic,
        &format!("notifier-suite-{n}"),
        &[("RawMessageDelivery", "true")],
    )
    .await;
    let read = {
        let clients = clients.clone();
        move || {
            let (clients, queue) = (clients.clone(), queue.clone());
            Box::pin(async move {
                drain(&clients, &queue)
                    .await
                    .into_iter()
                    .map(|(body, _)| serde_json::from_str(&body).unwrap())
                    .collect()
            }) as std::pin::Pin<Box<dyn Future<Output = Vec<Notification>> + Send>>
        }
    };
    (moto, clients, topic, read)
}

mod sns_notifier {
    use super::*;
    use sealbox_core::conformance::Subject;

    sealbox_core::notifier_conformance_tests!({
        let (moto, clients, topic, read) = topic_with_reader().await;
        let sns = SnsNotifier::new(clients.sns.clone(), &topic);
        (Subject::new(Arc::new(sns) as _).keeping(moto), read)
    });
}

mod batching_sns_notifier {
    use super::*;
    use sealbox_core::conformance::Subject;

    sealbox_core::notifier_conformance_tests!({
        let (moto, clients, topic, read) = topic_with_reader().await;
        let sns = BatchingSnsNotifier::start(
            SnsNotifier::new(clients.sns.clone(), &topic),
            Duration::from_millis(200),
        );
        (Subject::new(Arc::new(sns) as _).keeping(moto), read)
    });
}

#[tokio::test]
async fn sns_subscribers_get_every_batch_whole_and_filter_on_its_attributes() {
    let moto = Moto::start();
    let clients = Clients::new(&sdk_config(&moto.endpoint).await);
    let topic = clients
        .sns
        .create_topic()
        .name("sealbox-notifications")
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let raw = subscribed_queue(
        &clients,
        &topic,
        "notes-raw",
        &[("RawMessageDelivery", "true")],
    )
    .await;
    // The filter names the event as the body and the attribute do.
    let failed_only = subscribed_queue(
        &clients,
        &topic,
        "notes-failed",
        &[("FilterPolicy", r#"{"event":["InferenceFailed"]}"#)],
    )
    .await;
    let sns = SnsNotifier::new(clients.sns.clone(), &topic);

    // Raw delivery: the body is the notification; the attributes arrive as SQS attributes.
    let arrived: Arc<Mutex<Vec<(Notification, Attributes)>>> = Arc::default();
    let read = || {
        let (clients, raw, arrived) = (clients.clone(), raw.clone(), arrived.clone());
        async move {
            let mut got = Vec::new();
            for (body, attributes) in drain(&clients, &raw).await {
                let n: Notification = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("a raw delivery is the notification: {e}: {body}"));
                arrived.lock().unwrap().push((n.clone(), attributes));
                got.push(n);
            }
            got
        }
    };
    let mut published = notifier::run(&sns, &read).await;
    let twice = published.last().unwrap().clone();

    // PublishBatch: 23 notifications (three calls), every one arriving whole.
    let kinds = [
        EventKind::InferenceCompleted,
        EventKind::InferenceFailed,
        EventKind::RequestRejected,
    ];
    let batch: Vec<Notification> = (0..23)
        .map(|i| notifier::sample(kinds[i % kinds.len()], "batch"))
        .collect();
    sns.publish_batch(&batch).await.unwrap();
    sns.publish_batch(&[]).await.unwrap();
    let copies = notifier::wait_for("publish_batch", &read, &batch).await;
    for n in &batch {
        assert!(copies.contains(n), "{} arrived whole", n.request_id);
    }
    published.extend(batch);

    // The batching notifier passes the same suite, and ten jobs settling at once are one call.
    let batching = BatchingSnsNotifier::start(
        SnsNotifier::new(clients.sns.clone(), &topic),
        Duration::from_millis(200),
    );
    published.extend(notifier::run(&batching, &read).await);
    let ten: Vec<Notification> = (0..10)
        .map(|i| notifier::sample(kinds[i % kinds.len()], "together"))
        .collect();
    let before = clients.calls.snapshot();
    let mut publishing = tokio::task::JoinSet::new();
    for n in ten.clone() {
        let batching = batching.clone();
        publishing.spawn(async move { batching.publish(&n).await });
    }
    while let Some(done) = publishing.join_next().await {
        done.unwrap().unwrap();
    }
    let after = clients.calls.snapshot();
    let calls = |op: &str| after.get(op).unwrap_or(&0) - before.get(op).unwrap_or(&0);
    assert_eq!(
        (calls("SNS.PublishBatch"), calls("SNS.Publish")),
        (1, 0),
        "{after:?}"
    );
    let copies = notifier::wait_for("batched publish", &read, &ten).await;
    for n in &ten {
        assert!(copies.contains(n), "{} arrived whole", n.request_id);
    }
    published.extend(ten);

    // Every raw delivery carries `event` and `buyer` as the body names them.
    let arrived = arrived.lock().unwrap().clone();
    assert!(arrived.len() >= published.len());
    for (n, attributes) in &arrived {
        assert_attributes(n, attributes);
    }

    // The filtered queue got the failures, each with its attributes, and nothing else.
    let want: BTreeSet<&str> = published
        .iter()
        .filter(|n| n.event == EventKind::InferenceFailed)
        .map(|n| n.event_id.as_str())
        .collect();
    assert!(want.len() >= 2);
    let mut got: Vec<Notification> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut empty_reads = 0;
    while empty_reads < 2 {
        let batch = drain(&clients, &failed_only).await;
        if batch.is_empty() {
            let ids: BTreeSet<&str> = got.iter().map(|n| n.event_id.as_str()).collect();
            if ids == want {
                empty_reads += 1;
            }
        }
        for (body, _sqs_attributes) in batch {
            let (n, attributes) = unwrap_envelope(&body);
            assert_eq!(n.event, EventKind::InferenceFailed, "filtered out: {body}");
            assert_attributes(&n, &attributes);
            got.push(n);
        }
        assert!(Instant::now() < deadline, "failures not all filtered in");
    }
    let ids: BTreeSet<&str> = got.iter().map(|n| n.event_id.as_str()).collect();
    assert_eq!(ids, want);
    // A standard topic does not drop repeats: the one published twice is delivered twice, to
    // both subscribers, and subscribers drop it by its `event_id`.
    let count = |ns: &mut dyn Iterator<Item = &Notification>| {
        ns.filter(|n| n.event_id == twice.event_id).count()
    };
    assert!(count(&mut got.iter()) >= 2);
    assert!(count(&mut arrived.iter().map(|(n, _)| n)) >= 2);

    // A topic that is not there: the port's notification failure, which the pipeline retries.
    let gone = SnsNotifier::new(
        clients.sns.clone(),
        "arn:aws:sns:us-east-1:123456789012:not-there",
    );
    let n = notifier::sample(EventKind::InferenceCompleted, "gone");
    let gone_batching = BatchingSnsNotifier::start(gone.clone(), Duration::from_millis(10));
    for got in [
        gone.publish(&n).await,
        gone.publish_batch(std::slice::from_ref(&n)).await,
        gone_batching.publish(&n).await,
    ] {
        match got {
            Err(e @ Error::Notify(_)) => {
                assert!(e.is_retryable() && e.is_own_storage(), "{e}");
                assert!(e.to_string().contains("not-there"), "{e}");
            }
            other => panic!("publishing to a missing topic: {other:?}"),
        }
    }
}

/// A sample model server set up as `knobs` say (or none), and the SDK clients pointed at it.
async fn model_clients(knobs: ModelKnobs) -> Clients {
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
    Clients::new(&sdk_config(&format!("http://{addr}")).await)
}

async fn sagemaker_endpoint(knobs: ModelKnobs) -> Arc<dyn Endpoint> {
    Arc::new(SageMakerEndpoint::new(
        model_clients(knobs).await.sagemaker,
        "iris",
    ))
}

mod sagemaker_endpoint {
    sealbox_core::endpoint_conformance_tests!(runtime_api, super::sagemaker_endpoint);
}

#[tokio::test]
async fn sagemaker_client_makes_one_attempt_per_invocation() {
    // A retrying client would send a throttled or not-ready call again by itself; the worker
    // retries with its own backoff, so the client must not.
    let clients = model_clients(ModelKnobs {
        not_ready: true,
        ..ModelKnobs::default()
    })
    .await;
    let endpoint = SageMakerEndpoint::new(clients.sagemaker.clone(), "iris");
    let got = endpoint
        .invoke(Invocation {
            body: Bytes::from_static(endpoint::GOOD_ROW.as_bytes()),
            content_type: "text/csv".into(),
            accept: "text/csv".into(),
            custom_attributes: None,
        })
        .await;
    assert!(
        matches!(got, Err(Error::EndpointUnavailable { .. })),
        "{got:?}"
    );
    assert_eq!(clients.calls.total(), 1, "{:?}", clients.calls.snapshot());
}
