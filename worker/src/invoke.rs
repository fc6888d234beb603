//! Reading the input, invoking the endpoint (in a slot, with retries) and writing the result.

use super::*;

impl Worker {
    /// Reads the object input (inline input is given), invokes, writes the result.
    pub(crate) async fn run(
        &self,
        job: &JobMessage,
        inline: Option<Vec<u8>>,
        report: &mut JobReport,
    ) -> Result<sealbox_core::ports::ObjectMeta, RunError> {
        if OffsetDateTime::now_utc() > job.deadline {
            return Err(fail(
                Reason::DeadlineExceeded,
                "deadline",
                format!(
                    "the request expired at {}",
                    sealbox_core::contract::rfc3339(job.deadline)
                ),
            ));
        }
        let key = result_key(&job.buyer, &job.request_id);
        let outbox = &self.config.outbox;
        match (&job.input, job.split, inline) {
            (InputRef::Inline | InputRef::Carried { .. }, split, input) => {
                let input = input.unwrap_or_default();
                if split == Split::Line {
                    let reader: ByteStream = Box::pin(std::io::Cursor::new(input));
                    return self.run_split(job, reader, report).await;
                }
                let out = self.invoke(job, Bytes::from(input), report).await?;
                let opts = result_options(report)?;
                put_result(self.store.put_opts(outbox, &key, out, opts).await)
            }
            (InputRef::Object { key: input_key }, Split::None, _) => {
                let limit = self.endpoint.payload_limit();
                let input = match self.store.get(&self.config.inbox, input_key, limit).await {
                    Ok((_, b)) => b,
                    Err(e) => return Err(input_error(e, input_key)),
                };
                let out = self.invoke(job, input, report).await?;
                let opts = result_options(report)?;
                put_result(self.store.put_opts(outbox, &key, out, opts).await)
            }
            (InputRef::Object { key: input_key }, Split::Line, _) => {
                let reader = match self.store.get_stream(&self.config.inbox, input_key).await {
                    Ok((_, r)) => r,
                    Err(e) => return Err(input_error(e, input_key)),
                };
                self.run_split(job, reader, report).await
            }
        }
    }

    pub(crate) async fn invoke(
        &self,
        job: &JobMessage,
        body: Bytes,
        report: &mut JobReport,
    ) -> Result<Bytes, RunError> {
        let limit = self.endpoint.payload_limit();
        if body.len() as u64 > limit {
            return Err(fail(
                Reason::InputTooLarge,
                "input",
                format!(
                    "{} bytes is over the endpoint limit of {limit}; use split: line",
                    body.len()
                ),
            ));
        }
        let invocation = Invocation {
            body,
            content_type: job.content_type.clone(),
            accept: job.accept.clone(),
            custom_attributes: job.custom_attributes.clone(),
        };
        let bytes_in = invocation.body.len() as u64;
        let mut calls = 0u32;
        let busy_ns = std::sync::atomic::AtomicU64::new(0);
        let result = (|| {
            calls += 1;
            self.invoke_in_slot(invocation.clone(), &busy_ns)
        })
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(20))
                .with_max_delay(Duration::from_millis(500))
                .with_max_times(self.config.invoke_attempts.saturating_sub(1))
                .with_jitter(),
        )
        .when(Error::is_retryable)
        .await;
        report.invoke_time += Duration::from_nanos(busy_ns.into_inner());
        report.invocations += calls;
        report.bytes_in += bytes_in * u64::from(calls);
        match result {
            Ok(out) => {
                report.bytes_out += out.body.len() as u64;
                // Unmetered answers count as AWS Marketplace counts them: one unit each.
                report.records += out.consumed_units.unwrap_or(1);
                report.metered &= out.consumed_units.is_some();
                Ok(out.body)
            }
            Err(Error::ModelRejected { status, message }) => Err(fail(
                Reason::ModelRejectedInput,
                "input",
                format!("the model answered {status}: {message}"),
            )),
            Err(Error::ModelFailed { status, message }) => Err(fail(
                Reason::ModelError,
                "model",
                format!("the model failed with {status}: {message}"),
            )),
            Err(Error::ResponseTooLarge { limit }) => Err(fail(
                Reason::ModelResponseTooLarge,
                "model",
                format!("the model answered more than {limit} bytes"),
            )),
            Err(Error::PayloadTooLarge { size, limit }) => Err(fail(
                Reason::InputTooLarge,
                "input",
                format!("{size} bytes is over the endpoint limit of {limit}"),
            )),
            Err(e) => Err(RunError::Retry(e)),
        }
    }

    /// One invocation inside a concurrency slot; adds the nanoseconds inside the call to `busy`.
    pub(crate) async fn invoke_in_slot(
        &self,
        invocation: Invocation,
        busy: &std::sync::atomic::AtomicU64,
    ) -> sealbox_core::Result<sealbox_core::ports::InvocationOutput> {
        let _slot = self
            .invoke_slots
            .acquire()
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        let started = Instant::now();
        let out = self.endpoint.invoke(invocation).await;
        let ns = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        busy.fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
        out
    }
}

pub(crate) enum RunError {
    Fail(Failure),
    Retry(Error),
    Conflict,
}

impl From<Error> for RunError {
    fn from(e: Error) -> Self {
        RunError::Retry(e)
    }
}

pub(crate) fn fail(reason: Reason, field: &str, rule: impl Into<String>) -> RunError {
    RunError::Fail(Failure(Violation::new(reason, field, rule)))
}

/// A failed read of the input object, by whose fault it is (the one table).
pub(crate) fn input_error(e: Error, key: &str) -> RunError {
    match answer_for_read(e, BuyerObject::Input, key) {
        Ok(v) => RunError::Fail(Failure(v)),
        Err(e) => RunError::Retry(e),
    }
}

/// How a result is written: create-new, carrying the job's usage in its metadata (one write:
/// no result without its usage, and no extra request for it).
pub(crate) fn result_options(report: &JobReport) -> Result<PutOptions, RunError> {
    let metadata = report
        .usage()
        .to_metadata()
        .map_err(|e| RunError::Retry(Error::json("encoding the usage metadata", e)))?;
    Ok(PutOptions {
        mode: PutMode::CreateNew,
        metadata,
    })
}

pub(crate) fn put_result(
    r: sealbox_core::Result<sealbox_core::ports::ObjectMeta>,
) -> Result<sealbox_core::ports::ObjectMeta, RunError> {
    match r {
        Ok(meta) => Ok(meta),
        Err(Error::AlreadyExists { .. }) => Err(RunError::Conflict),
        Err(e) => Err(RunError::Retry(e)),
    }
}
