//! Runs the worker handler from the jobs queue with bounded concurrency: receives only as many
//! messages as it has free slots, keeps a long job's message invisible while it runs, deletes
//! finished messages in batches, and backs off retryable failures with jitter.

use std::sync::Arc;
use std::time::Duration;

use sealbox_core::ports::{JobQueue, ReceiveOptions, ReceivedMessage};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::{JobOutcome, JobReport, Worker, WorkerError};

/// How the worker poller behaves.
#[derive(Debug, Clone, Copy)]
pub struct PollerConfig {
    /// Jobs in progress at once (reading, invoking, writing); the endpoint's own cap is
    /// [`crate::WorkerConfig::max_concurrent_invocations`].
    pub concurrency: usize,
    /// Long-poll wait.
    pub wait: Duration,
    /// Visibility timeout; a running job's message is extended every half of it.
    pub visibility_timeout: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            concurrency: 16,
            wait: Duration::from_millis(500),
            visibility_timeout: Duration::from_secs(30),
        }
    }
}

/// Delay before the `receive_count`-th retry: exponential with jitter, capped.
pub fn retry_delay(receive_count: u32) -> Duration {
    sealbox_core::retry::redelivery_delay(
        receive_count,
        Duration::from_secs(1),
        Duration::from_secs(120),
    )
}

/// Runs jobs until `shutdown` turns true, then waits for the jobs in flight.
///
/// Up to `concurrency` jobs run at once, and up to as many more wait in hand, received ahead:
/// a slot that frees up starts its next job at once instead of waiting for a receive.
pub async fn run(
    worker: Arc<Worker>,
    jobs: Arc<dyn JobQueue>,
    config: PollerConfig,
    mut shutdown: watch::Receiver<bool>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
) {
    let concurrency = config.concurrency.max(1);
    // Receive ten at a time: with ten more places than slots, taking ten places never starves
    // a slot, and a batch costs the queue one operation instead of ten.
    let in_hand = concurrency + 10;
    let held = Arc::new(Semaphore::new(in_hand));
    let running = Arc::new(Semaphore::new(concurrency));
    let (done_tx, done_rx) = mpsc::unbounded_channel::<String>();
    let deleter = tokio::spawn(delete_in_batches(jobs.clone(), done_rx));
    while !*shutdown.borrow() {
        let mut places = tokio::select! {
            p = held.clone().acquire_many_owned(10) => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let opts = ReceiveOptions {
            max_messages: 10,
            wait: config.wait,
            visibility_timeout: config.visibility_timeout,
        };
        let received = tokio::select! {
            r = jobs.receive(opts) => r,
            _ = shutdown.changed() => break,
        };
        let messages = match received {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "receiving jobs failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for message in messages {
            let Some(permit) = places.split(1) else { break };
            let (worker, jobs, done, observer, running) = (
                worker.clone(),
                jobs.clone(),
                done_tx.clone(),
                observer.clone(),
                running.clone(),
            );
            tokio::spawn(async move {
                let visibility = config.visibility_timeout;
                run_one(
                    &worker,
                    jobs.as_ref(),
                    &running,
                    message,
                    visibility,
                    &done,
                    observer,
                )
                .await;
                drop(permit);
            });
        }
        // Unused places drop here and free up.
    }
    // Drain: every place back means every job in hand has finished.
    let _ = held.acquire_many(in_hand as u32).await;
    drop(done_tx);
    let _ = deleter.await;
}

async fn run_one(
    worker: &Worker,
    jobs: &dyn JobQueue,
    running: &Semaphore,
    message: ReceivedMessage,
    visibility: Duration,
    done: &mpsc::UnboundedSender<String>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
) {
    let work = async {
        let _slot = running.acquire().await;
        worker.process(&message.body, message.receive_count).await
    };
    tokio::pin!(work);
    let mut heartbeat = tokio::time::interval(visibility / 2);
    heartbeat.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = heartbeat.tick() => {
                // Keep a waiting or long-running job's message from going to someone else.
                if let Err(e) = jobs.change_visibility(&message.receipt_handle, visibility).await {
                    tracing::warn!(error = %e, "could not extend the visibility of a running job");
                }
            }
        }
    };
    match result {
        Ok((outcome, report)) => {
            if let JobOutcome::Failed(n) = &outcome {
                tracing::debug!(request_id = %n.request_id, "job settled as failed");
            }
            if let Some(o) = observer {
                let _ = o.send(report);
            }
            let _ = done.send(message.receipt_handle);
        }
        Err(WorkerError::MalformedJob(e)) => {
            // Leave it: after enough receives the queue moves it to the dead-letter queue.
            tracing::error!(message_id = %message.message_id, error = %e, "malformed job message");
        }
        Err(WorkerError::Retryable(e)) => {
            // Wait at least as long as a throttling endpoint asked for.
            let asked = match &e {
                sealbox_core::Error::EndpointUnavailable { retry_after, .. } => *retry_after,
                _ => None,
            };
            let delay = retry_delay(message.receive_count).max(asked.unwrap_or_default());
            tracing::warn!(message_id = %message.message_id, receives = message.receive_count, error = %e, retry_in_ms = delay.as_millis() as u64, "job will retry");
            if let Err(e) = jobs.change_visibility(&message.receipt_handle, delay).await {
                tracing::warn!(error = %e, "could not back off; the visibility timeout will");
            }
        }
    }
}

async fn delete_in_batches(jobs: Arc<dyn JobQueue>, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        if let Err(e) = jobs.delete_batch(&batch).await {
            // Undeleted jobs come back; their outcome exists, so they are only announced again.
            tracing::error!(error = %e, count = batch.len(), "deleting finished jobs failed");
        }
        batch.clear();
    }
}
