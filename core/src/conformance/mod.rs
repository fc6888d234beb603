//! Conformance suites: the semantics of each port, written once and run against every adapter
//! (embedded and AWS) by the adapter crates' tests. Behind the `conformance` feature.
// Test support: a panic is how a suite reports a broken port promise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod claim_store;
pub mod endpoint;
pub mod notifier;
pub mod object_store;
pub mod queue;
pub mod refusing_store;

use std::any::Any;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::contract::{CONTRACT_VERSION, EventKind, Notification, event_id};

/// One adapter for one check, and whatever must live as long as it does (a temporary folder,
/// a lease on a server): what the expression given to each `*_conformance_tests!` macro makes.
pub struct Subject<T: ?Sized> {
    /// The adapter under test.
    pub adapter: Arc<T>,
    // After `adapter`: fields drop in order, so the adapter goes before what it stands on.
    keep: Vec<Box<dyn Any + Send + Sync>>,
}

impl<T: ?Sized> Subject<T> {
    /// An adapter that needs nothing kept alive beside it.
    pub fn new(adapter: Arc<T>) -> Subject<T> {
        Subject {
            adapter,
            keep: Vec::new(),
        }
    }

    /// The same, also keeping `guard` until the check ends.
    pub fn keeping(mut self, guard: impl Any + Send + Sync) -> Subject<T> {
        self.keep.push(Box::new(guard));
        self
    }
}

/// A test notification of buyer `b` (for the notifier adapters' tests).
pub fn test_notification(request_id: &str) -> Notification {
    let now = OffsetDateTime::now_utc();
    Notification {
        version: CONTRACT_VERSION,
        event_id: event_id("b", request_id),
        event: EventKind::TestNotification,
        buyer: "b".into(),
        request_id: request_id.into(),
        output_location: None,
        failure_location: None,
        content_type: "application/json".into(),
        bytes: 0,
        received_at: now,
        completed_at: now,
        attempts: 0,
        reason: None,
        usage: None,
    }
}
