//! In-memory adapters of the ports and a scripted endpoint, for the handlers' and runtimes'
//! tests (feature `testkit`). Each adapter passes its port's conformance suite, like every
//! other adapter (`core/tests/testkit_conformance.rs`).

mod memory_claims;
mod memory_notifier;
mod memory_queue;
mod memory_store;
mod scripted_endpoint;

pub use memory_claims::MemoryClaims;
pub use memory_notifier::MemoryNotifier;
pub use memory_queue::MemoryQueue;
pub use memory_store::MemoryStore;
pub use scripted_endpoint::ScriptedEndpoint;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::conformance::queue::{Fresh, QueueFactory};

    struct Queues;

    #[async_trait]
    impl QueueFactory for Queues {
        async fn fresh(&self, max_receives: u32) -> Fresh {
            Fresh::of(MemoryQueue::new(max_receives))
        }
    }

    crate::queue_conformance_tests!(Queues);

    #[tokio::test]
    async fn the_memory_store_passes_the_object_store_suite() {
        crate::conformance::object_store::run(&MemoryStore::new(), "bucket").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_claims_pass_the_claim_store_suite() {
        crate::conformance::claim_store::run(Arc::new(MemoryClaims::new())).await;
    }

    #[tokio::test]
    async fn the_memory_notifier_passes_the_notifier_suite() {
        let notifier = MemoryNotifier::new();
        let published =
            crate::conformance::notifier::run(&notifier, || async { notifier.published() }).await;
        assert!(!published.is_empty());
    }
}
