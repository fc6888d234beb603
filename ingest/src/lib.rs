//! sealbox ingest: turns an inbox event into a job, or into a rejection document that names the
//! reason. The handler is a plain async function over ports; the embedded pollers and the Lambda
//! function run it from a queue, decoding what arrives with [`inbox_message`].

pub mod inbox_message;
pub mod queue_handler;

use std::sync::Arc;

use futures_util::future::join_all;

use sealbox_core::contract::{
    CONTRACT_VERSION, ClaimDocument, InboxEvent, Input, InputRef, JobMessage,
    MAX_CARRYING_JOB_BYTES, MAX_REQUEST_OBJECT_BYTES, OutcomeDocument, OutcomeKind, Reason,
    RequestObject, Split, Violation,
};
use sealbox_core::etag::ETag;
use sealbox_core::fault::{BuyerObject, answer_for_read};
use sealbox_core::layout::{is_valid_buyer, parse_request_key};
use sealbox_core::object_claims::ObjectClaims;
use sealbox_core::outcome::{Claim, Outcomes};
use sealbox_core::ports::{
    Authorizer, ClaimStore, NotAuthorized, Notifier, ObjectStore, OutgoingMessage, QueueSender,
    TokenSource, TokenUnavailable,
};
use sealbox_core::retry::Backoff;
use time::OffsetDateTime;

/// Why an event could not be handled now; it stays on its queue and comes back.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Storage, queue or notifier trouble: retry later.
    #[error("transient failure: {0}")]
    Transient(#[from] sealbox_core::Error),
    /// The token names a signing key not seen yet, and the keys at hand may predate the
    /// request: it is decided after a refresh of the keys, at least `retry_after` from now.
    #[error(
        "waiting {retry_after:?} for a refresh of the signing keys (token names a key not seen yet)"
    )]
    Deferred {
        /// How long to wait.
        retry_after: std::time::Duration,
    },
}

/// Events of a batch decided at once (a queue receive brings at most ten messages, but a message
/// may carry several records).
const DECIDE_AT_ONCE: usize = 16;

/// The job message's body. An inline input too large to ride in one SQS request's worth of
/// message stays in the request object, which the worker then reads (pinned by its ETag).
fn encode_job(job: &mut JobMessage) -> serde_json::Result<String> {
    let body = serde_json::to_string(job)?;
    if body.len() <= MAX_CARRYING_JOB_BYTES || !matches!(job.input, InputRef::Carried { .. }) {
        return Ok(body);
    }
    job.input = InputRef::Inline;
    serde_json::to_string(job)
}

/// `t` on the system clock (the arrival time the authorizer compares its key fetches with);
/// a time the system clock cannot hold is taken as now.
fn wall_clock(t: OffsetDateTime) -> std::time::SystemTime {
    let since = t - OffsetDateTime::UNIX_EPOCH;
    let epoch = std::time::SystemTime::UNIX_EPOCH;
    let at = if since.is_negative() {
        epoch.checked_sub(since.unsigned_abs())
    } else {
        epoch.checked_add(since.unsigned_abs())
    };
    at.unwrap_or_else(std::time::SystemTime::now)
}

/// How long an inbox event that failed for now stays away, by its receive count (see
/// [`queue_handler::disposition`]).
pub const BACKOFF: Backoff = Backoff::new(
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(60),
);

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
    /// A job was enqueued (with [`Dispatch::Caller`]: handed back to run).
    Accepted(Box<JobMessage>),
    /// A rejection document was written (or was already there).
    Rejected {
        /// Request id (or object name).
        request_id: String,
        /// Why.
        reason: Reason,
    },
    /// Another owner holds the request id's claim (a job, or ingest for another version; its
    /// claim came first, as `JobOutcome::OwnedElsewhere` in the worker): this copy changes
    /// nothing.
    OwnedElsewhere,
    /// Not a request object, or gone before it was read.
    Ignored(&'static str),
}

/// Where [`Ingest::handle_batch_via`] puts the jobs it accepts.
#[derive(Debug, Clone, Copy)]
pub enum Dispatch<'a> {
    /// On the jobs queue, in one batch (what [`Ingest::handle_batch`] does).
    Queue,
    /// Back to the caller only, in [`IngestOutcome::Accepted`], to run at once while it keeps
    /// the event as the durable record. `job_ids[i]` is the job id of `events[i]`, the same on
    /// every delivery of the event (see `JobMessage::job_id_for_event`), so that a rerun after a
    /// crash still owns the claim the first run made.
    Caller {
        /// One job id per event, in order.
        job_ids: &'a [String],
    },
}

/// The ports the ingest handler runs on, by name.
pub struct IngestPorts {
    /// Where request objects are read (the inbox) and outcomes written (the outbox).
    pub store: Arc<dyn ObjectStore>,
    /// The jobs queue accepted requests are sent to.
    pub jobs: Arc<dyn QueueSender>,
    /// Where rejections are announced.
    pub notifier: Arc<dyn Notifier>,
    /// What decides whether a request's token lets its buyer in.
    pub authorizer: Arc<dyn Authorizer>,
}

/// The ingest handler and the ports it needs.
pub struct Ingest {
    store: Arc<dyn ObjectStore>,
    jobs: Arc<dyn QueueSender>,
    notifier: Arc<dyn Notifier>,
    authorizer: Arc<dyn Authorizer>,
    /// Where tokens come from for request objects without one (`TokenSource: iam`); without
    /// it such a request is `token_missing`.
    tokens: Option<Arc<dyn TokenSource>>,
    /// Who owns each request: claims as objects in the outbox unless told otherwise.
    claims: Arc<dyn ClaimStore>,
    config: IngestConfig,
}

enum Decision {
    Accept(Box<JobMessage>),
    Reject {
        buyer: String,
        name: String,
        key: String,
        etag: ETag,
        received_at: OffsetDateTime,
        violation: Violation,
    },
    Ignore(&'static str),
}

impl Ingest {
    /// Wires the handler.
    pub fn new(ports: IngestPorts, config: IngestConfig) -> Self {
        let IngestPorts {
            store,
            jobs,
            notifier,
            authorizer,
        } = ports;
        Ingest {
            claims: Arc::new(ObjectClaims::new(store.clone(), config.outbox.clone())),
            store,
            jobs,
            notifier,
            authorizer,
            tokens: None,
            config,
        }
    }

    /// Claims (who owns each request) kept in `claims` rather than as objects in the outbox.
    pub fn with_claim_store(mut self, claims: Arc<dyn ClaimStore>) -> Self {
        self.claims = claims;
        self
    }

    /// Request objects without a token are authorized with a token from `tokens` (the buyer
    /// stack's `TokenSource: iam`): its refusal is the request's answer, `token_refused`.
    pub fn with_token_source(mut self, tokens: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Handles a batch of events: decides each, sends the accepted jobs in one batch, and
    /// writes the rejections. Results are in the order of `events`.
    pub async fn handle_batch(
        &self,
        events: &[InboxEvent],
    ) -> Vec<Result<IngestOutcome, IngestError>> {
        self.handle_batch_via(events, Dispatch::Queue).await
    }

    /// [`Ingest::handle_batch`], with the accepted jobs going where `dispatch` says.
    pub async fn handle_batch_via(
        &self,
        events: &[InboxEvent],
        dispatch: Dispatch<'_>,
    ) -> Vec<Result<IngestOutcome, IngestError>> {
        // Decided together, in order: each waits on its own reads (the request object, up to
        // the payload limit, and the keys), so a batch takes about as long as its slowest
        // event, not the sum of them; DECIDE_AT_ONCE at a time bounds the memory.
        let mut decided = Vec::with_capacity(events.len());
        for chunk in events.chunks(DECIDE_AT_ONCE) {
            decided.extend(join_all(chunk.iter().map(|ev| self.decide(ev))).await);
        }
        let mut decisions = Vec::with_capacity(events.len());
        for (i, mut decision) in decided.into_iter().enumerate() {
            if let (Ok(Decision::Accept(job)), Dispatch::Caller { job_ids }) =
                (&mut decision, dispatch)
            {
                match job_ids.get(i) {
                    Some(id) => job.job_id = id.clone(),
                    None => {
                        decision = Err(IngestError::Transient(sealbox_core::Error::Task(
                            "fewer job ids than events".into(),
                        )))
                    }
                }
            }
            decisions.push(decision);
        }
        let mut jobs = Vec::new();
        for d in &mut decisions {
            if let (Dispatch::Queue, Ok(Decision::Accept(job))) = (dispatch, &mut *d) {
                match encode_job(job) {
                    // The buyer is the job's tenant: one buyer's backlog does not delay another's.
                    Ok(body) => jobs.push(OutgoingMessage::new(body).in_group(job.buyer.clone())),
                    // Not sent, so not accepted: the event comes back.
                    Err(e) => {
                        *d = Err(IngestError::Transient(sealbox_core::Error::json(
                            "encoding a job",
                            e,
                        )))
                    }
                }
            }
        }
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
                    // Our own queue failing is held and retried like any fault of ours.
                    Err(e) if e.is_own_storage() => Err(IngestError::Transient(
                        sealbox_core::Error::storage("sending jobs", e.to_string()),
                    )),
                    Err(e) => Err(IngestError::Transient(sealbox_core::Error::Task(format!(
                        "sending jobs: {e}"
                    )))),
                },
                Ok(Decision::Reject {
                    buyer,
                    name,
                    key,
                    etag,
                    received_at,
                    violation,
                }) => {
                    self.reject(&buyer, &name, &key, &etag, received_at, &violation)
                        .await
                }
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
                etag: ev.etag.clone(),
                received_at: ev.event_time,
                violation,
            })
        };
        if let Err(rule) = sealbox_core::layout::check_key(&ev.key) {
            // No answer can be written under a key the store refuses; say so and move on.
            tracing::warn!(key = %ev.key, rule, "request object key not acceptable; ignored");
            return Ok(Decision::Ignore("key not acceptable"));
        }
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
                self.finish_own_rejection(ev).await?;
                return Ok(Decision::Ignore("request object deleted before ingest"));
            }
            // Whose fault: an answer about this object is the request's (the one table).
            Err(e) => {
                return match answer_for_read(e, BuyerObject::Request, &ev.key) {
                    Ok(v) => reject(v),
                    Err(e) => Err(e.into()),
                };
            }
        };
        if meta.etag != ev.etag {
            self.finish_own_rejection(ev).await?;
            // Overwritten since this event (or read half-written): the version now stored has
            // an event of its own, and answering this one would judge bytes it never announced.
            return Ok(Decision::Ignore(
                "request object changed after this event; its newer version has its own event",
            ));
        }
        let request = match RequestObject::parse(&body).and_then(|r| r.validate(rk.buyer, rk.name))
        {
            Ok(r) => r,
            Err(v) => return reject(v),
        };
        let token = match (&request.token, &self.tokens) {
            (Some(token), _) => token.clone(),
            (None, None) => {
                return reject(Violation::new(Reason::TokenMissing, "token", "is required"));
            }
            (None, Some(tokens)) => match tokens.token().await {
                Ok(token) => token,
                Err(TokenUnavailable::Refused(detail)) => {
                    return reject(Violation::new(Reason::TokenRefused, "token", detail));
                }
                // The token service's outage is not the request's: held and retried.
                Err(e @ TokenUnavailable::Unreachable(_)) => {
                    return Err(IngestError::Transient(sealbox_core::Error::storage(
                        "getting a token for a request object without one",
                        e,
                    )));
                }
            },
        };
        // Authorize before looking at anything the request points to.
        match self
            .authorizer
            .authorize(&token, rk.buyer, wall_clock(ev.event_time))
            .await
        {
            Ok(_) => {}
            Err(NotAuthorized::Rejected(r)) => {
                return reject(Violation::new(r.reason, "token", r.detail));
            }
            Err(NotAuthorized::Deferred { retry_after }) => {
                // A rejection is final: never decide it on keys that may predate the request.
                tracing::info!(buyer = %rk.buyer, request = %rk.name, retry_in_ms = retry_after.as_millis() as u64, "token names a key not seen yet; deferred until the keys refresh");
                return Err(IngestError::Deferred { retry_after });
            }
        }
        let input = match &request.input {
            // Carried in the job when it fits (see `handle_batch`): the worker then reads nothing.
            Input::Inline(bytes) => InputRef::carried(bytes.clone()),
            Input::Object(key) => match self.store.head(&self.config.inbox, key).await {
                Err(e) => {
                    return match answer_for_read(e, BuyerObject::Input, key) {
                        Ok(v) => reject(v),
                        Err(e) => Err(e.into()),
                    };
                }
                Ok(None) => {
                    return reject(Violation::new(
                        Reason::InputNotFound,
                        "input.s3_key",
                        format!("no object at {key}"),
                    ));
                }
                Ok(Some(m))
                    if request.split == Split::None && m.size > self.config.payload_limit =>
                {
                    return reject(Violation::new(
                        Reason::InputTooLarge,
                        "input.s3_key",
                        format!(
                            "is {} bytes, over the endpoint limit of {}; use split: line",
                            m.size, self.config.payload_limit
                        ),
                    ));
                }
                Ok(Some(_)) => InputRef::Object { key: key.clone() },
            },
        };
        let now = OffsetDateTime::now_utc();
        Ok(Decision::Accept(Box::new(JobMessage {
            version: CONTRACT_VERSION,
            job_id: JobMessage::new_job_id(),
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
            // Checked: an event time near the end of the calendar must not panic ingest.
            deadline: ev
                .event_time
                .checked_add(time::Duration::seconds(i64::from(request.ttl_seconds)))
                .unwrap_or(now),
        })))
    }

    #[allow(clippy::too_many_arguments)]
    async fn reject(
        &self,
        buyer: &str,
        name: &str,
        key: &str,
        etag: &ETag,
        received_at: OffsetDateTime,
        violation: &Violation,
    ) -> Result<IngestOutcome, IngestError> {
        let mut doc = OutcomeDocument::new(OutcomeKind::Rejected, buyer, name, key, violation);
        doc.received_at = received_at;
        // The claim comes first and carries the whole rejection: a job that runs for this
        // request id, or a rejection of another version, can no longer write a second outcome.
        let claim = ClaimDocument {
            version: CONTRACT_VERSION,
            buyer: buyer.to_owned(),
            request_id: name.to_owned(),
            owner: ingest_owner(etag),
            request_etag: etag.clone(),
            claimed_at: OffsetDateTime::now_utc(),
            rejection: Some(doc.clone()),
        };
        let outcomes = self.outcomes();
        match outcomes.claim(&claim).await? {
            Claim::Owned { .. } => {
                outcomes.settle_document(&doc).await?;
                tracing::info!(buyer, request_id = name, reason = %violation.reason, field = %violation.field, detail = %violation.rule, "rejected");
                Ok(IngestOutcome::Rejected {
                    request_id: name.to_owned(),
                    reason: violation.reason,
                })
            }
            Claim::OwnedBy(held) => {
                // Another version owns the id. Its rejection is finished and announced again
                // (its writer may have stopped after the claim); a job's outcome is the job's
                // to announce.
                if let Some(rejection) = &held.rejection {
                    outcomes.settle_document(rejection).await?;
                }
                tracing::info!(buyer, request_id = name, reason = %violation.reason, owner = %held.owner, "request id already claimed; this copy changes nothing");
                Ok(IngestOutcome::OwnedElsewhere)
            }
        }
    }

    fn outcomes(&self) -> Outcomes<'_> {
        Outcomes {
            store: self.store.as_ref(),
            outbox: &self.config.outbox,
            notifier: self.notifier.as_ref(),
            claims: self.claims.as_ref(),
        }
    }

    /// An event ingest will not answer (its version is gone): if ingest claimed this very
    /// version before and stopped before writing the rejection, write it now.
    async fn finish_own_rejection(&self, ev: &InboxEvent) -> Result<(), IngestError> {
        let Some(rk) = parse_request_key(&ev.key) else {
            return Ok(());
        };
        let outcomes = self.outcomes();
        if let Some(held) = outcomes.read_claim(rk.buyer, rk.name).await?
            && held.owner == ingest_owner(&ev.etag)
            && let Some(rejection) = &held.rejection
        {
            outcomes.settle_document(rejection).await?;
        }
        Ok(())
    }
}

/// The owner ingest names in the claim of a version it rejects.
fn ingest_owner(etag: &str) -> String {
    format!("ingest:{etag}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use sealbox_authz::{KeyAlg, Keyset, TokenIssuer, Verifier, VerifierConfig};
    use sealbox_core::conformance::refusing_store::RefusingStore;
    use sealbox_core::layout::{claim_key, rejected_key, request_key, result_key};
    use sealbox_core::ports::{PutMode, QueueConsumer, ReceiveOptions};
    use sealbox_core::testkit::{MemoryNotifier, MemoryQueue, MemoryStore};

    use super::*;

    struct Fixture {
        store: RefusingStore<MemoryStore>,
        jobs: MemoryQueue,
        ingest: Ingest,
        token: String,
    }

    fn fixture() -> Fixture {
        fixture_with(None)
    }

    /// A token source that answers as told, and counts the times it was asked.
    struct ScriptedTokens {
        answer: std::sync::Mutex<Result<String, TokenUnavailable>>,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl ScriptedTokens {
        fn answer(&self, answer: Result<String, TokenUnavailable>) {
            *self.answer.lock().unwrap() = answer;
        }
    }

    #[async_trait::async_trait]
    impl TokenSource for ScriptedTokens {
        async fn token(&self) -> Result<String, TokenUnavailable> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.answer.lock().unwrap().clone()
        }
    }

    fn fixture_with(tokens: Option<Arc<dyn TokenSource>>) -> Fixture {
        let store = RefusingStore::new(MemoryStore::new());
        let jobs = MemoryQueue::new(5);
        let ks = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let token = TokenIssuer::new(&ks)
            .unwrap()
            .issue("b1", "p", "g-b1", Duration::from_secs(600))
            .unwrap();
        let verifier = Verifier::from_keyset(VerifierConfig::new("seller", "p"), &ks).unwrap();
        let ingest = Ingest::new(
            IngestPorts {
                store: Arc::new(store.clone()),
                jobs: Arc::new(jobs.clone()),
                notifier: Arc::new(MemoryNotifier::new()),
                authorizer: Arc::new(verifier),
            },
            IngestConfig {
                inbox: "inbox".into(),
                outbox: "outbox".into(),
                payload_limit: 100,
            },
        );
        let ingest = match tokens {
            Some(t) => ingest.with_token_source(t),
            None => ingest,
        };
        Fixture {
            store,
            jobs,
            ingest,
            token,
        }
    }

    async fn drop_request(
        f: &Fixture,
        id: &str,
        input: serde_json::Value,
        split: &str,
    ) -> InboxEvent {
        let body = serde_json::json!({
            "version": 1, "request_id": id, "token": f.token, "input": input,
            "content_type": "text/csv", "accept": "text/csv", "split": split
        });
        drop_body(f, id, body).await
    }

    /// A request object without a token member.
    async fn drop_tokenless(f: &Fixture, id: &str) -> InboxEvent {
        let body = serde_json::json!({
            "version": 1, "request_id": id, "input": {"text": "1,2,3,4"},
            "content_type": "text/csv", "accept": "text/csv"
        });
        drop_body(f, id, body).await
    }

    /// Puts `body` as `b1`'s request object `id`; answers its inbox event.
    async fn drop_body(f: &Fixture, id: &str, body: serde_json::Value) -> InboxEvent {
        let key = request_key("b1", id);
        let meta = f
            .store
            .put(
                "inbox",
                &key,
                Bytes::from(body.to_string()),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        InboxEvent {
            bucket: "inbox".into(),
            key,
            etag: meta.etag,
            size: meta.size,
            event_time: meta.last_modified,
        }
    }

    fn scripted(answer: Result<String, TokenUnavailable>) -> Arc<ScriptedTokens> {
        Arc::new(ScriptedTokens {
            answer: std::sync::Mutex::new(answer),
            asked: Default::default(),
        })
    }

    #[tokio::test]
    async fn a_request_without_a_token_is_token_missing_unless_the_stack_gets_tokens_itself() {
        let f = fixture();
        let ev = drop_tokenless(&f, "bare").await;
        assert_eq!(
            f.ingest.handle(&ev).await.unwrap(),
            IngestOutcome::Rejected {
                request_id: "bare".into(),
                reason: Reason::TokenMissing
            }
        );

        // TokenSource: iam. The token its source gets is verified like any other.
        let tokens = scripted(Err(TokenUnavailable::Unreachable("not yet".into())));
        let f = fixture_with(Some(tokens.clone()));
        tokens.answer(Ok(f.token.clone()));
        let ev = drop_tokenless(&f, "by-identity").await;
        let out = f.ingest.handle(&ev).await.unwrap();
        assert!(matches!(out, IngestOutcome::Accepted(_)), "{out:?}");
        // A request that carries its own token does not ask.
        let ev = drop_request(&f, "own", serde_json::json!({"text": "1,2,3,4"}), "none").await;
        let out = f.ingest.handle(&ev).await.unwrap();
        assert!(matches!(out, IngestOutcome::Accepted(_)), "{out:?}");
        assert_eq!(tokens.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A token the keys do not verify (another fixture's, another seller's keys) is refused
        // for what it is.
        let other = fixture();
        tokens.answer(Ok(other.token.clone()));
        let ev = drop_tokenless(&f, "other-keys").await;
        let out = f.ingest.handle(&ev).await.unwrap();
        assert!(
            matches!(&out, IngestOutcome::Rejected { reason, .. } if *reason != Reason::TokenRefused && *reason != Reason::TokenMissing),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn a_refusal_of_the_token_service_is_the_requests_answer_and_its_outage_is_held() {
        let refused = scripted(Err(TokenUnavailable::Refused(
            "403 not_subscribed: account 111122223333 has no subscription".into(),
        )));
        let f = fixture_with(Some(refused));
        let ev = drop_tokenless(&f, "refused").await;
        assert_eq!(
            f.ingest.handle(&ev).await.unwrap(),
            IngestOutcome::Rejected {
                request_id: "refused".into(),
                reason: Reason::TokenRefused
            }
        );
        let (_, doc) = f
            .store
            .get("outbox", &rejected_key("b1", "refused"), 1 << 20)
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(
            (doc["reason"].as_str(), doc["field"].as_str()),
            (Some("token_refused"), Some("token")),
            "{doc}"
        );
        assert!(
            doc["message"].as_str().unwrap().contains("not_subscribed"),
            "{doc}"
        );

        let down = scripted(Err(TokenUnavailable::Unreachable(
            "connection refused".into(),
        )));
        let f = fixture_with(Some(down));
        let ev = drop_tokenless(&f, "held").await;
        let err = f.ingest.handle(&ev).await.unwrap_err();
        assert!(matches!(err, IngestError::Transient(_)), "{err:?}");
        // Nothing answered, nothing claimed: the event comes back.
        assert!(
            f.store
                .head("outbox", &claim_key("b1", "held"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            f.store
                .head("outbox", &rejected_key("b1", "held"))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn objects_the_store_refuses_are_rejected_with_their_reason_not_retried() {
        let f = fixture();
        let ev = drop_request(&f, "locked", serde_json::json!({"text": "1,2,3,4"}), "none").await;
        f.store.refuse(&ev.key);
        let out = f.ingest.handle(&ev).await.unwrap();
        assert_eq!(
            out,
            IngestOutcome::Rejected {
                request_id: "locked".into(),
                reason: Reason::RequestUnreadable
            }
        );
        f.store
            .put(
                "inbox",
                "b1/inputs/x.csv",
                Bytes::from("1,2,3,4"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        f.store.refuse("b1/inputs/x.csv");
        let ev = drop_request(
            &f,
            "r2",
            serde_json::json!({"s3_key": "b1/inputs/x.csv"}),
            "none",
        )
        .await;
        let out = f.ingest.handle(&ev).await.unwrap();
        assert_eq!(
            out,
            IngestOutcome::Rejected {
                request_id: "r2".into(),
                reason: Reason::InputUnreadable
            }
        );
        let (_, doc) = f
            .store
            .get("outbox", &rejected_key("b1", "r2"), 1 << 20)
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(doc["field"], "input.s3_key", "{doc}");
        assert!(
            doc["message"]
                .as_str()
                .unwrap()
                .contains("403 AccessDenied"),
            "{doc}"
        );
    }

    #[tokio::test]
    async fn a_valid_request_becomes_one_job_pinned_to_the_request_etag() {
        let f = fixture();
        let ev = drop_request(&f, "r1", serde_json::json!({"text": "1,2,3,4"}), "none").await;
        let out = f.ingest.handle(&ev).await.unwrap();
        let IngestOutcome::Accepted(job) = out else {
            panic!("{out:?}")
        };
        assert_eq!(
            (job.buyer.as_str(), job.request_etag.as_str()),
            ("b1", ev.etag.as_str())
        );
        let opts = ReceiveOptions {
            max_messages: 10,
            wait: Duration::ZERO,
            visibility_timeout: Duration::from_secs(30),
        };
        let msgs = f.jobs.receive(opts).await.unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(
            serde_json::from_str::<JobMessage>(&msgs[0].body).unwrap(),
            *job
        );
    }

    #[tokio::test]
    async fn an_inline_input_rides_in_the_job_unless_it_would_outgrow_64_kib() {
        let f = fixture();
        let small = drop_request(&f, "r1", serde_json::json!({"text": "1,2,3,4"}), "none").await;
        let big_text = "1,2,3,4\n".repeat(10_000);
        let big = drop_request(&f, "r2", serde_json::json!({"text": big_text}), "line").await;
        let out = f.ingest.handle_batch(&[small, big]).await;
        let inputs: Vec<InputRef> = out
            .into_iter()
            .map(|o| match o {
                Ok(IngestOutcome::Accepted(job)) => job.input,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(inputs[0].carried_bytes(), Some(Ok(b"1,2,3,4".to_vec())));
        assert_eq!(
            inputs[1],
            InputRef::Inline,
            "80 KB stays in the request object"
        );
        let opts = ReceiveOptions {
            max_messages: 10,
            wait: Duration::ZERO,
            visibility_timeout: Duration::from_secs(30),
        };
        let bodies: Vec<usize> = f
            .jobs
            .receive(opts)
            .await
            .unwrap()
            .iter()
            .map(|m| m.body.len())
            .collect();
        assert_eq!(bodies.len(), 2);
        assert!(
            bodies.iter().all(|&n| n <= MAX_CARRYING_JOB_BYTES),
            "{bodies:?}"
        );
    }

    /// An authorizer whose copy of the keys may predate every request.
    struct KeysNotYetRefreshed;

    #[async_trait::async_trait]
    impl Authorizer for KeysNotYetRefreshed {
        async fn authorize(
            &self,
            _token: &str,
            _buyer: &str,
            _arrived: std::time::SystemTime,
        ) -> Result<sealbox_core::contract::TokenClaims, NotAuthorized> {
            Err(NotAuthorized::Deferred {
                retry_after: Duration::from_secs(7),
            })
        }
    }

    #[tokio::test]
    async fn a_token_whose_key_is_not_seen_yet_is_deferred_with_nothing_written_or_sent() {
        let mut f = fixture();
        f.ingest.authorizer = Arc::new(KeysNotYetRefreshed);
        let ev = drop_request(&f, "r1", serde_json::json!({"text": "1,2,3,4"}), "none").await;
        let r = f.ingest.handle(&ev).await;
        assert!(matches!(r, Err(IngestError::Deferred { .. })), "{r:?}");
        assert_eq!(
            queue_handler::disposition(&r, 1),
            sealbox_core::queue_handler::Disposition::RetryAfter(Duration::from_secs(7)),
            "it comes back after the deferral's own wait"
        );
        let listed = f.store.list("outbox", "", None, 10).await.unwrap();
        assert!(listed.is_empty(), "no claim, no rejection: {listed:?}");
        let opts = ReceiveOptions {
            max_messages: 10,
            wait: Duration::ZERO,
            visibility_timeout: Duration::from_secs(30),
        };
        assert!(f.jobs.receive(opts).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_input_object_over_the_payload_limit_is_rejected_unless_split() {
        let f = fixture();
        f.store
            .put(
                "inbox",
                "b1/inputs/big.csv",
                Bytes::from(vec![b'1'; 200]),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let input = serde_json::json!({"s3_key": "b1/inputs/big.csv"});
        let ev = drop_request(&f, "r1", input.clone(), "none").await;
        let out = f.ingest.handle(&ev).await.unwrap();
        assert_eq!(
            out,
            IngestOutcome::Rejected {
                request_id: "r1".into(),
                reason: Reason::InputTooLarge
            }
        );
        assert!(
            f.store
                .head("outbox", &rejected_key("b1", "r1"))
                .await
                .unwrap()
                .is_some()
        );
        let ev = drop_request(&f, "r2", input, "line").await;
        assert!(matches!(
            f.ingest.handle(&ev).await.unwrap(),
            IngestOutcome::Accepted(_)
        ));
    }

    #[tokio::test]
    async fn an_event_for_a_version_since_overwritten_is_left_to_the_newer_event() {
        let f = fixture();
        // The event saw a half-written file; the object now holds the whole request.
        let mut stale = drop_request(&f, "r1", serde_json::json!({"text": "x"}), "none").await;
        stale.etag = "half-written".into();
        assert!(matches!(
            f.ingest.handle(&stale).await.unwrap(),
            IngestOutcome::Ignored(_)
        ));
        assert!(
            f.store
                .head("outbox", &rejected_key("b1", "r1"))
                .await
                .unwrap()
                .is_none()
        );
        let fresh = drop_request(&f, "r1", serde_json::json!({"text": "x"}), "none").await;
        assert!(matches!(
            f.ingest.handle(&fresh).await.unwrap(),
            IngestOutcome::Accepted(_)
        ));
    }

    #[tokio::test]
    async fn a_bad_copy_of_an_answered_request_adds_no_second_outcome() {
        let f = fixture();
        // A job owned the request and answered it.
        let claim = ClaimDocument {
            version: CONTRACT_VERSION,
            buyer: "b1".into(),
            request_id: "r1".into(),
            owner: "job:1".into(),
            request_etag: "e1".into(),
            claimed_at: OffsetDateTime::now_utc(),
            rejection: None,
        };
        f.store
            .put(
                "outbox",
                &claim_key("b1", "r1"),
                Bytes::from(serde_json::to_vec(&claim).unwrap()),
                PutMode::CreateNew,
            )
            .await
            .unwrap();
        f.store
            .put(
                "outbox",
                &result_key("b1", "r1"),
                Bytes::from("done"),
                PutMode::CreateNew,
            )
            .await
            .unwrap();
        let mut ev = drop_request(&f, "r1", serde_json::json!({"text": "x"}), "none").await;
        f.store
            .put(
                "inbox",
                &ev.key,
                Bytes::from("{not json"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        ev.etag = f.store.head("inbox", &ev.key).await.unwrap().unwrap().etag;
        assert_eq!(
            f.ingest.handle(&ev).await.unwrap(),
            IngestOutcome::OwnedElsewhere
        );
        assert!(
            f.store
                .head("outbox", &rejected_key("b1", "r1"))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn keys_outside_the_request_layout_are_ignored() {
        let f = fixture();
        for key in [
            "b1/inputs/x.json",
            "b1/requests/x.txt",
            "b1/requests/deep/x.json",
        ] {
            let ev = InboxEvent {
                bucket: "inbox".into(),
                key: key.into(),
                etag: "e".into(),
                size: 1,
                event_time: OffsetDateTime::now_utc(),
            };
            assert!(
                matches!(
                    f.ingest.handle(&ev).await.unwrap(),
                    IngestOutcome::Ignored(_)
                ),
                "{key}"
            );
        }
    }
}
