//! Ports: the small capabilities handlers depend on. Adapters implement them for AWS or embedded.

pub mod endpoint;
pub mod job_queue;
pub mod notifier;
pub mod object_store;

pub use endpoint::{Endpoint, Invocation, InvocationOutput};
pub use job_queue::{
    DeadLetter, DeadLetterQueue, JobQueue, OutgoingMessage, QueueStats, ReceiveOptions,
    ReceivedMessage,
};
pub use notifier::Notifier;
pub use object_store::{ByteStream, ObjectMeta, ObjectStore, PutMode};
