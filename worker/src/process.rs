//! The job from its message to its single outcome: the claim, the request object it was
//! authorized for, and the announcement.

use super::*;

impl Worker {
    /// Runs the job in `body`, delivered for the `receive_count`-th time.
    ///
    /// Claims the request before writing any outcome: only the claim's owner (this job and its
    /// redeliveries) writes one; any other job for the same request id announces the owner's
    /// outcome once it exists, or leaves the request to the owner.
    pub async fn process(
        &self,
        body: &str,
        receive_count: u32,
    ) -> Result<(JobOutcome, JobReport), WorkerError> {
        let job: JobMessage =
            serde_json::from_str(body).map_err(|e| WorkerError::MalformedJob(e.to_string()))?;
        let mut report = JobReport {
            buyer: job.buyer.clone(),
            request_id: job.request_id.clone(),
            invoke_time: Duration::ZERO,
            invocations: 0,
            records: 0,
            metered: true,
            bytes_in: 0,
            bytes_out: 0,
        };
        let info = ResultInfo {
            buyer: &job.buyer,
            request_id: &job.request_id,
            content_type: &job.accept,
            received_at: job.received_at,
            attempts: receive_count,
        };
        let owner = job.owner();
        // Look before claiming: a request replaced before its job ran is answered in its newer
        // version, which has a job of its own and may claim the id instead.
        let input = match self.authorized_input(&job, receive_count).await? {
            Authorized::Replaced => {
                let held = self
                    .outcomes()
                    .read_claim(&job.buyer, &job.request_id)
                    .await?;
                if held.is_none_or(|c| c.owner != owner) {
                    tracing::info!(buyer = %job.buyer, request_id = %job.request_id, "request object replaced before its job ran; superseded");
                    return Ok((JobOutcome::Superseded, report));
                }
                // This job owns the id already (a redelivery) and must answer it.
                Err(Failure(Violation::new(
                    Reason::RequestReplaced,
                    "request",
                    "the request object was replaced while its job was in progress; a request id \
                     is answered once, so submit the new version under a new request id",
                )))
            }
            Authorized::Input(input) => Ok(input),
            Authorized::Gone(v) => Err(Failure(v)),
        };
        let claim = ClaimDocument {
            version: CONTRACT_VERSION,
            buyer: job.buyer.clone(),
            request_id: job.request_id.clone(),
            owner,
            request_etag: job.request_etag.clone(),
            claimed_at: OffsetDateTime::now_utc(),
            rejection: None,
        };
        match self.outcomes().claim(&claim).await? {
            Claim::Owned { fresh: true } => {}
            Claim::Owned { fresh: false } => {
                // A redelivery: the first delivery may have written the outcome already.
                if let Some(n) = self.outcomes().existing(&info).await? {
                    self.notifier.publish(&n).await?;
                    return Ok((classify(n), report));
                }
            }
            Claim::OwnedBy(held) => {
                let announced = self.outcomes().follow(&held, &info).await?;
                tracing::info!(buyer = %job.buyer, request_id = %job.request_id, owner = %held.owner, announced = announced.is_some(), "request owned by another attempt; left to it");
                return Ok((JobOutcome::OwnedElsewhere(announced), report));
            }
        }
        let ran = match input {
            Ok(input) => self.run(&job, input, &mut report).await,
            Err(failure) => Err(RunError::Fail(failure)),
        };
        let outcome = match ran {
            Ok(meta) => {
                JobOutcome::Completed(self.outcomes().settle_result(&info, Ok(meta)).await?)
            }
            Err(RunError::Conflict) => {
                let e = Error::AlreadyExists {
                    bucket: self.config.outbox.clone(),
                    key: result_key(&job.buyer, &job.request_id),
                };
                JobOutcome::Completed(self.outcomes().settle_result(&info, Err(e)).await?)
            }
            Err(RunError::Fail(Failure(v))) => {
                let mut doc = OutcomeDocument::new(
                    OutcomeKind::Failed,
                    &job.buyer,
                    &job.request_id,
                    &job.request_key,
                    &v,
                );
                doc.received_at = job.received_at;
                doc.attempts = receive_count;
                if report.invocations > 0 {
                    // Calls made before the failure were billed all the same.
                    doc.usage = Some(report.usage());
                }
                tracing::info!(buyer = %job.buyer, request_id = %job.request_id, reason = %v.reason, detail = %v.rule, "failed");
                JobOutcome::Failed(self.outcomes().settle_document(&doc).await?)
            }
            Err(RunError::Retry(e)) => return Err(WorkerError::Transient(e)),
        };
        Ok((outcome, report))
    }

    /// Whether the request object the job was accepted for is still the one stored, and its
    /// inline input if it has one.
    pub(crate) async fn authorized_input(
        &self,
        job: &JobMessage,
        receive_count: u32,
    ) -> Result<Authorized, WorkerError> {
        if let Some(carried) = job.input.carried_bytes() {
            let bytes = match carried {
                Ok(bytes) => bytes,
                Err(why) => {
                    return Ok(Authorized::Gone(Violation::new(
                        Reason::MalformedJob,
                        "input",
                        why,
                    )));
                }
            };
            // The first delivery runs the bytes ingest authorized without a read (a replaced
            // request's versions are settled by the claim, first come first answered). A
            // redelivery may hold a claim made before the buyer replaced the request: look.
            if receive_count <= 1 || self.still_stored(job).await? {
                return Ok(Authorized::Input(Some(bytes)));
            }
            return Ok(Authorized::Replaced);
        }
        if job.input != InputRef::Inline {
            return Ok(if self.still_stored(job).await? {
                Authorized::Input(None)
            } else {
                Authorized::Replaced
            });
        }
        let (meta, body) = match self
            .store
            .get(
                &self.config.inbox,
                &job.request_key,
                MAX_REQUEST_OBJECT_BYTES,
            )
            .await
        {
            Ok(got) => got,
            Err(Error::NotFound { .. }) => {
                return Ok(Authorized::Gone(Violation::new(
                    Reason::InputNotFound,
                    "input",
                    "the request object was deleted before it ran",
                )));
            }
            Err(e) => {
                return match answer_for_read(e, BuyerObject::Request, &job.request_key) {
                    // Refused by the store: the request's answer (the one table).
                    Ok(v) if v.reason == Reason::RequestUnreadable => Ok(Authorized::Gone(v)),
                    // Now too large, a link or a FIFO: a new version, with an event of its own.
                    Ok(_) => Ok(Authorized::Replaced),
                    Err(e) => Err(WorkerError::Transient(e)),
                };
            }
        };
        if meta.etag != job.request_etag {
            return Ok(Authorized::Replaced);
        }
        let request =
            RequestObject::parse(&body).and_then(|r| r.validate(&job.buyer, &job.request_id));
        Ok(match request {
            Ok(ValidRequest {
                input: Input::Inline(bytes),
                ..
            }) => Authorized::Input(Some(bytes)),
            // Not what ingest accepted under this ETag: answer rather than guess.
            Ok(_) => Authorized::Gone(Violation::new(
                Reason::MalformedJob,
                "input",
                "the job says inline input but the request object names an input object",
            )),
            Err(v) => Authorized::Gone(v),
        })
    }

    /// Whether the authorized version of the request object is still the one stored (a
    /// deleted one stays authorized: the job was accepted before it went), by its metadata.
    pub(crate) async fn still_stored(&self, job: &JobMessage) -> Result<bool, WorkerError> {
        match self.store.head(&self.config.inbox, &job.request_key).await {
            Ok(meta) => Ok(meta.is_none_or(|m| m.etag == job.request_etag)),
            // The store will not say: answer the version that was authorized (a refused read
            // of it then gets its outcome), never leave the request without one.
            Err(Error::Unreadable { .. }) => Ok(true),
            Err(e) if e.is_retryable() => Err(WorkerError::Transient(e)),
            // Now a link or a FIFO: a new version, with an event of its own.
            Err(_) => Ok(false),
        }
    }
}

pub(crate) fn classify(n: Notification) -> JobOutcome {
    match n.event {
        sealbox_core::contract::EventKind::InferenceCompleted => JobOutcome::Completed(n),
        _ => JobOutcome::Failed(n),
    }
}
