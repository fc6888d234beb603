//! Ports: the small capabilities handlers depend on. Adapters implement them for AWS or embedded.

pub mod authorizer;
pub mod claim_store;
pub mod endpoint;
pub mod notifier;
pub mod object_store;
pub mod queue;
pub mod token_source;

pub use authorizer::{Authorizer, NotAuthorized, TokenRejection};
pub use claim_store::{Claim, ClaimStore};
pub use endpoint::{Endpoint, Invocation, InvocationOutput};
pub use notifier::Notifier;
pub use object_store::{ByteStream, Metadata, ObjectMeta, ObjectStore, PutMode, PutOptions};
pub use queue::{
    DeadLetter, OutgoingMessage, QueueAdmin, QueueConsumer, QueueSender, QueueStats,
    ReceiveOptions, ReceivedMessage,
};
pub use token_source::{TokenSource, TokenUnavailable};
