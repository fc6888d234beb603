//! Long-running loops that receive messages from a queue and hand them to a handler: the
//! one-process way to run the pipeline (Lambda functions get their batches from the platform).

mod fair;
pub mod handoff;
pub mod inbox;
pub mod jobs;

pub use fair::{FairSlots, Slot};

use std::sync::Arc;
use std::time::Duration;

use sealbox_core::ports::{QueueConsumer, ReceiveOptions, ReceivedMessage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Waits for ten free places in `held`, then receives up to ten messages of `queue` into them;
/// `None` once `shutdown` turns true. A failed receive is logged (as receiving `what`) and tried
/// again after a pause. The places not taken by a message free up when the permit drops.
pub(crate) async fn receive_into_places(
    queue: &dyn QueueConsumer,
    held: &Arc<Semaphore>,
    opts: ReceiveOptions,
    shutdown: &mut watch::Receiver<bool>,
    what: &str,
) -> Option<(OwnedSemaphorePermit, Vec<ReceivedMessage>)> {
    while !*shutdown.borrow() {
        let places = tokio::select! {
            p = held.clone().acquire_many_owned(10) => p.ok()?,
            _ = shutdown.changed() => return None,
        };
        let received = tokio::select! {
            r = queue.receive(opts) => r,
            _ = shutdown.changed() => return None,
        };
        match received {
            Ok(messages) => return Some((places, messages)),
            Err(e) => {
                tracing::error!(error = %e, "receiving {what} failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    None
}

/// An inbox event nobody can read (not contract v1): nobody's to answer (`sealbox_core::fault`),
/// so it is given back after the usual delay until the queue moves it to the dead-letter queue,
/// where an operator sees it, as the Lambda function leaves it.
pub(crate) async fn leave_unreadable(
    queue: &dyn QueueConsumer,
    m: &ReceivedMessage,
    error: &(dyn std::fmt::Display + Sync),
) {
    let delay = sealbox_ingest::retry_delay(m.receive_count);
    tracing::error!(message_id = %m.message_id, %error, receives = m.receive_count, "an unreadable inbox event; left to the dead-letter queue");
    if let Err(e) = queue.change_visibility(&m.receipt_handle, delay).await {
        tracing::warn!(error = %e, "could not back off; the visibility timeout will");
    }
}
