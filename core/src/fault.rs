//! Whose fault an error is decides what happens to the message that met it. The one table, used
//! by ingest, the worker, the pollers and both Lambda functions:
//!
//! | error | whose | what happens |
//! | --- | --- | --- |
//! | a read of a buyer's request or input object answered about that object: not found, too large, not a regular file, refused ([`Error::Unreadable`]: S3's 403, `InvalidObjectState`, a KMS refusal, a checksum mismatch; permission denied on a file system) | the request's | its outcome at once, with the reason from [`answer_for_read`] |
//! | the model refused the input (4xx), failed on it (424), answered too much; the payload is over the limit | the request's | a failure document at once |
//! | our own storage, queues or notifier (5xx, throttling, timeouts, connection errors, a full disk, the queue database) | ours | the message is held (kept invisible) and retried, spending no receive |
//! | the endpoint throttling, not ready, timing out or 5xx; a background task failing | the service's | backed off with jitter, a receive spent each time; too many go to the dead-letter queue |
//! | a queue message that is not contract v1 (an inbox event or job nobody can read) | nobody's | left to the dead-letter queue, where an operator sees it |
//!
//! A fault of the request's is never held: no buyer's object can keep a place another buyer's
//! work needs.

use crate::Error;
use crate::contract::{Reason, Violation};

/// Whose fault an error is (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    /// About one buyer's request or its objects, and waiting will not change it: that request's
    /// answer, never held.
    Request,
    /// Our own storage, queues or notifier: held and retried without spending receives.
    Ours,
    /// The model endpoint or a task of ours: retried with jittered backoff, spending receives.
    Service,
}

/// Which of a buyer's objects a read was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyerObject {
    /// The request object (`<buyer>/requests/<id>.json`).
    Request,
    /// The input object `input.s3_key` names (`<buyer>/inputs/...`).
    Input,
}

impl BuyerObject {
    /// The request object's member (or the whole object) a violation names.
    fn field(self) -> &'static str {
        match self {
            BuyerObject::Request => "request",
            BuyerObject::Input => "input.s3_key",
        }
    }
}

/// The table for an error of reading one of a buyer's objects at `key`: `Ok` with the request's
/// permanent answer when the error is about that object, `Err` with the error itself when it
/// says nothing about the object (ours or the service's: [`Error::whose`] tells which).
///
/// A `NotFound` answer names `input_not_found` for both objects; a caller for whom a missing
/// request object means something else (ingest: deleted before it was read) matches it first.
pub fn answer_for_read(e: Error, object: BuyerObject, key: &str) -> Result<Violation, Error> {
    let by_object = |request, input| match object {
        BuyerObject::Request => request,
        BuyerObject::Input => input,
    };
    let field = object.field();
    let violation = match e {
        Error::NotFound { .. } => {
            Violation::new(Reason::InputNotFound, field, format!("no object at {key}"))
        }
        Error::TooLarge { size, limit, .. } => Violation::new(
            by_object(Reason::RequestTooLarge, Reason::InputTooLarge),
            field,
            match object {
                BuyerObject::Request => format!("is {size} bytes; must be at most {limit}"),
                BuyerObject::Input => {
                    format!("{size} bytes is over the endpoint limit of {limit}; use split: line")
                }
            },
        ),
        Error::NotAFile { what, .. } => Violation::new(
            by_object(Reason::RequestNotAFile, Reason::InputNotAFile),
            field,
            format!("{key} is {what}, not a regular file"),
        ),
        Error::InvalidKey { rule, .. } => Violation::new(
            by_object(Reason::RequestNotAFile, Reason::InputNotAFile),
            field,
            format!("{key}: {rule}"),
        ),
        Error::Unreadable { why, .. } => Violation::new(
            by_object(Reason::RequestUnreadable, Reason::InputUnreadable),
            field,
            format!("{key} cannot be read: {why}"),
        ),
        other => return Err(other),
    };
    Ok(violation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreadable() -> Error {
        Error::Unreadable {
            bucket: "inbox".into(),
            key: "b/inputs/x".into(),
            why: "403 AccessDenied".into(),
        }
    }

    #[test]
    fn a_refused_read_of_a_buyers_object_is_that_requests_answer() {
        let v = answer_for_read(unreadable(), BuyerObject::Input, "b/inputs/x").unwrap();
        assert_eq!(v.reason, Reason::InputUnreadable);
        assert_eq!(v.field, "input.s3_key");
        assert!(v.rule.contains("403 AccessDenied"), "{}", v.rule);
        let v = answer_for_read(unreadable(), BuyerObject::Request, "b/requests/r.json").unwrap();
        assert_eq!(v.reason, Reason::RequestUnreadable);
    }

    #[test]
    fn every_answer_about_the_object_names_its_reason() {
        let (bucket, key) = ("inbox".to_owned(), "k".to_owned());
        let errors = || {
            [
                Error::NotFound {
                    bucket: bucket.clone(),
                    key: key.clone(),
                },
                Error::TooLarge {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    size: 9,
                    limit: 1,
                },
                Error::NotAFile {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    what: "a FIFO",
                },
                Error::InvalidKey {
                    key: key.clone(),
                    rule: "must not be empty",
                },
            ]
        };
        let expected = [
            (Reason::InputNotFound, Reason::InputNotFound),
            (Reason::RequestTooLarge, Reason::InputTooLarge),
            (Reason::RequestNotAFile, Reason::InputNotAFile),
            (Reason::RequestNotAFile, Reason::InputNotAFile),
        ];
        let as_request = errors().map(|e| answer_for_read(e, BuyerObject::Request, "k"));
        let as_input = errors().map(|e| answer_for_read(e, BuyerObject::Input, "k"));
        for (i, e) in errors().iter().enumerate() {
            assert_eq!(e.whose(), Whose::Request, "{e}");
            assert_eq!(as_request[i].as_ref().unwrap().reason, expected[i].0, "{e}");
            assert_eq!(as_input[i].as_ref().unwrap().reason, expected[i].1, "{e}");
        }
    }

    #[test]
    fn faults_that_say_nothing_about_the_object_are_not_answers() {
        let ours = Error::storage("reading s3://inbox/k", "503 SlowDown");
        assert_eq!(ours.whose(), Whose::Ours);
        assert!(matches!(
            answer_for_read(ours, BuyerObject::Input, "k"),
            Err(Error::Storage { .. })
        ));
        let io = Error::io("reading", std::io::Error::other("disk full"));
        assert!(answer_for_read(io, BuyerObject::Request, "k").is_err());
        let service = Error::EndpointUnavailable {
            message: "throttled".into(),
            retry_after: None,
        };
        assert_eq!(service.whose(), Whose::Service);
        assert!(answer_for_read(service, BuyerObject::Input, "k").is_err());
    }

    #[test]
    fn a_refused_object_is_never_held() {
        let e = unreadable();
        assert_eq!(e.whose(), Whose::Request);
        assert!(!e.is_own_storage());
        assert!(!e.is_retryable());
    }
}
