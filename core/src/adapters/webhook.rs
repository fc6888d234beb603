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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{HeaderMap, StatusCode};
    use time::OffsetDateTime;
    use tokio::sync::mpsc;

    use super::*;
    use crate::contract::{EventKind, event_id};

    #[tokio::test]
    async fn a_failing_webhook_is_retried_until_it_accepts_the_notification() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (got_tx, mut got) = mpsc::unbounded_channel::<(String, Notification)>();
        let c = calls.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: HeaderMap, axum::Json(n): axum::Json<Notification>| {
                    let (c, got_tx) = (c.clone(), got_tx.clone());
                    async move {
                        if c.fetch_add(1, Ordering::SeqCst) < 2 {
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let id = headers
                            .get("x-sealbox-event-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let _ = got_tx.send((id, n));
                        StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let hook = Webhook::start(format!("http://{addr}/hook"), 10);
        let now = OffsetDateTime::now_utc();
        let n = Notification {
            version: 1,
            event_id: event_id("b", "r"),
            event: EventKind::TestNotification,
            buyer: "b".into(),
            request_id: "r".into(),
            output_location: None,
            failure_location: None,
            content_type: "application/json".into(),
            bytes: 0,
            received_at: now,
            completed_at: now,
            attempts: 0,
            reason: None,
        };
        hook.enqueue(n.clone());
        let (id, delivered) = tokio::time::timeout(Duration::from_secs(20), got.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(id, n.event_id);
        assert_eq!(delivered, n);
    }
}
