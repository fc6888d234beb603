//! sealbox ingest: turns an inbox event into a job, or into a rejection document that names the
//! reason. The handler is a plain async function over ports; [`poller`] runs it from a queue.

pub mod poller;

use std::sync::Arc;

use sealbox_authz::Verifier;
use sealbox_core::contract::{
    CONTRACT_VERSION, InboxEvent, Input, InputRef, JobMessage, MAX_REQUEST_OBJECT_BYTES,
    OutcomeDocument, OutcomeKind, Reason, RequestObject, Split, Violation,
};
use sealbox_core::layout::{is_valid_buyer, parse_request_key};
use sealbox_core::outcome::{Outcomes, ResultInfo};
use sealbox_core::ports::{JobQueue, Notifier, ObjectStore, OutgoingMessage};
use time::OffsetDateTime;

/// Why an event could not be handled now; it stays on its queue and comes back.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Storage, queue or notifier trouble: retry later.
    #[error("transient failure: {0}")]
    Transient(#[from] sealbox_core::Error),
}

/// Settings of the ingest handler.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Inbox bucket.
    pub inbox: String,
    /// Outbox bucket.
    pub outbox: String,
    /// Endpoint payload limit: unsplit inputs larger than this are rejected before any call.
    pub payload_limit: u64,
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    /// A job was enqueued.
    Accepted(Box<JobMessage>),
    /// A rejection document was written (or was already there).
    Rejected {
        /// Request id (or object name).
        request_id: String,
        /// Why.
        reason: Reason,
    },
    /// The request id already has an outcome; this copy changes nothing.
    AlreadyAnswered,
    /// Not a request object, or gone before it was read.
    Ignored(&'static str),
}

/// The ingest handler and the ports it needs.
pub struct Ingest {
    store: Arc<dyn ObjectStore>,
    jobs: Arc<dyn JobQueue>,
    notifier: Arc<dyn Notifier>,
    verifier: Arc<Verifier>,
    config: IngestConfig,
}

enum Decision {
    Accept(Box<JobMessage>),
    Reject {
        buyer: String,
        name: String,
        key: String,
        received_at: OffsetDateTime,
        violation: Violation,
    },
    Ignore(&'static str),
}

impl Ingest {
    /// Wires the handler.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        jobs: Arc<dyn JobQueue>,
        notifier: Arc<dyn Notifier>,
        verifier: Arc<Verifier>,
        config: IngestConfig,
    ) -> Self {
        Ingest {
            store,
            jobs,
            notifier,
            verifier,
            config,
        }
    }

    /// Handles a batch of events: decides each, sends the accepted jobs in one batch, and
    /// writes the rejections. Results are in the order of `events`.
    pub async fn handle_batch(
        &self,
        events: &[InboxEvent],
    ) -> Vec<Result<IngestOutcome, IngestError>> {
        let mut decisions = Vec::with_capacity(events.len());
        for ev in events {
            decisions.push(self.decide(ev).await);
        }
        let jobs: Vec<OutgoingMessage> = decisions
            .iter()
            .filter_map(|d| match d {
                Ok(Decision::Accept(job)) => {
                    serde_json::to_string(job).ok().map(OutgoingMessage::new)
                }
                _ => None,
            })
            .collect();
        let sent = if jobs.is_empty() {
            Ok(())
        } else {
            self.jobs.send_batch(&jobs).await.map(|_| ())
        };
        let mut out = Vec::with_capacity(decisions.len());
        for d in decisions {
            out.push(match d {
                Err(e) => Err(e),
                Ok(Decision::Ignore(why)) => Ok(IngestOutcome::Ignored(why)),
                Ok(Decision::Accept(job)) => match &sent {
                    Ok(()) => {
                        tracing::info!(buyer = %job.buyer, request_id = %job.request_id, "accepted");
                        Ok(IngestOutcome::Accepted(job))
                    }
                    Err(e) => Err(IngestError::Transient(sealbox_core::Error::Task(format!(
                        "sending jobs: {e}"
                    )))),
                },
                Ok(Decision::Reject {
                    buyer,
                    name,
                    key,
                    received_at,
                    violation,
                }) => self.reject(&buyer, &name, &key, received_at, &violation).await,
            });
        }
        out
    }

    /// Handles one event.
    pub async fn handle(&self, event: &InboxEvent) -> Result<IngestOutcome, IngestError> {
        self.handle_batch(std::slice::from_ref(event))
            .await
            .pop()
            .unwrap_or(Ok(IngestOutcome::Ignored("empty batch")))
    }

    async fn decide(&self, ev: &InboxEvent) -> Result<Decision, IngestError> {
        if ev.bucket != self.config.inbox {
            return Ok(Decision::Ignore("not the inbox bucket"));
        }
        let Some(rk) = parse_request_key(&ev.key) else {
            return Ok(Decision::Ignore("not a request object key"));
        };
        let reject = |violation: Violation| {
            Ok(Decision::Reject {
                buyer: rk.buyer.to_owned(),
                name: rk.name.to_owned(),
                key: ev.key.clone(),
                received_at: ev.event_time,
                violation,
            })
        };
        if !is_valid_buyer(rk.buyer) {
            return reject(Violation::new(
                Reason::InvalidBuyer,
                "key",
                "the buyer prefix must be 1-64 of [A-Za-z0-9._-]",
            ));
        }
        let (meta, body) = match self
            .store
            .get(&self.config.inbox, &ev.key, MAX_REQUEST_OBJECT_BYTES)
            .await
        {
            Ok(got) => got,
            Err(sealbox_core::Error::NotFound { .. }) => {
                return Ok(Decision::Ignore("request object deleted before ingest"));
            }
            Err(sealbox_core::Error::TooLarge { size, limit, .. }) => {
                return reject(Violation::new(
                    Reason::RequestTooLarge,
                    "request",
                    format!("is {size} bytes; must be at most {limit}"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let request = match RequestObject::parse(&body).and_then(|r| r.validate(rk.buyer, rk.name))
        {
            Ok(r) => r,
            Err(v) => return reject(v),
        };
        // Authorize before looking at anything the request points to.
        if let Err(r) = self.verifier.verify(&request.token, rk.buyer) {
            return reject(Violation::new(r.reason, "token", r.detail));
        }
        let input = match &request.input {
            Input::Inline(_) => InputRef::Inline,
            Input::Object(key) => match self.store.head(&self.config.inbox, key).await? {
                None => {
                    return reject(Violation::new(
                        Reason::InputNotFound,
                        "input.s3_key",
                        format!("no object at {key}"),
                    ));
                }
                Some(m) if request.split == Split::None && m.size > self.config.payload_limit => {
                    return reject(Violation::new(
                        Reason::InputTooLarge,
                        "input.s3_key",
                        format!(
                            "is {} bytes, over the endpoint limit of {}; use split: line",
                            m.size, self.config.payload_limit
                        ),
                    ));
                }
                Some(_) => InputRef::Object { key: key.clone() },
            },
        };
        let now = OffsetDateTime::now_utc();
        Ok(Decision::Accept(Box::new(JobMessage {
            version: CONTRACT_VERSION,
            buyer: rk.buyer.to_owned(),
            request_id: request.request_id,
            request_key: ev.key.clone(),
            request_etag: meta.etag,
            input,
            content_type: request.content_type,
            accept: request.accept,
            custom_attributes: request.custom_attributes,
            split: request.split,
            received_at: ev.event_time,
            accepted_at: now,
            deadline: ev.event_time + time::Duration::seconds(i64::from(request.ttl_seconds)),
        })))
    }

    async fn reject(
        &self,
        buyer: &str,
        name: &str,
        key: &str,
        received_at: OffsetDateTime,
        violation: &Violation,
    ) -> Result<IngestOutcome, IngestError> {
        let outcomes = Outcomes {
            store: self.store.as_ref(),
            outbox: &self.config.outbox,
            notifier: self.notifier.as_ref(),
        };
        // A bad copy of a request that already has an outcome must not add a second one.
        let probe = ResultInfo {
            buyer,
            request_id: name,
            content_type: "application/octet-stream",
            received_at,
            attempts: 0,
        };
        if let Some(existing) = outcomes.existing(&probe).await?
            && existing.reason.is_none_or(|r| r != violation.reason)
        {
            tracing::info!(buyer, request_id = name, reason = %violation.reason, "request id already answered; copy ignored");
            return Ok(IngestOutcome::AlreadyAnswered);
        }
        let mut doc = OutcomeDocument::new(OutcomeKind::Rejected, buyer, name, key, violation);
        doc.received_at = received_at;
        outcomes.settle_document(&doc).await?;
        tracing::info!(buyer, request_id = name, reason = %violation.reason, field = %violation.field, detail = %violation.rule, "rejected");
        Ok(IngestOutcome::Rejected {
            request_id: name.to_owned(),
            reason: violation.reason,
        })
    }
}
