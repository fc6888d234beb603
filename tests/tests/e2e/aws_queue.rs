//! `SqsQueue` against moto: the queue ports' conformance suite, then what only SQS has (batch
//! limits, partial batch failures, the redrive fallback, queue creation). One moto server for
//! the tests of this process while any is running (`sealbox_tests::moto::shared`); a fake SQS answers the
//! tests that need failures moto never makes.
// Test code: a panic is how a test fails.

use aws_sdk_sqs::types::MessageSystemAttributeName;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sealbox_aws::bootstrap::create_queue_pair;
use sealbox_aws::sdk::Clients;
use sealbox_aws::sqs::SqsQueue;
use sealbox_core::conformance::queue::{Fresh, QueueFactory};
use sealbox_core::ports::queue::{
    OutgoingMessage, QueueAdmin, QueueConsumer, QueueSender, ReceiveOptions, ReceivedMessage,
};
use sealbox_tests::moto::{MotoLease, shared as moto};

/// SDK clients for the SQS (or fake) at `endpoint`.
async fn clients(endpoint: &str) -> Clients {
    Clients::new(&sealbox_tests::moto::sdk_config(endpoint).await)
}

/// A queue name no other test of this process uses.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Fresh SQS queue pairs in moto.
struct SqsFactory {
    clients: Clients,
    _moto: MotoLease,
}

impl SqsFactory {
    async fn new() -> SqsFactory {
        let moto = moto();
        SqsFactory {
            clients: clients(&moto.endpoint).await,
            _moto: moto,
        }
    }
}

#[async_trait]
impl QueueFactory for SqsFactory {
    async fn fresh(&self, max_receives: u32) -> Fresh {
        let name = unique("conformance");
        let (url, _) = create_queue_pair(
            &self.clients.sqs,
            &name,
            max_receives,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        // The dead-letter queue is found from the redrive policy, as in production.
        Fresh::of(SqsQueue::new(self.clients.sqs.clone(), url))
    }

    fn superseded_handles_are_dead(&self) -> bool {
        // SQS: "the request will succeed, but the message might not be deleted"; moto deletes.
        false
    }
}

sealbox_core::queue_conformance_tests!(SqsFactory::new().await);

fn opts(max: usize, wait_secs: u64, visibility_secs: u64) -> ReceiveOptions {
    ReceiveOptions {
        max_messages: max,
        wait: Duration::from_secs(wait_secs),
        visibility_timeout: Duration::from_secs(visibility_secs),
    }
}

/// Receives until a 1 s long poll comes back empty; holds what it got for a minute.
async fn drain(queue: &SqsQueue) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let got = queue.receive(opts(10, 1, 60)).await.unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

fn bodies(messages: &[ReceivedMessage]) -> BTreeSet<String> {
    messages.iter().map(|m| m.body.clone()).collect()
}

/// Calls of `operation` the clients made so far.
fn calls(clients: &Clients, operation: &str) -> u64 {
    clients
        .calls
        .snapshot()
        .iter()
        .filter(|(k, _)| k.ends_with(&format!(".{operation}")))
        .map(|(_, n)| n)
        .sum()
}

async fn moto_queue(max_receives: u32) -> (MotoLease, Clients, SqsQueue) {
    let moto = moto();
    let clients = clients(&moto.endpoint).await;
    let (url, _) = create_queue_pair(
        &clients.sqs,
        &unique("sqs"),
        max_receives,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let queue = SqsQueue::new(clients.sqs.clone(), url);
    (moto, clients, queue)
}

#[tokio::test]
async fn a_batch_of_25_is_sent_in_3_calls_and_all_arrive_in_order() {
    let (_moto, clients, queue) = moto_queue(5).await;
    let messages: Vec<OutgoingMessage> = (0..25)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    let ids = queue.send_batch(&messages).await.unwrap();
    assert_eq!(calls(&clients, "SendMessageBatch"), 3);
    let got = drain(&queue).await;
    assert_eq!(got.len(), 25);
    for (i, id) in ids.iter().enumerate() {
        let m = got.iter().find(|m| &m.message_id == id).unwrap();
        assert_eq!(m.body, format!("m{i}"), "the id at {i} is message {i}'s");
    }
}

#[tokio::test]
async fn a_message_of_a_group_is_sent_with_it_as_its_message_group_id() {
    let (_moto, clients, queue) = moto_queue(5).await;
    let messages = vec![
        OutgoingMessage::new("of a buyer".into()).in_group("111122223333"),
        OutgoingMessage::new("of nobody".into()),
    ];
    queue.send_batch(&messages).await.unwrap();
    // Read with the SDK itself: the group is what makes a standard queue an SQS fair queue.
    let got = clients
        .sqs
        .receive_message()
        .queue_url(queue.url())
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    let groups: std::collections::BTreeMap<String, Option<String>> = got
        .iter()
        .map(|m| {
            let group = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned();
            (m.body().unwrap_or_default().to_owned(), group)
        })
        .collect();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups["of a buyer"].as_deref(), Some("111122223333"));
    assert_eq!(groups["of nobody"], None);
}

#[tokio::test]
async fn an_entry_refused_in_a_batch_is_named_and_the_others_are_sent_once() {
    let (_moto, clients, queue) = moto_queue(5).await;
    // Over 900 s: moto (as SQS) refuses that entry alone, as the sender's fault.
    let messages = vec![
        OutgoingMessage::new("m0".into()),
        OutgoingMessage {
            body: "m1".into(),
            delay: Duration::from_secs(901),
            group: None,
        },
        OutgoingMessage::new("m2".into()),
        OutgoingMessage::new("m3".into()),
    ];
    let err = queue.send_batch(&messages).await.unwrap_err().to_string();
    assert!(err.contains("3 of them sent"), "{err}");
    assert!(err.contains("message 1 refused"), "{err}");
    assert!(err.contains("DelaySeconds"), "{err}");
    assert!(
        !err.contains("message 0") && !err.contains("message 2"),
        "{err}"
    );
    // A refusal is the sender's fault: not retried.
    assert_eq!(calls(&clients, "SendMessageBatch"), 1);
    let got = drain(&queue).await;
    assert_eq!(got.len(), 3, "each sent once: {:?}", bodies(&got));
    assert_eq!(
        bodies(&got),
        BTreeSet::from(["m0".into(), "m2".into(), "m3".into()])
    );
}

#[tokio::test]
async fn a_call_refused_as_a_whole_stops_the_send_and_says_what_was_sent() {
    let (_moto, _clients, queue) = moto_queue(5).await;
    // Message 12 is over 1 MiB: alone in its call, which moto refuses whole.
    let messages: Vec<OutgoingMessage> = (0..25)
        .map(|i| {
            let body = if i == 12 {
                "x".repeat(1_048_577)
            } else {
                format!("m{i}")
            };
            OutgoingMessage::new(body)
        })
        .collect();
    let err = queue.send_batch(&messages).await.unwrap_err().to_string();
    assert!(err.contains("12 of them sent"), "{err}");
    assert!(err.contains("messages 12-24 not sent"), "{err}");
    let got = drain(&queue).await;
    let want: BTreeSet<String> = (0..12).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&got), want);
    assert_eq!(got.len(), 12);
}

#[tokio::test]
async fn the_redrive_fallback_moves_every_dead_letter_back_without_loss() {
    let (_moto, clients, queue) = moto_queue(1).await;
    let sent: BTreeSet<String> = (0..23).map(|i| format!("job {i}")).collect();
    // Each of a buyer (a message group), which the redrive keeps.
    let group = |body: &str| format!("buyer-{}", body.len() % 2);
    let messages: Vec<OutgoingMessage> = sent
        .iter()
        .map(|b| OutgoingMessage::new(b.clone()).in_group(group(b)))
        .collect();
    queue.send_batch(&messages).await.unwrap();
    // One receive each (visibility zero), then the next receives move them all.
    let mut received = 0;
    while received < sent.len() {
        received += queue.receive(opts(10, 1, 0)).await.unwrap().len();
    }
    while !queue.receive(opts(10, 1, 0)).await.unwrap().is_empty() {}
    assert_eq!(queue.dead_count().await.unwrap(), 23);
    let listed = queue.list_dead(100).await.unwrap();
    assert_eq!(listed.len(), 23);
    assert!(
        listed.windows(2).all(|w| w[0].sent_at <= w[1].sent_at),
        "oldest first"
    );
    assert_eq!(
        queue.dead_count().await.unwrap(),
        23,
        "a listing leaves them"
    );

    assert_eq!(queue.redrive(100).await.unwrap(), 23);
    // moto has no move task: tried once (no retries), then the fallback.
    assert_eq!(calls(&clients, "StartMessageMoveTask"), 1);
    assert_eq!(queue.dead_count().await.unwrap(), 0);
    // Read with the SDK itself, to see each message's group.
    let mut back: Vec<(String, Option<String>, String)> = Vec::new();
    loop {
        let got = clients
            .sqs
            .receive_message()
            .queue_url(queue.url())
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            break;
        }
        for m in got {
            let attr = |name| m.attributes().and_then(|a| a.get(&name)).cloned();
            back.push((
                m.body().unwrap_or_default().to_owned(),
                attr(MessageSystemAttributeName::MessageGroupId),
                attr(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or_default(),
            ));
        }
    }
    assert_eq!(back.len(), 23, "no duplicates");
    assert_eq!(
        back.iter().map(|m| m.0.clone()).collect::<BTreeSet<_>>(),
        sent
    );
    for (body, got_group, count) in &back {
        assert_eq!(got_group.as_deref(), Some(group(body).as_str()), "{body}");
        assert_eq!(count, "1", "{body}: a fresh count");
    }
}

#[tokio::test]
async fn creating_a_queue_pair_is_idempotent_and_the_dead_letter_queue_is_found() {
    let moto = moto();
    let clients = clients(&moto.endpoint).await;
    let name = unique("pair");
    let first = create_queue_pair(&clients.sqs, &name, 3, Duration::from_secs(30))
        .await
        .unwrap();
    // Again, with other settings: the same queues, updated.
    let second = create_queue_pair(&clients.sqs, &name, 5, Duration::from_secs(45))
        .await
        .unwrap();
    assert_eq!(first, second);
    assert!(first.1.ends_with(&format!("/{name}-dlq")), "{first:?}");
    let attrs = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&first.0)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = attrs.attributes().unwrap();
    let get = |name| attrs.get(&name).cloned().unwrap_or_default();
    assert_eq!(
        get(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout),
        "45"
    );
    let policy: serde_json::Value =
        serde_json::from_str(&get(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)).unwrap();
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "5");

    let queue = SqsQueue::connect(clients.sqs.clone(), first.0.clone())
        .await
        .unwrap();
    assert_eq!(queue.dead_letter_url(), Some(first.1.as_str()));
    let given =
        SqsQueue::new(clients.sqs.clone(), first.0.clone()).with_dead_letter_queue(first.1.clone());
    assert_eq!(given.dead_letter_url(), Some(first.1.as_str()));
    assert_eq!(given.dead_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_missing_queue_is_an_error_naming_its_url() {
    let moto = moto();
    let clients = clients(&moto.endpoint).await;
    let url = format!("{}/123456789012/no-such-queue", moto.endpoint);
    let queue = SqsQueue::new(clients.sqs.clone(), url.clone());
    let err = queue.stats().await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("the queue {url} does not exist")),
        "{err}"
    );
    let err = queue
        .send_batch(&[OutgoingMessage::new("x".into())])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    assert!(SqsQueue::connect(clients.sqs.clone(), url).await.is_err());
}

/// A fake SQS that answers `SendMessageBatch` by a script, failing entries on the service's
/// side (which moto never does), and records each call's entry ids.
mod fake {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::State;
    use axum::http::header::CONTENT_TYPE;
    use axum::response::IntoResponse;
    use serde_json::{Value, json};

    /// Decides, per call number and entry id, whether an entry fails on the service's side.
    pub type Script = fn(call: usize, id: &str) -> bool;

    #[derive(Clone)]
    struct Fake {
        script: Script,
        calls: Arc<Mutex<Vec<Vec<String>>>>,
    }

    /// Serves `script` on a free port; returns its URL and the ids of each call.
    pub async fn start(script: Script) -> (String, Arc<Mutex<Vec<Vec<String>>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake {
            script,
            calls: calls.clone(),
        };
        let app = Router::new()
            .route("/", axum::routing::post(answer))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    async fn answer(State(fake): State<Fake>, body: String) -> impl IntoResponse {
        let request: Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<String> = request["Entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Id"].as_str().unwrap().to_owned())
            .collect();
        let call = {
            let mut calls = fake.calls.lock().unwrap();
            calls.push(ids.clone());
            calls.len()
        };
        let (failed, ok): (Vec<&String>, Vec<&String>) =
            ids.iter().partition(|id| (fake.script)(call, id));
        let answer = json!({
            "Successful": ok.iter().map(|id| json!({
                "Id": id,
                "MessageId": format!("id-{id}-call-{call}"),
                "MD5OfMessageBody": "00000000000000000000000000000000",
            })).collect::<Vec<_>>(),
            "Failed": failed.iter().map(|id| json!({
                "Id": id,
                "SenderFault": false,
                "Code": "InternalError",
                "Message": "try again",
            })).collect::<Vec<_>>(),
        });
        (
            [(CONTENT_TYPE, "application/x-amz-json-1.0")],
            answer.to_string(),
        )
    }
}

#[tokio::test]
async fn entries_failed_on_the_service_side_are_retried_alone_and_ids_stay_in_order() {
    // Call 1 fails entries 1 and 3; call 2 fails entry 3 again; call 3 takes it.
    let _moto = moto();
    let (url, calls) = fake::start(|call, id| match call {
        1 => id == "1" || id == "3",
        2 => id == "3",
        _ => false,
    })
    .await;
    let clients = clients(&url).await;
    let queue = SqsQueue::new(clients.sqs.clone(), format!("{url}/123456789012/jobs"));
    let messages: Vec<OutgoingMessage> = (0..5)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    let ids = queue.send_batch(&messages).await.unwrap();
    assert_eq!(
        ids,
        [
            "id-0-call-1",
            "id-1-call-2",
            "id-2-call-1",
            "id-3-call-3",
            "id-4-call-1"
        ]
    );
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [vec!["0", "1", "2", "3", "4"], vec!["1", "3"], vec!["3"]]
    );
}

#[tokio::test]
async fn an_entry_failing_on_every_retry_is_named_and_the_others_are_sent() {
    let _moto = moto();
    let (url, calls) = fake::start(|_, id| id == "2").await;
    let clients = clients(&url).await;
    let queue = SqsQueue::new(clients.sqs.clone(), format!("{url}/123456789012/jobs"));
    let messages: Vec<OutgoingMessage> = (0..12)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    let err = queue.send_batch(&messages).await.unwrap_err().to_string();
    assert!(err.contains("11 of them sent"), "{err}");
    assert!(
        err.contains("message 2 refused: InternalError: try again (after 4 attempts)"),
        "{err}"
    );
    let calls = calls.lock().unwrap().clone();
    // The first call, three retries of entry 2 alone, then the second batch (10, 11).
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert!(calls[1..4].iter().all(|c| c == &["2"]), "{calls:?}");
    assert_eq!(calls[4], ["10", "11"]);
}
