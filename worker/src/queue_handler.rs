//! The worker over jobs-queue messages: the one place its retry rules live ([`disposition`]),
//! and the [`QueueHandler`] the Lambda function runs (the one-process poller runs
//! [`Worker::handle_message`] in its fair slots).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sealbox_core::fault::Whose;
use sealbox_core::ports::ReceivedMessage;
use sealbox_core::queue_handler::{Disposition, Handled, Metric, QueueHandler};

use sealbox_core::Error;

use crate::{BACKOFF, JobOutcome, JobReport, Worker, WorkerError};

/// What becomes of a job's message, its `receive_count`-th delivery having been handled with
/// `result` (see `sealbox_core::fault`).
pub fn disposition(
    result: &Result<(JobOutcome, JobReport), WorkerError>,
    receive_count: u32,
) -> Disposition {
    match result {
        Ok(_) => Disposition::Done,
        Err(WorkerError::MalformedJob(_)) => Disposition::DeadLetter(BACKOFF.delay(receive_count)),
        Err(WorkerError::Transient(e)) if e.whose() == Whose::Ours => Disposition::Hold {
            otherwise: delay_after(e, receive_count),
        },
        Err(WorkerError::Transient(e)) => Disposition::RetryAfter(delay_after(e, receive_count)),
    }
}

/// The backoff, and at least as long as a throttling endpoint asked for.
fn delay_after(e: &Error, receive_count: u32) -> Duration {
    let asked = match e {
        Error::EndpointUnavailable { retry_after, .. } => *retry_after,
        _ => None,
    };
    BACKOFF.delay(receive_count).max(asked.unwrap_or_default())
}

/// What a settled job counts.
fn metrics(outcome: &JobOutcome, report: &JobReport) -> Vec<Metric> {
    let (name, n) = match outcome {
        JobOutcome::Completed(n) => ("Completed", n),
        JobOutcome::Failed(n) => ("Failed", n),
        JobOutcome::Superseded | JobOutcome::OwnedElsewhere(_) => return Vec::new(),
    };
    let mut metrics = vec![Metric::Count {
        name,
        dimension: None,
    }];
    if report.invocations > 0 {
        metrics.push(Metric::Latency {
            name: "InvokeLatency",
            took: report.invoke_time,
        });
    }
    metrics.push(Metric::Latency {
        name: "EndToEndLatency",
        took: Duration::try_from(n.completed_at - n.received_at).unwrap_or_default(),
    });
    metrics
}

impl Worker {
    /// Runs the job `m` carries, by `deadline` if there is one (past it the job is tried again
    /// later), and answers for its message; the job's report when it settled.
    pub async fn handle_message(
        &self,
        m: &ReceivedMessage,
        deadline: Option<tokio::time::Instant>,
    ) -> (Handled, Option<JobReport>) {
        let work = self.process(&m.body, m.receive_count);
        let result = match deadline {
            Some(at) => match tokio::time::timeout_at(at, work).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(message_id = %m.message_id, "the invocation's time ran out; the job will retry");
                    return (
                        Handled::plain(Disposition::RetryAfter(BACKOFF.delay(m.receive_count))),
                        None,
                    );
                }
            },
            None => work.await,
        };
        let d = disposition(&result, m.receive_count);
        match result {
            Ok((outcome, report)) => (
                Handled {
                    disposition: d,
                    metrics: metrics(&outcome, &report),
                },
                Some(report),
            ),
            Err(e) => {
                match &e {
                    WorkerError::MalformedJob(_) => {
                        tracing::error!(message_id = %m.message_id, receives = m.receive_count, error = %e, "malformed job message; left to the dead-letter queue")
                    }
                    WorkerError::Transient(_) => {
                        tracing::warn!(message_id = %m.message_id, receives = m.receive_count, error = %e, ?d, "the job will be tried again")
                    }
                }
                (Handled::plain(d), None)
            }
        }
    }
}

/// The worker as a handler of jobs-queue batches: the jobs of a batch run together (the
/// endpoint's cap is the worker's own `max_concurrent_invocations`).
pub struct JobsHandler {
    worker: Arc<Worker>,
}

impl JobsHandler {
    /// Runs `worker`'s jobs.
    pub fn new(worker: Arc<Worker>) -> JobsHandler {
        JobsHandler { worker }
    }
}

#[async_trait]
impl QueueHandler for JobsHandler {
    async fn handle(
        &self,
        messages: &[ReceivedMessage],
        deadline: Option<tokio::time::Instant>,
    ) -> Vec<Handled> {
        let mut running = tokio::task::JoinSet::new();
        for (i, m) in messages.iter().cloned().enumerate() {
            let worker = self.worker.clone();
            running.spawn(async move { (i, worker.handle_message(&m, deadline).await.0) });
        }
        // A job whose task panicked is given back at once, like any job not settled.
        let mut answers: Vec<Handled> = messages
            .iter()
            .map(|m| Handled::plain(Disposition::RetryAfter(BACKOFF.delay(m.receive_count))))
            .collect();
        while let Some(joined) = running.join_next().await {
            match joined {
                Ok((i, answer)) => {
                    if let Some(slot) = answers.get_mut(i) {
                        *slot = answer;
                    }
                }
                Err(e) => tracing::error!(error = %e, "a job task failed"),
            }
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use sealbox_core::Error;

    use super::*;

    #[test]
    fn our_outage_is_held_a_throttle_waits_as_asked_and_a_malformed_job_dead_letters() {
        let ours = Err(WorkerError::Transient(Error::storage("putting", "503")));
        assert!(matches!(disposition(&ours, 1), Disposition::Hold { .. }));
        let throttled = Err(WorkerError::Transient(Error::EndpointUnavailable {
            message: "throttled".into(),
            retry_after: Some(Duration::from_secs(300)),
        }));
        assert!(matches!(
            disposition(&throttled, 1),
            Disposition::RetryAfter(d) if d >= Duration::from_secs(300)
        ));
        let malformed = Err(WorkerError::MalformedJob("not json".into()));
        assert!(matches!(
            disposition(&malformed, 1),
            Disposition::DeadLetter(_)
        ));
    }
}
