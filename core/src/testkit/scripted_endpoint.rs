//! An [`Endpoint`] that answers as its test tells it: the handlers' stand-in for a model.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{Endpoint, Invocation, InvocationOutput};
use crate::{Error, Result};

type Answer = Box<dyn Fn(Invocation) -> Result<InvocationOutput> + Send + Sync>;

/// Answers every call with its script, after its latency; while busy, answers that it is
/// throttling instead. Remembers the size of every payload it was sent.
pub struct ScriptedEndpoint {
    answer: Answer,
    limit: u64,
    latency: Duration,
    busy: AtomicBool,
    payloads: Mutex<Vec<usize>>,
}

impl ScriptedEndpoint {
    /// Answers with `answer`; refuses payloads over `limit` bytes before any call (as the
    /// worker learns from [`Endpoint::payload_limit`]).
    pub fn new(
        limit: u64,
        answer: impl Fn(Invocation) -> Result<InvocationOutput> + Send + Sync + 'static,
    ) -> ScriptedEndpoint {
        ScriptedEndpoint {
            answer: Box::new(answer),
            limit,
            latency: Duration::ZERO,
            busy: AtomicBool::new(false),
            payloads: Mutex::new(Vec::new()),
        }
    }

    /// Echoes each payload in the accepted type, metering one unit per non-empty line.
    pub fn echo(limit: u64) -> ScriptedEndpoint {
        ScriptedEndpoint::new(limit, |inv| {
            let lines = inv.body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
            Ok(InvocationOutput {
                consumed_units: Some(lines.count() as u64),
                body: inv.body,
                content_type: inv.accept,
                custom_attributes: None,
            })
        })
    }

    /// Echoes each payload and meters nothing.
    pub fn unmetered(limit: u64) -> ScriptedEndpoint {
        ScriptedEndpoint::new(limit, |inv| {
            Ok(InvocationOutput {
                body: inv.body,
                content_type: inv.accept,
                custom_attributes: None,
                consumed_units: None,
            })
        })
    }

    /// Fails every call with `error()`.
    pub fn failing(limit: u64, error: fn() -> Error) -> ScriptedEndpoint {
        ScriptedEndpoint::new(limit, move |_| Err(error()))
    }

    /// Each call takes `latency` first.
    pub fn with_latency(mut self, latency: Duration) -> ScriptedEndpoint {
        self.latency = latency;
        self
    }

    /// While `busy`, every call answers [`Error::EndpointUnavailable`] (throttled).
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::SeqCst);
    }

    /// The size of every payload sent so far, in order.
    pub fn payloads(&self) -> Vec<usize> {
        self.payloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Endpoint for ScriptedEndpoint {
    async fn invoke(&self, invocation: Invocation) -> Result<InvocationOutput> {
        self.payloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(invocation.body.len());
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.busy.load(Ordering::SeqCst) {
            return Err(Error::EndpointUnavailable {
                message: "throttled".into(),
                retry_after: None,
            });
        }
        (self.answer)(invocation)
    }

    fn payload_limit(&self) -> u64 {
        self.limit
    }
}
