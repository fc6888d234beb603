//! Runs the worker handler from the jobs queue with bounded concurrency: receives only as many
//! messages as it has free slots, keeps a long job's message invisible while it runs, deletes
//! finished messages in batches, and backs off retryable failures with jitter.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use sealbox_core::ports::{JobQueue, ReceiveOptions, ReceivedMessage};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::{JobOutcome, JobReport, Worker, WorkerError};

/// How the worker poller behaves.
#[derive(Debug, Clone, Copy)]
pub struct PollerConfig {
    /// Jobs running at once: saturates the endpoint without throttling it into failure.
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

/// Delay before the `receive_count`-th retry of a job: exponential with jitter, capped.
pub fn retry_delay(receive_count: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(120))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(receive_count.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(120))
}

/// Runs jobs until `shutdown` turns true, then waits for the jobs in flight.
pub async fn run(
    worker: Arc<Worker>,
    jobs: Arc<dyn JobQueue>,
    config: PollerConfig,
    mut shutdown: watch::Receiver<bool>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
) {
    let concurrency = config.concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let (done_tx, done_rx) = mpsc::unbounded_channel::<String>();
    let deleter = tokio::spawn(delete_in_batches(jobs.clone(), done_rx));
    while !*shutdown.borrow() {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let mut permits = vec![first];
        while permits.len() < 10 {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let opts = ReceiveOptions {
            max_messages: permits.len(),
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
        for (message, permit) in messages.into_iter().zip(permits.drain(..)) {
            let (worker, jobs, done, observer) = (
                worker.clone(),
                jobs.clone(),
                done_tx.clone(),
                observer.clone(),
            );
            tokio::spawn(async move {
                run_one(
                    &worker,
                    jobs.as_ref(),
                    message,
                    config.visibility_timeout,
                    &done,
                    observer,
                )
                .await;
                drop(permit);
            });
        }
        // Unused permits drop here and free their slots.
    }
    // Drain: every slot back means every job in flight has finished.
    let _ = slots.acquire_many(concurrency as u32).await;
    drop(done_tx);
    let _ = deleter.await;
}

async fn run_one(
    worker: &Worker,
    jobs: &dyn JobQueue,
    message: ReceivedMessage,
    visibility: Duration,
    done: &mpsc::UnboundedSender<String>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
) {
    let work = worker.process(&message.body, message.receive_count);
    tokio::pin!(work);
    let mut heartbeat = tokio::time::interval(visibility / 2);
    heartbeat.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = heartbeat.tick() => {
                // Keep a long invocation's message from being delivered to someone else.
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
            let delay = retry_delay(message.receive_count);
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
