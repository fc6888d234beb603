//! Embedded adapters: the file system, SQLite and HTTP on one machine.

pub mod event_log;
pub mod fs_store;
pub mod http_endpoint;
pub mod inbox_watcher;
pub mod sqlite_queue;
pub mod webhook;
