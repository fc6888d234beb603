//! Webhook delivery of notifications: HTTP POST of the notification JSON, retried with
//! jittered exponential backoff, from a background task so a slow receiver never stalls a worker.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;

use crate::contract::Notification;

/// Queue of notifications waiting for the webhook.
#[derive(Clone)]
pub struct Webhook {
    tx: mpsc::Sender<Notification>,
}

impl Webhook {
    /// Starts delivering to `url`; at most `capacity` notifications wait in memory.
    pub fn start(url: String, capacity: usize) -> Webhook {
        let (tx, mut rx) = mpsc::channel::<Notification>(capacity.max(1));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                let send = || async {
                    let resp = client
                        .post(&url)
                        .header("X-Sealbox-Event-Id", &n.event_id)
                        .json(&n)
                        .send()
                        .await?;
                    resp.error_for_status().map(|_| ())
                };
                let delivered = send
                    .retry(
                        ExponentialBuilder::default()
                            .with_min_delay(Duration::from_millis(200))
                            .with_max_delay(Duration::from_secs(10))
                            .with_max_times(6)
                            .with_jitter(),
                    )
                    .await;
                if let Err(e) = delivered {
                    // The event log still holds it: the webhook is a convenience, not the record.
                    tracing::error!(event_id = %n.event_id, request_id = %n.request_id, error = %e, "webhook delivery failed");
                }
            }
        });
        Webhook { tx }
    }

    /// Queues a notification; when the queue is full the notification is logged and dropped.
    pub fn enqueue(&self, n: Notification) {
        if let Err(e) = self.tx.try_send(n) {
            tracing::warn!(error = %e, "webhook queue full; notification stays in the event log only");
        }
    }
}
