//! In-memory adapters of the ports and a scripted endpoint, for the handlers' and runtimes'
//! tests (feature `testkit`). Each adapter passes its port's conformance suite, like every
//! other adapter (this module's tests).

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

    use super::*;

    mod memory_queue {
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
    }

    mod memory_store {
        use super::*;
        use crate::conformance::Subject;

        crate::object_store_conformance_tests!(Subject::new(Arc::new(MemoryStore::new()) as _));
    }

    mod memory_claims {
        use super::*;
        use crate::conformance::Subject;

        crate::claim_store_conformance_tests!(Subject::new(Arc::new(MemoryClaims::new()) as _));
    }

    mod memory_notifier {
        use super::*;
        use crate::conformance::Subject;

        crate::notifier_conformance_tests!({
            let notifier = Arc::new(MemoryNotifier::new());
            let read = {
                let notifier = notifier.clone();
                move || {
                    let published = notifier.published();
                    async move { published }
                }
            };
            (Subject::new(notifier as _), read)
        });
    }
}
