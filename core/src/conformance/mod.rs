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

use time::OffsetDateTime;

use crate::contract::{CONTRACT_VERSION, EventKind, Notification, event_id};

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
