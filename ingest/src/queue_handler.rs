//! Ingest over inbox-events messages: the one place its retry rules live ([`disposition`]), and
//! the [`QueueHandler`] the Lambda function and the one-process poller both run.

use async_trait::async_trait;
use sealbox_core::contract::InboxEvent;
use sealbox_core::fault::Whose;
use sealbox_core::ports::ReceivedMessage;
use sealbox_core::queue_handler::{Disposition, Handled, Metric, QueueHandler};

use crate::inbox_message::{self, InboxMessage};
use crate::{BACKOFF, Ingest, IngestError, IngestOutcome};

/// What becomes of an inbox event's message, its `receive_count`-th delivery having been
/// handled with `result` (see `sealbox_core::fault`).
pub fn disposition(result: &Result<IngestOutcome, IngestError>, receive_count: u32) -> Disposition {
    match result {
        Ok(_) => Disposition::Done,
        // Waiting for a refresh of the keys: the deferral's own wait.
        Err(IngestError::Deferred { retry_after }) => Disposition::RetryAfter(*retry_after),
        Err(IngestError::Transient(e)) if e.whose() == Whose::Ours => Disposition::Hold {
            otherwise: BACKOFF.delay(receive_count),
        },
        Err(IngestError::Transient(_)) => Disposition::RetryAfter(BACKOFF.delay(receive_count)),
    }
}

/// The disposition of a message nobody can read (not contract v1): left to the dead-letter
/// queue after the usual delays.
pub fn unreadable(receive_count: u32) -> Disposition {
    Disposition::DeadLetter(BACKOFF.delay(receive_count))
}

/// What one event's outcome counts.
fn metrics(outcome: &IngestOutcome) -> Option<Metric> {
    match outcome {
        IngestOutcome::Accepted(_) => Some(Metric::Count {
            name: "Accepted",
            dimension: None,
        }),
        IngestOutcome::Rejected { reason, .. } => Some(Metric::Count {
            name: "Rejected",
            dimension: Some(("Reason", reason.to_string())),
        }),
        IngestOutcome::OwnedElsewhere | IngestOutcome::Ignored(_) => None,
    }
}

#[async_trait]
impl QueueHandler for Ingest {
    /// Decodes every message and handles all their events as one batch (one send of jobs); a
    /// message is done when each of its events is (events are idempotent, so a message that
    /// comes back is handled again whole).
    async fn handle(
        &self,
        messages: &[ReceivedMessage],
        _deadline: Option<tokio::time::Instant>,
    ) -> Vec<Handled> {
        let decoded: Vec<Option<Vec<InboxEvent>>> = messages
            .iter()
            .map(|m| match inbox_message::decode(&m.body) {
                Ok(InboxMessage::Events(evs)) => Some(evs),
                Ok(InboxMessage::Test) => Some(Vec::new()),
                Err(e) => {
                    tracing::error!(message_id = %m.message_id, receives = m.receive_count, error = %e, "an unreadable inbox event; left to the dead-letter queue");
                    None
                }
            })
            .collect();
        let all: Vec<InboxEvent> = decoded.iter().flatten().flatten().cloned().collect();
        let mut results = self.handle_batch(&all).await.into_iter();
        let mut answers = Vec::with_capacity(messages.len());
        for (m, evs) in messages.iter().zip(decoded) {
            let Some(evs) = evs else {
                answers.push(Handled::plain(unreadable(m.receive_count)));
                continue;
            };
            let mut answer = Handled::plain(Disposition::Done);
            for ev in &evs {
                let result = results.next().unwrap_or_else(|| {
                    Err(IngestError::Transient(sealbox_core::Error::Task(
                        "ingest answered fewer results than events".into(),
                    )))
                });
                let d = disposition(&result, m.receive_count);
                match &result {
                    Ok(outcome) => answer.metrics.extend(metrics(outcome)),
                    Err(e) => {
                        tracing::warn!(message_id = %m.message_id, key = %ev.key, error = %e, ?d, "ingest will try the event again")
                    }
                }
                answer.disposition = answer.disposition.and(d);
            }
            answers.push(answer);
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sealbox_core::Error;

    use super::*;

    #[test]
    fn our_outage_is_held_a_deferral_waits_its_time_and_the_service_s_fault_retries() {
        let ours = Err(IngestError::Transient(Error::storage("putting", "503")));
        assert!(matches!(disposition(&ours, 1), Disposition::Hold { .. }));
        let deferred = Err(IngestError::Deferred {
            retry_after: Duration::from_secs(7),
        });
        assert_eq!(
            disposition(&deferred, 1),
            Disposition::RetryAfter(Duration::from_secs(7))
        );
        let service = Err(IngestError::Transient(Error::Task("a task failed".into())));
        assert!(matches!(
            disposition(&service, 3),
            Disposition::RetryAfter(_)
        ));
        assert_eq!(
            disposition(&Ok(IngestOutcome::OwnedElsewhere), 9),
            Disposition::Done
        );
        assert!(matches!(unreadable(1), Disposition::DeadLetter(_)));
    }
}
