//! The error type at the boundary of the ports: each variant is a reason an operator can act on.

use std::time::Duration;

pub use crate::fault::Whose;

/// Errors returned by ports and their adapters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist.
    #[error("no object at {bucket}/{key}")]
    NotFound {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// A create-if-absent write found an object already there.
    #[error("an object already exists at {bucket}/{key}")]
    AlreadyExists {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// The object is larger than the caller allows.
    #[error("object {bucket}/{key} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The key or bucket name is not acceptable.
    #[error("invalid key {key:?}: {rule}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The object is not a regular file: a symbolic link, a FIFO, a folder or a device
    /// (embedded store only; permanent, and refused without blocking).
    #[error("{bucket}/{key} is not a regular file: {what}")]
    NotAFile {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// What it is instead.
        what: &'static str,
    },
    /// The store will not hand this object over, for a reason about the object that waiting
    /// will not change: S3's 403 (access denied, a storage class that keeps it from being read),
    /// 400 `InvalidObjectState`, a KMS key the reader may not use, a checksum mismatch; on a file
    /// system, permission denied. Permanent (see [`crate::fault`]).
    #[error("{bucket}/{key} cannot be read: {why}")]
    Unreadable {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// What the store answered.
        why: String,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The pipeline's own storage or messaging service failed (the queue database, a bucket, a
    /// queue or topic service): nothing about the job, so it is retried.
    #[error("{context}: {source}")]
    Storage {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A message or document could not be encoded or decoded.
    #[error("{context}: {source}")]
    Json {
        /// What was being encoded or decoded.
        context: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The endpoint answered 4xx: the input is not something the model accepts (permanent).
    #[error("model rejected the input with status {status}: {message}")]
    ModelRejected {
        /// Original HTTP status from the container.
        status: u16,
        /// The container's message.
        message: String,
    },
    /// The model failed on this input for a reason of its own (`424`; SageMaker's `ModelError`
    /// status): permanent, and not the input's fault.
    #[error("model failed with status {status}: {message}")]
    ModelFailed {
        /// Original HTTP status from the container.
        status: u16,
        /// The container's message.
        message: String,
    },
    /// The model answered more than the caller accepts (permanent: it would answer the same).
    #[error("the model answered more than {limit} bytes")]
    ResponseTooLarge {
        /// The cap.
        limit: u64,
    },
    /// The endpoint is throttling, not ready, timing out or answering 5xx (retryable).
    #[error("endpoint unavailable: {message}")]
    EndpointUnavailable {
        /// What happened.
        message: String,
        /// How long the endpoint asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The payload exceeds the endpoint's limit.
    #[error("payload of {size} bytes exceeds the endpoint limit of {limit}")]
    PayloadTooLarge {
        /// Payload size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A notification could not be delivered.
    #[error("notification not delivered: {0}")]
    Notify(String),
    /// A background task stopped unexpectedly.
    #[error("background task failed: {0}")]
    Task(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a fault of the pipeline's own storage with what was being done.
    pub fn storage(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Storage {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Wraps a JSON error with what was being encoded or decoded.
    pub fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            context: context.into(),
            source,
        }
    }

    /// Whose fault this error is, and so what happens to the message that met it: the one table
    /// of [`crate::fault`].
    pub fn whose(&self) -> Whose {
        match self {
            Error::Io { .. } | Error::Storage { .. } | Error::Notify(_) => Whose::Ours,
            Error::EndpointUnavailable { .. } | Error::Task(_) => Whose::Service,
            Error::NotFound { .. }
            | Error::AlreadyExists { .. }
            | Error::TooLarge { .. }
            | Error::InvalidKey { .. }
            | Error::NotAFile { .. }
            | Error::Unreadable { .. }
            | Error::Json { .. }
            | Error::ModelRejected { .. }
            | Error::ModelFailed { .. }
            | Error::ResponseTooLarge { .. }
            | Error::PayloadTooLarge { .. } => Whose::Request,
        }
    }

    /// True for a fault of the pipeline's own storage (files, queue database, event log, an
    /// AWS storage or messaging service): nothing about the job, so holding the job and trying
    /// again must not count against it.
    pub fn is_own_storage(&self) -> bool {
        self.whose() == Whose::Ours
    }

    /// True if trying again later can succeed (transient storage, queue or endpoint faults).
    pub fn is_retryable(&self) -> bool {
        self.whose() != Whose::Request
    }
}

/// Result with the port error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
