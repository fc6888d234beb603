//! How a handler answers for the queue messages it is given, and what each way of running does
//! with the answer. A handler (ingest, the worker) decides one [`Disposition`] per message, from
//! [`crate::fault`]'s table; the runtimes carry it out: the Lambda batch runner
//! (`sealbox_aws::lambda::run_sqs_batch`) and the one-process poller (`sealbox_pollers`).

use std::time::Duration;

use async_trait::async_trait;

use crate::ports::ReceivedMessage;

/// What becomes of one message once its handler has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Handled (its outcome exists, or it needed none): delete it.
    Done,
    /// Failed for now, the service's fault or a wait the handler asked for: give it back after
    /// this delay. It spends a receive; too many move it to the dead-letter queue.
    RetryAfter(Duration),
    /// Nobody can handle it (not contract v1): give it back after this delay without deleting
    /// it, so that its receives run out and the queue's redrive policy moves it to the
    /// dead-letter queue, where an operator sees it.
    DeadLetter(Duration),
    /// Our own storage, queue or notifier failed; nothing is wrong with the message. A runtime
    /// that can wait keeps it (invisible) and hands it over again, spending no receive; one that
    /// cannot (a Lambda invocation ends) gives it back after `otherwise`.
    Hold {
        /// The delay of a runtime that cannot hold.
        otherwise: Duration,
    },
}

impl Disposition {
    /// The disposition of a message whose parts were disposed of as `self` and `other`: the
    /// message is done when each part is; a part to retry (the longest wait) outranks a part
    /// held, since the message comes back whole and every part is idempotent.
    pub fn and(self, other: Disposition) -> Disposition {
        use Disposition::*;
        match (self, other) {
            (DeadLetter(a), DeadLetter(b)) => DeadLetter(a.max(b)),
            (DeadLetter(d), _) | (_, DeadLetter(d)) => DeadLetter(d),
            (RetryAfter(a), RetryAfter(b)) => RetryAfter(a.max(b)),
            (RetryAfter(d), _) | (_, RetryAfter(d)) => RetryAfter(d),
            (Hold { otherwise: a }, Hold { otherwise: b }) => Hold {
                otherwise: a.max(b),
            },
            (h @ Hold { .. }, Done) | (Done, h @ Hold { .. }) => h,
            (Done, Done) => Done,
        }
    }
}

/// A metric one message's handling reports (the Lambda runner writes them as CloudWatch
/// Embedded Metric Format lines; the poller has no use for them).
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// One of something, optionally by a dimension (`("Reason", "token_expired")`).
    Count {
        /// Its name (`Accepted`, `Completed`).
        name: &'static str,
        /// A dimension beside `Function`.
        dimension: Option<(&'static str, String)>,
    },
    /// A duration.
    Latency {
        /// Its name (`InvokeLatency`).
        name: &'static str,
        /// The value.
        took: Duration,
    },
}

/// One message's answer: its disposition and what to count.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// What becomes of the message.
    pub disposition: Disposition,
    /// What to count.
    pub metrics: Vec<Metric>,
}

impl Handled {
    /// An answer with nothing to count.
    pub fn plain(disposition: Disposition) -> Handled {
        Handled {
            disposition,
            metrics: Vec::new(),
        }
    }
}

/// A handler of queue messages, as every way of running calls it.
#[async_trait]
pub trait QueueHandler: Send + Sync {
    /// Told once per receive of `message`, before it is handled (and handled again, while
    /// held): for handlers that count what is off the queue.
    fn received(&self, _message: &ReceivedMessage) {}

    /// Handles `messages` (one receive's worth or fewer), finishing by `deadline` where the
    /// runtime has one; one answer per message, in their order.
    async fn handle(
        &self,
        messages: &[ReceivedMessage],
        deadline: Option<tokio::time::Instant>,
    ) -> Vec<Handled>;
}

#[cfg(test)]
mod tests {
    use super::Disposition::*;
    use super::*;

    #[test]
    fn a_message_is_done_only_when_every_part_is_and_a_retry_outranks_a_hold() {
        let s = Duration::from_secs;
        assert_eq!(Done.and(Done), Done);
        assert_eq!(Done.and(Hold { otherwise: s(1) }), Hold { otherwise: s(1) });
        assert_eq!(
            Hold { otherwise: s(3) }.and(RetryAfter(s(2))),
            RetryAfter(s(2))
        );
        assert_eq!(RetryAfter(s(2)).and(RetryAfter(s(5))), RetryAfter(s(5)));
        assert_eq!(RetryAfter(s(9)).and(DeadLetter(s(1))), DeadLetter(s(1)));
    }
}
