//! The queue ports' conformance suite against `SqliteQueue`: each check on a fresh queue (and
//! dead-letter queue) in one database of its own temporary folder.
// Test code: a panic is how a test fails.
#![allow(clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use sealbox_core::conformance::queue::{Fresh, QueueFactory};
use sealbox_embedded::sqlite_queue::{QueueDb, RedrivePolicy};

/// One queue database; each fresh queue gets new names in it.
struct SqliteFactory {
    db: QueueDb,
    next: AtomicU32,
    _dir: tempfile::TempDir,
}

impl SqliteFactory {
    fn new() -> SqliteFactory {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let db = QueueDb::open(&dir.path().join("queues.db")).expect("opening the queue database");
        SqliteFactory {
            db,
            next: AtomicU32::new(0),
            _dir: dir,
        }
    }
}

#[async_trait]
impl QueueFactory for SqliteFactory {
    async fn fresh(&self, max_receives: u32) -> Fresh {
        let name = format!("q{}", self.next.fetch_add(1, Ordering::Relaxed));
        let policy = RedrivePolicy {
            dead_letter_queue: format!("{name}-dlq"),
            max_receives,
        };
        Fresh::of(self.db.queue(&name, Some(policy)))
    }
}

sealbox_core::queue_conformance_tests!(SqliteFactory::new());
