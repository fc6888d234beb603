//! Conformance suite of the notifier port ([`Notifier`]): publishing succeeds, what arrives is
//! the notification whole (same `event_id`, same body fields), and publishing the same
//! notification twice is allowed (at least once).
//!
//! Where notifications arrive is the adapter's business, so the caller passes `read`: each call
//! returns notifications that have arrived, either all of them so far (an event log) or those
//! since the previous call (a queue it drains). The checks only look for their own notifications
//! (request ids unique to the run), so a shared sink with other traffic is fine. They panic,
//! naming themselves, where the adapter breaks a promise of the port.
//!
//! An adapter's tests run each check as a test of its own with
//! [`notifier_conformance_tests!`](crate::notifier_conformance_tests), given an expression that
//! makes a [`Subject`](super::Subject) and its `read`; [`run`] runs them all in turn:
//!
//! ```text
//! sealbox_core::notifier_conformance_tests!({
//!     let notifier = Arc::new(MyNotifier::new());
//!     (Subject::new(notifier.clone() as _), move || { let n = notifier.clone(); async move { n.read_back() } })
//! });
//! let published = sealbox_core::conformance::notifier::run(&notifier, || async { read_back() }).await;
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use crate::contract::{CONTRACT_VERSION, EventKind, Notification, Reason, event_id};
use crate::ports::notifier::Notifier;

/// Generous bound on waiting for a notification to arrive.
const PATIENCE: Duration = Duration::from_secs(20);
/// Pause between two reads while waiting.
const POLL: Duration = Duration::from_millis(100);

/// The buyer of the suite's notifications.
pub const BUYER: &str = "111122223333";

/// A request id no earlier run used (time and a counter), tagged for the reader of a failure.
fn unique_request_id(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("conf-{tag}-{nanos:x}-{n}")
}

/// A notification of `kind` for a fresh request id, with every field its kind carries.
pub fn sample(kind: EventKind, tag: &str) -> Notification {
    let request_id = unique_request_id(tag);
    let completed_at = OffsetDateTime::now_utc();
    let received_at = completed_at - time::Duration::seconds(3);
    let mut n = Notification {
        version: CONTRACT_VERSION,
        event_id: event_id(BUYER, &request_id),
        event: kind,
        buyer: BUYER.into(),
        request_id: request_id.clone(),
        output_location: None,
        failure_location: None,
        content_type: "application/json".into(),
        bytes: 321,
        received_at,
        completed_at,
        attempts: 1,
        reason: None,
        usage: None,
    };
    match kind {
        EventKind::InferenceCompleted => {
            n.output_location = Some(format!("s3://outbox/{BUYER}/results/{request_id}.out"));
            n.content_type = "text/csv".into();
            n.bytes = 22;
        }
        EventKind::InferenceFailed => {
            n.failure_location = Some(format!("s3://outbox/{BUYER}/failed/{request_id}.json"));
            n.reason = Some(Reason::ModelError);
            n.attempts = 2;
        }
        EventKind::RequestRejected => {
            n.failure_location = Some(format!("s3://outbox/{BUYER}/rejected/{request_id}.json"));
            n.reason = Some(Reason::TokenExpired);
            n.attempts = 0;
        }
        EventKind::TestNotification => n.attempts = 0,
    }
    n
}

/// Reads until every one of `wanted` has arrived, or panics after [`PATIENCE`]; returns every
/// copy of them that arrived (other notifications are left out).
pub async fn wait_for<R, F>(check: &str, read: &R, wanted: &[Notification]) -> Vec<Notification>
where
    R: Fn() -> F,
    F: Future<Output = Vec<Notification>>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut seen: Vec<Notification> = Vec::new();
    loop {
        for n in read().await {
            if wanted.iter().any(|w| w.event_id == n.event_id) {
                seen.push(n);
            }
        }
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|w| !seen.iter().any(|s| s.event_id == w.event_id))
            .map(|w| w.request_id.as_str())
            .collect();
        if missing.is_empty() {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{check}: not arrived within {PATIENCE:?}: {missing:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Every copy that arrived is the published notification, field for field.
fn assert_whole(check: &str, published: &[Notification], arrived: &[Notification]) {
    for a in arrived {
        let p = published
            .iter()
            .find(|p| p.event_id == a.event_id)
            .unwrap_or_else(|| panic!("{check}: an unknown event_id {} arrived", a.event_id));
        assert_eq!(
            a, p,
            "{check}: what arrived differs from what was published"
        );
    }
}

/// One notification of each kind is published and arrives whole; returns what was published.
pub async fn each_kind_is_published_and_arrives_whole<N, R, F>(
    notifier: &N,
    read: R,
) -> Vec<Notification>
where
    N: Notifier + ?Sized,
    R: Fn() -> F,
    F: Future<Output = Vec<Notification>>,
{
    const CHECK: &str = "each_kind_is_published_and_arrives_whole";
    let published: Vec<Notification> = [
        EventKind::InferenceCompleted,
        EventKind::InferenceFailed,
        EventKind::RequestRejected,
        EventKind::TestNotification,
    ]
    .into_iter()
    .map(|kind| sample(kind, "kind"))
    .collect();
    for n in &published {
        notifier
            .publish(n)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: publishing {}: {e}", n.request_id));
    }
    let arrived = wait_for(CHECK, &read, &published).await;
    assert_whole(CHECK, &published, &arrived);
    published
}

/// The same notification published twice is accepted both times and arrives (at least once),
/// every copy with the same `event_id` and body; returns it.
pub async fn publishing_the_same_one_twice_is_allowed<N, R, F>(
    notifier: &N,
    read: R,
) -> Notification
where
    N: Notifier + ?Sized,
    R: Fn() -> F,
    F: Future<Output = Vec<Notification>>,
{
    const CHECK: &str = "publishing_the_same_one_twice_is_allowed";
    let n = sample(EventKind::InferenceFailed, "twice");
    for attempt in 1..=2 {
        notifier
            .publish(&n)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: publish #{attempt}: {e}"));
    }
    let published = [n];
    let arrived = wait_for(CHECK, &read, &published).await;
    assert_whole(CHECK, &published, &arrived);
    let [n] = published;
    n
}

/// Every check in turn; returns every notification published (each once, though the second
/// check publishes its own twice: it is the last), for adapter-specific checks of where they
/// went.
pub async fn run<N, R, F>(notifier: &N, read: R) -> Vec<Notification>
where
    N: Notifier + ?Sized,
    R: Fn() -> F,
    F: Future<Output = Vec<Notification>>,
{
    let mut published = each_kind_is_published_and_arrives_whole(notifier, &read).await;
    published.push(publishing_the_same_one_twice_is_allowed(notifier, &read).await);
    published
}

/// Runs each check of the notifier suite as a test of its own, on a [`Subject`] and its `read`
/// made anew for each by the expression given (evaluated in an async test, so it may `.await`).
///
/// [`Subject`]: crate::conformance::Subject
#[macro_export]
macro_rules! notifier_conformance_tests {
    ($subject:expr) => {
        $crate::notifier_conformance_tests!(@checks $subject;
            each_kind_is_published_and_arrives_whole,
            publishing_the_same_one_twice_is_allowed,
        );
    };
    (@checks $subject:expr; $($check:ident,)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (subject, read): (
                    $crate::conformance::Subject<dyn $crate::ports::Notifier>,
                    _,
                ) = $subject;
                $crate::conformance::notifier::$check(&*subject.adapter, read).await;
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_have_fresh_request_ids_and_the_fields_of_their_kind() {
        let a = sample(EventKind::InferenceCompleted, "t");
        let b = sample(EventKind::InferenceCompleted, "t");
        assert_ne!(a.request_id, b.request_id);
        assert_ne!(a.event_id, b.event_id);
        assert!(a.output_location.is_some() && a.reason.is_none());
        let f = sample(EventKind::InferenceFailed, "t");
        assert!(f.failure_location.is_some() && f.reason.is_some());
        let r = sample(EventKind::RequestRejected, "t");
        assert_eq!(r.attempts, 0);
        assert!(r.request_id.len() <= 64, "{}", r.request_id);
        assert!(
            r.request_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        );
    }
}
