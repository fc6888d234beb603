//! Outcomes: exactly one result, failure or rejection per (buyer, request_id), and the
//! notification that announces it (same `event_id` on a repeat).
//!
//! One claim per request decides who may write the outcome: made in the [`ClaimStore`]
//! (`<buyer>/claims/<request_id>.json` in the outbox with [`crate::object_claims`]) before any
//! outcome is written. The attempt that created it owns the request (a job and its redeliveries, or ingest
//! rejecting one version of the request object); every other attempt only announces the owner's
//! outcome once it exists, or leaves the request to the owner. An ingest claim carries its whole
//! rejection document, so anyone who finds it without the document can finish writing it.

use bytes::Bytes;
use time::OffsetDateTime;

use crate::contract::{
    CONTRACT_VERSION, ClaimDocument, EventKind, Notification, OutcomeDocument, OutcomeKind, Usage,
    event_id,
};
use crate::error::{Error, Result};
use crate::layout::{failed_key, location, rejected_key, result_key};
use crate::ports::claim_store::ClaimStore;
use crate::ports::notifier::Notifier;
use crate::ports::object_store::{ObjectMeta, ObjectStore, PutMode};

/// Largest outcome document read back.
const MAX_DOCUMENT_BYTES: u64 = 64 * 1024;

pub use crate::ports::claim_store::Claim;

/// Where outcomes go and how they are announced.
#[derive(Clone, Copy)]
pub struct Outcomes<'a> {
    /// The outbox.
    pub store: &'a dyn ObjectStore,
    /// Its bucket name.
    pub outbox: &'a str,
    /// Where notifications go.
    pub notifier: &'a dyn Notifier,
    /// Who owns each request.
    pub claims: &'a dyn ClaimStore,
}

/// What a result notification needs beyond the object itself.
#[derive(Debug, Clone)]
pub struct ResultInfo<'a> {
    /// Buyer id.
    pub buyer: &'a str,
    /// Request id.
    pub request_id: &'a str,
    /// MIME type of the result.
    pub content_type: &'a str,
    /// When the request landed.
    pub received_at: OffsetDateTime,
    /// Deliveries it took.
    pub attempts: u32,
}

/// The notification of a result, with the usage its metadata carries.
fn result_notification(outbox: &str, info: &ResultInfo<'_>, meta: &ObjectMeta) -> Notification {
    // A value that is not a usage (only a hand-edited object has one) is announced without:
    // the result is the outcome, and `buyer usage` names such results.
    let usage = Usage::from_metadata(&meta.metadata).ok().flatten();
    Notification {
        version: CONTRACT_VERSION,
        event_id: event_id(info.buyer, info.request_id),
        event: EventKind::InferenceCompleted,
        buyer: info.buyer.to_owned(),
        request_id: info.request_id.to_owned(),
        output_location: Some(location(outbox, &meta.key)),
        failure_location: None,
        content_type: info.content_type.to_owned(),
        bytes: meta.size,
        received_at: info.received_at,
        completed_at: meta.last_modified,
        attempts: info.attempts,
        reason: None,
        usage,
    }
}

fn document_notification(
    outbox: &str,
    key: &str,
    doc: &OutcomeDocument,
    bytes: u64,
) -> Notification {
    let event = match doc.outcome {
        OutcomeKind::Rejected => EventKind::RequestRejected,
        OutcomeKind::Failed => EventKind::InferenceFailed,
    };
    Notification {
        version: CONTRACT_VERSION,
        event_id: event_id(&doc.buyer, &doc.request_id),
        event,
        buyer: doc.buyer.clone(),
        request_id: doc.request_id.clone(),
        output_location: None,
        failure_location: Some(location(outbox, key)),
        content_type: "application/json".into(),
        bytes,
        received_at: doc.received_at,
        completed_at: doc.decided_at,
        attempts: doc.attempts,
        reason: Some(doc.reason),
        usage: doc.usage,
    }
}

impl Outcomes<'_> {
    /// Claims the request for `claim.owner`, unless someone else holds the claim.
    pub async fn claim(&self, claim: &ClaimDocument) -> Result<Claim> {
        self.claims.claim(claim).await
    }

    /// The claim of (buyer, request_id), if there is one.
    pub async fn read_claim(&self, buyer: &str, request_id: &str) -> Result<Option<ClaimDocument>> {
        self.claims.read(buyer, request_id).await
    }

    /// For an attempt that does not own the request: announces the owner's outcome again if
    /// it exists (finishing an ingest rejection whose owner stopped before writing it), or
    /// returns `None` while the owner is still at work.
    pub async fn follow(
        &self,
        held: &ClaimDocument,
        result: &ResultInfo<'_>,
    ) -> Result<Option<Notification>> {
        if let Some(rejection) = &held.rejection {
            return self.settle_document(rejection).await.map(Some);
        }
        match self.existing(result).await? {
            Some(n) => {
                self.notifier.publish(&n).await?;
                Ok(Some(n))
            }
            None => Ok(None),
        }
    }

    /// The notification of an outcome already written for (buyer, request_id), if any.
    /// `result` describes a result object, should that be the outcome found.
    pub async fn existing(&self, result: &ResultInfo<'_>) -> Result<Option<Notification>> {
        let (buyer, id) = (result.buyer, result.request_id);
        if let Some(meta) = self.store.head(self.outbox, &result_key(buyer, id)).await? {
            return Ok(Some(result_notification(self.outbox, result, &meta)));
        }
        for key in [failed_key(buyer, id), rejected_key(buyer, id)] {
            if let Some(n) = self.read_document(&key).await? {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    async fn read_document(&self, key: &str) -> Result<Option<Notification>> {
        match self.store.get(self.outbox, key, MAX_DOCUMENT_BYTES).await {
            Ok((meta, body)) => {
                let doc: OutcomeDocument = serde_json::from_slice(&body)
                    .map_err(|e| Error::json(format!("reading outcome document {key}"), e))?;
                Ok(Some(document_notification(
                    self.outbox,
                    key,
                    &doc,
                    meta.size,
                )))
            }
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a failure or rejection document unless one exists, then announces whichever
    /// document is there.
    pub async fn settle_document(&self, doc: &OutcomeDocument) -> Result<Notification> {
        let key = match doc.outcome {
            OutcomeKind::Rejected => rejected_key(&doc.buyer, &doc.request_id),
            OutcomeKind::Failed => failed_key(&doc.buyer, &doc.request_id),
        };
        let body =
            serde_json::to_vec_pretty(doc).map_err(|e| Error::json("encoding a document", e))?;
        let n = match self
            .store
            .put(self.outbox, &key, Bytes::from(body), PutMode::CreateNew)
            .await
        {
            Ok(meta) => document_notification(self.outbox, &key, doc, meta.size),
            Err(Error::AlreadyExists { .. }) => match self.read_document(&key).await? {
                Some(n) => n,
                None => return Err(Error::Task(format!("{key} vanished after a conflict"))),
            },
            Err(e) => return Err(e),
        };
        self.notifier.publish(&n).await?;
        Ok(n)
    }

    /// Writes a result unless one exists, then announces whichever result is there, with the
    /// usage its metadata carries (the put's answer, or the head of the one found).
    pub async fn settle_result(
        &self,
        info: &ResultInfo<'_>,
        meta: Result<ObjectMeta>,
    ) -> Result<Notification> {
        let meta = match meta {
            Ok(meta) => meta,
            Err(Error::AlreadyExists { .. }) => {
                let key = result_key(info.buyer, info.request_id);
                self.store
                    .head(self.outbox, &key)
                    .await?
                    .ok_or_else(|| Error::Task(format!("{key} vanished after a conflict")))?
            }
            Err(e) => return Err(e),
        };
        let n = result_notification(self.outbox, info, &meta);
        self.notifier.publish(&n).await?;
        Ok(n)
    }
}
