//! sealbox embedded: the adapters that run the pipeline on one machine (the file system for
//! buckets, SQLite for queues and subscriptions, an event log and webhook for notifications, HTTP
//! to the model container), and the one-machine stack that wires them to the handlers.

pub mod event_log;
pub mod fs_store;
pub mod http_endpoint;
pub mod inbox_watcher;
pub mod sqlite_queue;
pub mod sqlite_subscriptions;
/// The one-machine stack (`sealbox up`): the adapters of a data directory wired to the handlers.
pub mod stack;
pub mod webhook;
