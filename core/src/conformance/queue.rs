//! Conformance suite of the queue ports ([`QueueSender`], [`QueueConsumer`], [`QueueAdmin`]):
//! each check takes a [`QueueFactory`] that makes a fresh queue with its own dead-letter queue,
//! and panics, naming itself, where the adapter breaks a promise of the ports.
//!
//! The checks wait (visibility timeouts of 1-2 s, SQS counting whole seconds) but assert only
//! outcomes, never how long something took. An adapter's tests run them all with
//! [`queue_conformance_tests!`](crate::queue_conformance_tests):
//!
//! ```text
//! sealbox_core::queue_conformance_tests!(MyFactory::new().await);
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use crate::ports::queue::{
    OutgoingMessage, QueueAdmin, QueueConsumer, QueueSender, QueueStats, ReceiveOptions,
    ReceivedMessage,
};

/// A fresh queue, seen through each of its ports.
#[derive(Clone)]
pub struct Fresh {
    /// Its sending side.
    pub sender: Arc<dyn QueueSender>,
    /// Its consuming side.
    pub consumer: Arc<dyn QueueConsumer>,
    /// Its operators' side (backlog and dead letters).
    pub admin: Arc<dyn QueueAdmin>,
}

impl Fresh {
    /// The three ports of one adapter value.
    pub fn of<Q>(queue: Q) -> Fresh
    where
        Q: QueueSender + QueueConsumer + QueueAdmin + 'static,
    {
        let queue = Arc::new(queue);
        Fresh {
            sender: queue.clone(),
            consumer: queue.clone(),
            admin: queue,
        }
    }
}

/// Makes the queues the checks run on.
#[async_trait]
pub trait QueueFactory: Send + Sync {
    /// A new, empty queue whose messages move to its own, empty dead-letter queue once
    /// received `max_receives` times; panics if it cannot.
    async fn fresh(&self, max_receives: u32) -> Fresh;

    /// Whether a receipt handle superseded by a later receive of its message is dead (deletes
    /// and hides nothing). SQS promises only that such a delete succeeds: the message "might
    /// not be deleted", so its adapter answers false and the check asks only for no error.
    fn superseded_handles_are_dead(&self) -> bool {
        true
    }
}

/// Generous bound on waiting for something that should happen within a few seconds.
const PATIENCE: Duration = Duration::from_secs(15);

fn opts(max_messages: usize, wait: Duration, visibility_timeout: Duration) -> ReceiveOptions {
    ReceiveOptions {
        max_messages,
        wait,
        visibility_timeout,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Receives with 1 s long polls until `n` messages came (or [`PATIENCE`] ran out).
async fn receive_n(
    check: &str,
    consumer: &dyn QueueConsumer,
    n: usize,
    visibility: Duration,
) -> Vec<ReceivedMessage> {
    let end = Instant::now() + PATIENCE;
    let mut got: Vec<ReceivedMessage> = Vec::new();
    while got.len() < n && Instant::now() < end {
        let want = (n - got.len()).min(10);
        let batch = consumer
            .receive(opts(want, secs(1), visibility))
            .await
            .unwrap_or_else(|e| panic!("{check}: receive failed: {e}"));
        got.extend(batch);
    }
    assert_eq!(
        got.len(),
        n,
        "{check}: expected {n} messages within {PATIENCE:?}, got {:?}",
        got.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
    got
}

/// One receive that must find nothing.
async fn receive_none(check: &str, consumer: &dyn QueueConsumer, wait: Duration, why: &str) {
    let got = consumer
        .receive(opts(10, wait, secs(30)))
        .await
        .unwrap_or_else(|e| panic!("{check}: receive failed: {e}"));
    assert!(
        got.is_empty(),
        "{check}: {why}, but received {:?}",
        got.iter()
            .map(|m| (&m.body, m.receive_count))
            .collect::<Vec<_>>()
    );
}

/// Polls `probe` until it returns `want` (counts of a service may lag a little).
async fn eventually<T, F, Fut>(check: &str, what: &str, want: T, mut probe: F)
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let end = Instant::now() + PATIENCE;
    loop {
        let got = probe().await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "{check}: {what}: expected {want:?}, still {got:?} after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The counts of a stats answer, without `oldest_age` (which only some services know).
fn counts(stats: QueueStats) -> (u64, u64, u64) {
    (stats.visible, stats.in_flight, stats.delayed)
}

async fn send(check: &str, sender: &dyn QueueSender, messages: &[OutgoingMessage]) -> Vec<String> {
    let ids = sender
        .send_batch(messages)
        .await
        .unwrap_or_else(|e| panic!("{check}: send_batch failed: {e}"));
    assert_eq!(
        ids.len(),
        messages.len(),
        "{check}: send_batch returned {} ids for {} messages",
        ids.len(),
        messages.len()
    );
    ids
}

fn plain(bodies: &[&str]) -> Vec<OutgoingMessage> {
    bodies
        .iter()
        .map(|b| OutgoingMessage::new((*b).to_owned()))
        .collect()
}

fn sane_sent_at(check: &str, sent_at: SystemTime, before: SystemTime) {
    // Clocks of a service may differ a little; this only catches a missing or garbled time.
    let slack = Duration::from_secs(300);
    assert!(
        sent_at + slack >= before && sent_at <= SystemTime::now() + slack,
        "{check}: sent_at {sent_at:?} is not around the time of sending ({before:?})"
    );
}

/// `send_batch` of ten returns their ids in order, and every body arrives intact: unicode,
/// JSON, markup, line breaks and one of 200 KiB. An empty batch sends nothing.
pub async fn send_batch_returns_ids_in_order_and_bodies_intact(factory: &dyn QueueFactory) {
    const CHECK: &str = "send_batch_returns_ids_in_order_and_bodies_intact";
    let q = factory.fresh(5).await;
    assert!(
        send(CHECK, &*q.sender, &[]).await.is_empty(),
        "{CHECK}: an empty batch returned ids"
    );
    let big: String = "0123456789abcdef—ü🦀\n"
        .chars()
        .cycle()
        .scan(0usize, |bytes, c| {
            *bytes += c.len_utf8();
            (*bytes <= 200 * 1024).then_some(c)
        })
        .collect();
    let mut bodies: Vec<String> = vec![
        "plain".into(),
        "grüße, 你好, 🦀 — ünïcödé ‰".into(),
        big,
        r#"{"json": "with \"quotes\" and \\ backslashes", "n": 1.5e3}"#.into(),
        "line\nbreaks\tand tabs\r\nand a trailing space ".into(),
        "<xml attr='1'>&amp; markup & ampersands</xml>".into(),
    ];
    bodies.extend((6..10).map(|i| format!("message {i}")));
    let before = SystemTime::now();
    let messages: Vec<OutgoingMessage> = bodies.iter().cloned().map(OutgoingMessage::new).collect();
    let ids = send(CHECK, &*q.sender, &messages).await;
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "{CHECK}: ids repeat: {ids:?}");
    assert!(
        ids.iter().all(|id| !id.is_empty()),
        "{CHECK}: an empty id in {ids:?}"
    );
    let got: HashMap<String, ReceivedMessage> = receive_n(CHECK, &*q.consumer, 10, secs(60))
        .await
        .into_iter()
        .map(|m| (m.message_id.clone(), m))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let m = got
            .get(id)
            .unwrap_or_else(|| panic!("{CHECK}: no message received with id {id} (message {i})"));
        assert!(
            m.body == bodies[i],
            "{CHECK}: id {id}, returned at position {i}, carries a body of {} bytes starting {:?}, not message {i}'s ({} bytes, starting {:?})",
            m.body.len(),
            m.body.chars().take(40).collect::<String>(),
            bodies[i].len(),
            bodies[i].chars().take(40).collect::<String>()
        );
        assert_eq!(
            m.receive_count, 1,
            "{CHECK}: first receive of message {i} counted {}",
            m.receive_count
        );
        sane_sent_at(CHECK, m.sent_at, before);
    }
}

/// A received message is invisible until its visibility timeout ends, then comes back with
/// receive count 2, the same id and a new receipt handle.
pub async fn received_message_is_invisible_until_its_timeout_then_counted_again(
    factory: &dyn QueueFactory,
) {
    const CHECK: &str = "received_message_is_invisible_until_its_timeout_then_counted_again";
    let q = factory.fresh(5).await;
    send(CHECK, &*q.sender, &plain(&["a"])).await;
    let first = receive_n(CHECK, &*q.consumer, 1, secs(2)).await.remove(0);
    assert_eq!(first.receive_count, 1, "{CHECK}: first receive count");
    receive_none(
        CHECK,
        &*q.consumer,
        Duration::ZERO,
        "the message is within its visibility timeout",
    )
    .await;
    let again = receive_n(CHECK, &*q.consumer, 1, secs(30)).await.remove(0);
    assert_eq!(again.body, "a", "{CHECK}: body of the redelivery");
    assert_eq!(
        again.message_id, first.message_id,
        "{CHECK}: a redelivery keeps its id"
    );
    assert_eq!(again.receive_count, 2, "{CHECK}: second receive count");
    assert_ne!(
        again.receipt_handle, first.receipt_handle,
        "{CHECK}: each receive has its own receipt handle"
    );
}

/// `delete_batch` removes received messages for good; an empty batch is fine.
pub async fn delete_batch_removes_messages(factory: &dyn QueueFactory) {
    const CHECK: &str = "delete_batch_removes_messages";
    let q = factory.fresh(5).await;
    send(CHECK, &*q.sender, &plain(&["a", "b", "c"])).await;
    let got = receive_n(CHECK, &*q.consumer, 3, secs(1)).await;
    let handles: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
    q.consumer
        .delete_batch(&handles)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: delete_batch failed: {e}"));
    q.consumer
        .delete_batch(&[])
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: an empty delete_batch failed: {e}"));
    // Past the visibility timeout: a message not deleted would show again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    receive_none(CHECK, &*q.consumer, secs(1), "every message was deleted").await;
    eventually(CHECK, "stats after deleting all", (0, 0, 0), || async {
        counts(q.admin.stats().await.unwrap())
    })
    .await;
}

/// A stale receipt handle (of a deleted message, superseded by a later receive, or not a
/// handle at all) deletes nothing and is not an error, for delete and change-visibility alike.
pub async fn stale_receipt_handle_deletes_nothing_and_is_not_an_error(factory: &dyn QueueFactory) {
    const CHECK: &str = "stale_receipt_handle_deletes_nothing_and_is_not_an_error";
    let q = factory.fresh(5).await;
    send(CHECK, &*q.sender, &plain(&["a"])).await;
    // Visibility zero: visible again at once, so the next receive supersedes this handle.
    let first = receive_n(CHECK, &*q.consumer, 1, Duration::ZERO)
        .await
        .remove(0);
    let second = receive_n(CHECK, &*q.consumer, 1, secs(60)).await.remove(0);
    assert_eq!(second.receive_count, 2, "{CHECK}: second receive count");
    let stale = first.receipt_handle.clone();
    q.consumer
        .change_visibility(&stale, Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: change_visibility with a superseded handle: {e}"));
    q.consumer
        .delete_batch(std::slice::from_ref(&stale))
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: delete_batch with a superseded handle: {e}"));
    if factory.superseded_handles_are_dead() {
        receive_none(
            CHECK,
            &*q.consumer,
            Duration::ZERO,
            "a superseded handle changed no visibility",
        )
        .await;
        assert_eq!(
            counts(q.admin.stats().await.unwrap()),
            (0, 1, 0),
            "{CHECK}: a superseded handle deleted the message"
        );
    }
    let current = vec![second.receipt_handle.clone()];
    q.consumer
        .delete_batch(&current)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: delete_batch with the current handle: {e}"));
    // The handle of a deleted message, and a string that is no handle at all.
    let garbage = "not-a-receipt-handle".to_owned();
    for handle in [&second.receipt_handle, &garbage] {
        q.consumer
            .delete_batch(std::slice::from_ref(handle))
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: delete_batch with stale {handle:?}: {e}"));
        q.consumer
            .change_visibility(handle, Duration::ZERO)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: change_visibility with stale {handle:?}: {e}"));
    }
    receive_none(
        CHECK,
        &*q.consumer,
        Duration::ZERO,
        "the message was deleted",
    )
    .await;
    eventually(CHECK, "stats after the delete", (0, 0, 0), || async {
        counts(q.admin.stats().await.unwrap())
    })
    .await;
}

/// `change_visibility` to zero makes a received message visible at once; to longer than its
/// timeout keeps it hidden past that timeout.
pub async fn change_visibility_shows_or_hides_a_received_message(factory: &dyn QueueFactory) {
    const CHECK: &str = "change_visibility_shows_or_hides_a_received_message";
    let q = factory.fresh(10).await;
    send(CHECK, &*q.sender, &plain(&["a"])).await;
    let first = receive_n(CHECK, &*q.consumer, 1, secs(60)).await.remove(0);
    q.consumer
        .change_visibility(&first.receipt_handle, Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: change_visibility(0) failed: {e}"));
    let second = receive_n(CHECK, &*q.consumer, 1, secs(1)).await.remove(0);
    assert_eq!(
        second.receive_count, 2,
        "{CHECK}: made visible, it is received again"
    );
    q.consumer
        .change_visibility(&second.receipt_handle, secs(60))
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: change_visibility(60 s) failed: {e}"));
    // Past the 1 s it was received with: the longer timeout holds it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    receive_none(
        CHECK,
        &*q.consumer,
        secs(1),
        "its visibility timeout was extended to 60 s",
    )
    .await;
    q.consumer
        .change_visibility(&second.receipt_handle, Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: change_visibility(0) failed: {e}"));
    let third = receive_n(CHECK, &*q.consumer, 1, secs(60)).await.remove(0);
    assert_eq!(
        (third.body.as_str(), third.receive_count),
        ("a", 3),
        "{CHECK}: shown again, the same message, counted"
    );
}

/// A message sent with a delay is not received before the delay ends, and is after.
pub async fn delayed_message_is_not_received_before_its_delay(factory: &dyn QueueFactory) {
    const CHECK: &str = "delayed_message_is_not_received_before_its_delay";
    let q = factory.fresh(5).await;
    let delay = secs(4);
    let sent = Instant::now();
    send(
        CHECK,
        &*q.sender,
        &[
            OutgoingMessage {
                body: "later".into(),
                delay,
                group: None,
            },
            OutgoingMessage::new("now".into()),
        ],
    )
    .await;
    let end = Instant::now() + PATIENCE;
    let mut now_seen = false;
    let mut later = None;
    while later.is_none() && Instant::now() < end {
        let got = q
            .consumer
            .receive(opts(10, secs(1), secs(60)))
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: receive failed: {e}"));
        // Only a receive that ended before the delay did proves anything.
        let early = sent.elapsed() < delay;
        for m in got {
            match m.body.as_str() {
                "now" => now_seen = true,
                "later" if early => {
                    panic!("{CHECK}: the delayed message was received before its delay ended")
                }
                "later" => later = Some(m),
                other => panic!("{CHECK}: unexpected message {other:?}"),
            }
        }
    }
    assert!(now_seen, "{CHECK}: the undelayed message never came");
    let later = later.unwrap_or_else(|| {
        panic!("{CHECK}: the delayed message never came, {PATIENCE:?} after sending")
    });
    assert_eq!(
        later.receive_count, 1,
        "{CHECK}: first receive of the delayed message"
    );
}

/// A long poll returns a message sent while it waits, within its wait.
pub async fn long_poll_returns_a_message_sent_during_the_wait(factory: &dyn QueueFactory) {
    const CHECK: &str = "long_poll_returns_a_message_sent_during_the_wait";
    let q = factory.fresh(5).await;
    let consumer = q.consumer.clone();
    let waiter = tokio::spawn(async move { consumer.receive(opts(1, secs(10), secs(60))).await });
    // Most likely waiting by now; if not, it finds the message at once, which is fine too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(CHECK, &*q.sender, &plain(&["wake up"])).await;
    let got = waiter
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: the receive task failed: {e}"))
        .unwrap_or_else(|e| panic!("{CHECK}: receive failed: {e}"));
    assert_eq!(
        got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["wake up"],
        "{CHECK}: the long poll returned without the message sent during its wait"
    );
}

/// After `max_receives` receives a message moves to the dead-letter queue: no longer
/// received, listed with its body and receive count, counted; a listing leaves it there; a
/// redrive moves it back, where it is received again with a fresh count.
pub async fn message_received_too_often_is_dead_lettered_then_redriven(factory: &dyn QueueFactory) {
    const CHECK: &str = "message_received_too_often_is_dead_lettered_then_redriven";
    let q = factory.fresh(2).await;
    let before = SystemTime::now();
    let id = send(CHECK, &*q.sender, &plain(&["poison"])).await.remove(0);
    for n in 1..=2 {
        let m = receive_n(CHECK, &*q.consumer, 1, Duration::ZERO)
            .await
            .remove(0);
        assert_eq!(m.receive_count, n, "{CHECK}: receive {n}");
    }
    receive_none(
        CHECK,
        &*q.consumer,
        secs(1),
        "the message was received max_receives (2) times",
    )
    .await;
    eventually(CHECK, "dead_count after the move", 1, || async {
        q.admin.dead_count().await.unwrap()
    })
    .await;
    eventually(CHECK, "stats of the source queue", (0, 0, 0), || async {
        counts(q.admin.stats().await.unwrap())
    })
    .await;
    let dead = q
        .admin
        .list_dead(10)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: list_dead failed: {e}"));
    assert_eq!(dead.len(), 1, "{CHECK}: list_dead: {dead:?}");
    assert_eq!(dead[0].body, "poison", "{CHECK}: dead letter's body");
    assert_eq!(dead[0].message_id, id, "{CHECK}: dead letter's id");
    assert_eq!(
        dead[0].receive_count, 2,
        "{CHECK}: dead letter's receives before it moved"
    );
    sane_sent_at(CHECK, dead[0].sent_at, before);
    assert_eq!(
        q.admin.dead_count().await.unwrap(),
        1,
        "{CHECK}: listing dead letters must leave them there"
    );
    let moved = q
        .admin
        .redrive(10)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: redrive failed: {e}"));
    assert_eq!(moved, 1, "{CHECK}: redrive(10) moved");
    eventually(CHECK, "dead_count after the redrive", 0, || async {
        q.admin.dead_count().await.unwrap()
    })
    .await;
    let back = receive_n(CHECK, &*q.consumer, 1, secs(60)).await.remove(0);
    assert_eq!(
        (back.body.as_str(), back.receive_count),
        ("poison", 1),
        "{CHECK}: redriven, received again with a fresh count"
    );
}

/// `list_dead` and `redrive` take at most the number asked for.
pub async fn list_dead_and_redrive_take_at_most_max(factory: &dyn QueueFactory) {
    const CHECK: &str = "list_dead_and_redrive_take_at_most_max";
    let q = factory.fresh(1).await;
    send(CHECK, &*q.sender, &plain(&["x", "y"])).await;
    receive_n(CHECK, &*q.consumer, 2, Duration::ZERO).await;
    receive_none(
        CHECK,
        &*q.consumer,
        secs(1),
        "both were received max_receives (1) times",
    )
    .await;
    eventually(CHECK, "dead_count", 2, || async {
        q.admin.dead_count().await.unwrap()
    })
    .await;
    assert!(
        q.admin.list_dead(0).await.unwrap().is_empty(),
        "{CHECK}: list_dead(0)"
    );
    assert_eq!(
        q.admin.list_dead(1).await.unwrap().len(),
        1,
        "{CHECK}: list_dead(1)"
    );
    assert_eq!(q.admin.redrive(0).await.unwrap(), 0, "{CHECK}: redrive(0)");
    assert_eq!(q.admin.redrive(1).await.unwrap(), 1, "{CHECK}: redrive(1)");
    eventually(CHECK, "dead_count after redrive(1)", 1, || async {
        q.admin.dead_count().await.unwrap()
    })
    .await;
    assert_eq!(
        q.admin.redrive(10).await.unwrap(),
        1,
        "{CHECK}: redrive(10) of the last one"
    );
    let back = receive_n(CHECK, &*q.consumer, 2, secs(60)).await;
    let mut bodies: Vec<&str> = back.iter().map(|m| m.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["x", "y"], "{CHECK}: both redriven");
}

/// `stats` counts visible, in-flight (received, not deleted) and delayed messages.
pub async fn stats_count_visible_in_flight_and_delayed(factory: &dyn QueueFactory) {
    const CHECK: &str = "stats_count_visible_in_flight_and_delayed";
    let q = factory.fresh(5).await;
    eventually(CHECK, "stats of an empty queue", (0, 0, 0), || async {
        counts(q.admin.stats().await.unwrap())
    })
    .await;
    let mut messages = plain(&["a", "b", "c"]);
    messages.push(OutgoingMessage {
        body: "d".into(),
        delay: secs(120),
        group: None,
    });
    send(CHECK, &*q.sender, &messages).await;
    receive_n(CHECK, &*q.consumer, 1, secs(120)).await;
    eventually(
        CHECK,
        "(visible, in_flight, delayed)",
        (2, 1, 1),
        || async { counts(q.admin.stats().await.unwrap()) },
    )
    .await;
    assert_eq!(
        q.admin.dead_count().await.unwrap(),
        0,
        "{CHECK}: no dead letters"
    );
}

/// Every check of the suite as a `#[tokio::test]` named after it, each evaluating `$factory`
/// (an expression of a [`QueueFactory`]; it may `.await`) for itself.
#[macro_export]
macro_rules! queue_conformance_tests {
    ($factory:expr) => {
        $crate::queue_conformance_tests!(@checks $factory;
            send_batch_returns_ids_in_order_and_bodies_intact,
            received_message_is_invisible_until_its_timeout_then_counted_again,
            delete_batch_removes_messages,
            stale_receipt_handle_deletes_nothing_and_is_not_an_error,
            change_visibility_shows_or_hides_a_received_message,
            delayed_message_is_not_received_before_its_delay,
            long_poll_returns_a_message_sent_during_the_wait,
            message_received_too_often_is_dead_lettered_then_redriven,
            list_dead_and_redrive_take_at_most_max,
            stats_count_visible_in_flight_and_delayed,
        );
    };
    (@checks $factory:expr; $($check:ident,)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let factory = $factory;
                $crate::conformance::queue::$check(&factory).await;
            }
        )+
    };
}
