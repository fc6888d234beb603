//! The one-process way to run the handlers (`sealbox up`, on the embedded backend or on AWS):
//! [`run`] receives messages from any queue adapter into a bounded number of places, hands
//! them to a [`QueueHandler`], keeps them invisible while they are handled, and carries out its
//! dispositions: deletes in batches, gives back after a delay, or holds through an outage of
//! our own without spending a receive. The inbox, jobs and hand-off paths only configure it.
//! (Lambda functions get their batches from the platform: `sealbox_aws::lambda::run_sqs_batch`.)

mod fair;
pub mod handoff;
pub mod inbox;
pub mod jobs;

pub use fair::{FairSlots, Slot};

use std::sync::Arc;
use std::time::Duration;

use sealbox_core::ports::{QueueConsumer, ReceiveOptions, ReceivedMessage};
use sealbox_core::queue_handler::{Disposition, QueueHandler};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

/// Most messages one receive or delete call of a queue service takes (SQS: ten).
const BATCH: usize = 10;

/// How a poller receives and settles: the same for every path.
#[derive(Debug, Clone, Copy)]
pub struct PollerConfig {
    /// Long-poll wait.
    pub wait: Duration,
    /// Visibility timeout of a received message; extended every half of it while it is handled
    /// or held.
    pub visibility_timeout: Duration,
    /// After a receive that did not fill its batch, how long to let messages gather before the
    /// next one (zero: receive again at once).
    pub receive_linger: Duration,
    /// How long a handled message may wait for others to share its delete call (zero: delete
    /// whatever is handled at once).
    pub delete_linger: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            wait: Duration::from_millis(500),
            visibility_timeout: Duration::from_secs(30),
            receive_linger: Duration::ZERO,
            delete_linger: Duration::ZERO,
        }
    }
}

/// How a path takes its messages in.
#[derive(Debug, Clone, Copy)]
pub struct Intake {
    /// Messages in hand at most (received and not yet settled); a receive of ten waits for ten
    /// free places.
    pub in_hand: usize,
    /// Each message handed over on its own, settled when it finishes (jobs), rather than a
    /// receive's messages in one call (ingest: one send of jobs for all).
    pub one_by_one: bool,
}

/// Receives from `queue` and hands the messages to `handler` until `shutdown` turns true, then
/// finishes the messages in hand (a held one is given back instead) and deletes the done.
pub async fn run(
    queue: Arc<dyn QueueConsumer>,
    handler: Arc<dyn QueueHandler>,
    intake: Intake,
    config: PollerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let in_hand = intake.in_hand.max(BATCH);
    let held = Arc::new(Semaphore::new(in_hand));
    let (done, done_rx) = mpsc::unbounded_channel::<String>();
    let deleter = tokio::spawn(delete_in_batches(
        queue.clone(),
        done_rx,
        config.delete_linger,
    ));
    let opts = ReceiveOptions {
        max_messages: BATCH,
        wait: config.wait,
        visibility_timeout: config.visibility_timeout,
    };
    while let Some((mut places, messages)) =
        receive_into_places(queue.as_ref(), &held, opts, &mut shutdown).await
    {
        let partial = messages.len() < BATCH;
        for m in &messages {
            handler.received(m);
        }
        let groups: Vec<Vec<ReceivedMessage>> = if intake.one_by_one {
            messages.into_iter().map(|m| vec![m]).collect()
        } else if messages.is_empty() {
            Vec::new()
        } else {
            vec![messages]
        };
        for group in groups {
            let Some(permit) = places.split(group.len()) else {
                break;
            };
            let (queue, handler, done) = (queue.clone(), handler.clone(), done.clone());
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let visibility = config.visibility_timeout;
                settle(&*queue, &*handler, group, visibility, &done, shutdown).await;
                drop(permit);
            });
        }
        // Unused places drop here and free up.
        drop(places);
        if partial && !config.receive_linger.is_zero() {
            // Light load: let the next messages gather so that one receive takes several.
            tokio::select! {
                _ = tokio::time::sleep(config.receive_linger) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    // Drain: every place back means every message in hand is settled.
    let _ = held.acquire_many(in_hand as u32).await;
    drop(done);
    let _ = deleter.await;
}

/// Waits for ten free places in `held`, then receives up to ten messages of `queue` into them;
/// `None` once `shutdown` turns true. A failed receive is logged and tried again after a pause.
/// The places not taken by a message free up when the permit drops.
async fn receive_into_places(
    queue: &dyn QueueConsumer,
    held: &Arc<Semaphore>,
    opts: ReceiveOptions,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(OwnedSemaphorePermit, Vec<ReceivedMessage>)> {
    while !*shutdown.borrow() {
        let places = tokio::select! {
            p = held.clone().acquire_many_owned(BATCH as u32) => p.ok()?,
            _ = shutdown.changed() => return None,
        };
        let received = tokio::select! {
            r = queue.receive(opts) => r,
            _ = shutdown.changed() => return None,
        };
        match received {
            Ok(messages) => return Some((places, messages)),
            Err(e) => {
                tracing::error!(error = %e, "receiving messages failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    None
}

/// Hands `pending` to the handler and carries out its answers; what it holds is handed over
/// again after a pause, kept invisible, until it is settled otherwise or shutdown comes.
async fn settle(
    queue: &dyn QueueConsumer,
    handler: &dyn QueueHandler,
    mut pending: Vec<ReceivedMessage>,
    visibility: Duration,
    done: &mpsc::UnboundedSender<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut attempt = 0u32;
    loop {
        let answers =
            keep_invisible(queue, &pending, visibility, handler.handle(&pending, None)).await;
        let mut held = Vec::new();
        for (i, m) in pending.into_iter().enumerate() {
            // A handler that answered too few leaves the rest to come back.
            let d = answers
                .get(i)
                .map_or(Disposition::RetryAfter(Duration::ZERO), |a| a.disposition);
            let delay = match d {
                Disposition::Done => {
                    let _ = done.send(m.receipt_handle);
                    continue;
                }
                Disposition::Hold { .. } if !*shutdown.borrow() => {
                    held.push(m);
                    continue;
                }
                Disposition::RetryAfter(d)
                | Disposition::DeadLetter(d)
                | Disposition::Hold { otherwise: d } => d,
            };
            if let Err(e) = queue.change_visibility(&m.receipt_handle, delay).await {
                tracing::warn!(message_id = %m.message_id, error = %e, "could not back off; the visibility timeout will");
            }
        }
        if held.is_empty() {
            return;
        }
        // Our own storage or queue failing says nothing about the messages: hold them and try
        // again, so an outage spends none of their receives and dead-letters nothing.
        attempt += 1;
        let delay = sealbox_core::retry::HOLD.delay(attempt);
        tracing::warn!(
            count = held.len(),
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            "our own storage or queue failed; holding without spending a receive"
        );
        let pause = async {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
        };
        keep_invisible(queue, &held, visibility, pause).await;
        pending = held;
    }
}

/// Runs `work`, extending the visibility of `messages` every half of `visibility` meanwhile,
/// so that nobody else receives them.
async fn keep_invisible<T>(
    queue: &dyn QueueConsumer,
    messages: &[ReceivedMessage],
    visibility: Duration,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    // The first beat half a timeout from now: an interval's immediate first tick still waits
    // for the timer's next millisecond, which cost every message about 1 ms on its way.
    let every = visibility / 2;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = heartbeat.tick() => {
                for m in messages {
                    if let Err(e) = queue.change_visibility(&m.receipt_handle, visibility).await {
                        tracing::warn!(message_id = %m.message_id, error = %e, "could not extend the visibility of a message in hand");
                    }
                }
            }
        }
    }
}

/// Deletes the messages whose receipt handles arrive, in batches (waiting up to `linger` for
/// a batch to fill).
async fn delete_in_batches(
    queue: Arc<dyn QueueConsumer>,
    mut rx: mpsc::UnboundedReceiver<String>,
    linger: Duration,
) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        let until = tokio::time::Instant::now() + linger;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(until, rx.recv_many(&mut batch, 64)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        if let Err(e) = queue.delete_batch(&batch).await {
            // Undeleted messages come back; handlers are idempotent, so they are only redone.
            tracing::error!(error = %e, count = batch.len(), "deleting handled messages failed");
        }
        batch.clear();
    }
}
