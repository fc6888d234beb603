//! sealbox embedded: the adapters that run the pipeline on one machine (the file system for
//! buckets, SQLite for queues and subscriptions, an event log and webhook for notifications, HTTP
//! to the model container). The stack that wires them to the handlers is the CLI's (`sealbox::stack`).

pub mod event_log;
pub mod fs_store;
pub mod http_endpoint;
pub mod inbox_watcher;
pub mod sqlite_queue;
pub mod sqlite_subscriptions;
pub mod webhook;
