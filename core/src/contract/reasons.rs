//! Why a request was rejected or failed: the stable reason codes, and the violation that
//! names one with the member at fault.

use super::*;

/// Why a request was rejected or failed: a stable, machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The request object is larger than 1 MiB.
    RequestTooLarge,
    /// The request object is not valid JSON or has unknown or mistyped members.
    MalformedJson,
    /// `version` is not 1.
    UnsupportedVersion,
    /// `request_id` breaks its rule.
    InvalidRequestId,
    /// `request_id` differs from the object's file name.
    RequestIdMismatch,
    /// The buyer prefix is not a valid buyer id.
    InvalidBuyer,
    /// No token.
    TokenMissing,
    /// The token is not a well-formed JWT.
    TokenMalformed,
    /// The token header says `alg: none`.
    TokenAlgNone,
    /// The token is HMAC-signed.
    TokenAlgHmac,
    /// The token's `alg` is not its key's algorithm.
    TokenAlgMismatch,
    /// The token's `kid` is absent or not in the keyset.
    TokenUnknownKid,
    /// The signature does not verify.
    TokenBadSignature,
    /// The token has expired.
    TokenExpired,
    /// The token is not valid yet.
    TokenNotYetValid,
    /// `aud` is not this product.
    TokenWrongAudience,
    /// `iss` is not the seller.
    TokenWrongIssuer,
    /// `sub` is not the buyer prefix the object was written under.
    TokenSubjectMismatch,
    /// A required claim is missing or mistyped.
    TokenMissingClaim,
    /// `scope` does not contain `invoke`.
    TokenScopeMissing,
    /// The token lives longer than 12 hours.
    TokenLifetimeTooLong,
    /// The key that signed the token was revoked.
    TokenKeyRevoked,
    /// The buyer's subscription was revoked after the token was issued.
    TokenBuyerRevoked,
    /// The request object carries no token and the token service refused the one the buyer's
    /// stack asks for with its own AWS identity (`TokenSource: iam`).
    TokenRefused,
    /// The verifier's copy of the seller's published keys is older than its allowed staleness.
    SigningKeysStale,
    /// `input` does not hold exactly one of `text`, `base64`, `s3_key`.
    InputInvalid,
    /// `input.base64` is not valid base64.
    InputBase64Invalid,
    /// Inline input larger than the inline cap.
    InputInlineTooLarge,
    /// `input.s3_key` is not under the buyer's own `inputs/` prefix.
    InputOutsidePrefix,
    /// `input.s3_key` names no object.
    InputNotFound,
    /// The input is larger than the endpoint payload limit and not split.
    InputTooLarge,
    /// `content_type` or `accept` is not a MIME type.
    InvalidMediaType,
    /// `custom_attributes` is too long or not printable ASCII.
    InvalidCustomAttributes,
    /// `ttl_seconds` is outside 60-21600.
    InvalidTtl,
    /// The request waited past its deadline.
    DeadlineExceeded,
    /// The model answered 4xx: the input is not something it accepts.
    ModelRejectedInput,
    /// The model kept failing or the endpoint was unavailable for too long.
    EndpointFailed,
    /// The job message could not be understood.
    MalformedJob,
    /// The request object is not a regular file (embedded only: a symbolic link, a FIFO, a
    /// folder, or a file reached through a linked folder; S3 cannot hold such objects).
    RequestNotAFile,
    /// `input.s3_key` names something that is not a regular file (embedded only, as above).
    InputNotAFile,
    /// The request object was replaced after its job had claimed the request id and before the
    /// job could read it again: the version that claimed the id can no longer be answered.
    RequestReplaced,
    /// The model failed on this input for a reason that is its own, not the input's
    /// (`424 Failed Dependency`, SageMaker's `ModelError` status).
    ModelError,
    /// The model's answer is larger than the worker accepts.
    ModelResponseTooLarge,
    /// The store will not hand over the request object (S3's 403, `InvalidObjectState`, a KMS
    /// key the function may not use, a checksum mismatch; permission denied on a file system).
    RequestUnreadable,
    /// The store will not hand over the input object, for the same reasons.
    InputUnreadable,
}

impl Reason {
    /// The snake_case code written in documents and notifications.
    pub fn code(self) -> &'static str {
        match self {
            Reason::RequestTooLarge => "request_too_large",
            Reason::MalformedJson => "malformed_json",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::InvalidRequestId => "invalid_request_id",
            Reason::RequestIdMismatch => "request_id_mismatch",
            Reason::InvalidBuyer => "invalid_buyer",
            Reason::TokenMissing => "token_missing",
            Reason::TokenMalformed => "token_malformed",
            Reason::TokenAlgNone => "token_alg_none",
            Reason::TokenAlgHmac => "token_alg_hmac",
            Reason::TokenAlgMismatch => "token_alg_mismatch",
            Reason::TokenUnknownKid => "token_unknown_kid",
            Reason::TokenBadSignature => "token_bad_signature",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenWrongAudience => "token_wrong_audience",
            Reason::TokenWrongIssuer => "token_wrong_issuer",
            Reason::TokenSubjectMismatch => "token_subject_mismatch",
            Reason::TokenMissingClaim => "token_missing_claim",
            Reason::TokenScopeMissing => "token_scope_missing",
            Reason::TokenLifetimeTooLong => "token_lifetime_too_long",
            Reason::TokenKeyRevoked => "token_key_revoked",
            Reason::TokenBuyerRevoked => "token_buyer_revoked",
            Reason::TokenRefused => "token_refused",
            Reason::SigningKeysStale => "signing_keys_stale",
            Reason::InputInvalid => "input_invalid",
            Reason::InputBase64Invalid => "input_base64_invalid",
            Reason::InputInlineTooLarge => "input_inline_too_large",
            Reason::InputOutsidePrefix => "input_outside_prefix",
            Reason::InputNotFound => "input_not_found",
            Reason::InputTooLarge => "input_too_large",
            Reason::InvalidMediaType => "invalid_media_type",
            Reason::InvalidCustomAttributes => "invalid_custom_attributes",
            Reason::InvalidTtl => "invalid_ttl",
            Reason::DeadlineExceeded => "deadline_exceeded",
            Reason::ModelRejectedInput => "model_rejected_input",
            Reason::EndpointFailed => "endpoint_failed",
            Reason::MalformedJob => "malformed_job",
            Reason::RequestNotAFile => "request_not_a_file",
            Reason::InputNotAFile => "input_not_a_file",
            Reason::RequestReplaced => "request_replaced",
            Reason::ModelError => "model_error",
            Reason::ModelResponseTooLarge => "model_response_too_large",
            Reason::RequestUnreadable => "request_unreadable",
            Reason::InputUnreadable => "input_unreadable",
        }
    }
}

impl Reason {
    /// One line telling the buyer what to do about a request answered with this reason (the
    /// `hint` of its outcome document). Every outcome spends its request id: the fix always
    /// goes out under a new one.
    pub fn hint(self) -> &'static str {
        match self {
            Reason::RequestTooLarge => {
                "keep the request object under 1 MiB: put large inputs under inputs/ and name them with input.s3_key"
            }
            Reason::MalformedJson => {
                "fix the member named in field (docs/CONTRACT.md lists every member), then resubmit under a new request id"
            }
            Reason::UnsupportedVersion => "set \"version\": 1 and resubmit under a new request id",
            Reason::InvalidRequestId | Reason::RequestIdMismatch => {
                "name the object <buyer>/requests/<request_id>.json with request_id 1-64 of [A-Za-z0-9._-]"
            }
            Reason::InvalidBuyer => {
                "write under a prefix that is your buyer id (1-64 of [A-Za-z0-9._-])"
            }
            Reason::TokenMissing
            | Reason::TokenMalformed
            | Reason::TokenAlgNone
            | Reason::TokenAlgHmac
            | Reason::TokenAlgMismatch
            | Reason::TokenBadSignature
            | Reason::TokenMissingClaim
            | Reason::TokenScopeMissing
            | Reason::TokenLifetimeTooLong => {
                "send the JWT exactly as the token service issued it (no `Bearer ` prefix), then resubmit under a new request id"
            }
            Reason::TokenUnknownKid | Reason::TokenKeyRevoked => {
                "get a fresh token (`sealbox buyer token --fresh`) and resubmit under a new request id"
            }
            Reason::TokenExpired | Reason::TokenNotYetValid => {
                "get a fresh token (`sealbox buyer token --fresh`), check this machine's clock, and resubmit under a new request id"
            }
            Reason::TokenWrongAudience | Reason::TokenWrongIssuer => {
                "get the token from this product's seller (its token service) and resubmit under a new request id"
            }
            Reason::TokenSubjectMismatch => {
                "write under the prefix of the buyer the token names (its sub claim), or get a token for this buyer"
            }
            Reason::TokenBuyerRevoked => {
                "the subscription was revoked or expired: ask the seller to renew it, then get a new token"
            }
            Reason::TokenRefused => {
                "the seller's token service refused this stack's AWS account (detail says why): ask the seller to grant the account, or put a token in the request object; then resubmit under a new request id"
            }
            Reason::SigningKeysStale => {
                "the seller's published keys cannot be read: resubmit under a new request id once they can"
            }
            Reason::InputInvalid => "give exactly one of input.text, input.base64 or input.s3_key",
            Reason::InputBase64Invalid => {
                "encode input.base64 with the standard alphabet, with padding"
            }
            Reason::InputInlineTooLarge => {
                "upload inputs over 256 KiB under <buyer>/inputs/ and name them with input.s3_key"
            }
            Reason::InputOutsidePrefix => {
                "upload the input under your own <buyer>/inputs/ and name that key"
            }
            Reason::InputNotFound => {
                "upload the input before the request object, and keep it until the request is answered"
            }
            Reason::InputTooLarge => {
                "split the input (\"split\": \"line\", or `--split-lines`) or make it smaller than the endpoint payload limit"
            }
            Reason::InvalidMediaType => "give content_type and accept as MIME types, e.g. text/csv",
            Reason::InvalidCustomAttributes => {
                "keep custom_attributes to at most 1024 printable ASCII characters"
            }
            Reason::InvalidTtl => "give ttl_seconds between 60 and 21600, or leave it out",
            Reason::DeadlineExceeded => {
                "the backlog outlived ttl_seconds: resubmit under a new request id, with a longer ttl_seconds if needed"
            }
            Reason::ModelRejectedInput => {
                "the model refused this input: check its format against the model's documentation"
            }
            Reason::ModelError => {
                "the model failed on this input: resubmit under a new request id, or ask the seller"
            }
            Reason::ModelResponseTooLarge => {
                "split the input (\"split\": \"line\") so each answer is smaller"
            }
            Reason::EndpointFailed | Reason::MalformedJob => {
                "resubmit under a new request id; if it happens again, tell the operator"
            }
            Reason::RequestNotAFile => {
                "place the request object as a regular file, not a link, FIFO or folder"
            }
            Reason::InputNotAFile => {
                "place the input as a regular file, not a link, FIFO or folder"
            }
            Reason::RequestReplaced => {
                "a request object is answered once: send new content under a new request id"
            }
            Reason::RequestUnreadable | Reason::InputUnreadable => {
                "store the object where the pipeline can read it (standard storage class, the stack's KMS key, no policy denying the function) and resubmit under a new request id"
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A request that broke a rule: the reason code, the field and the rule in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule} ({reason})")]
pub struct Violation {
    /// Machine-readable reason.
    pub reason: Reason,
    /// The JSON field (dotted path) that broke the rule, or `request` for the whole object.
    pub field: String,
    /// The rule, in words.
    pub rule: String,
}

impl Violation {
    /// A violation of `rule` by `field`.
    pub fn new(reason: Reason, field: impl Into<String>, rule: impl Into<String>) -> Self {
        Violation {
            reason,
            field: field.into(),
            rule: rule.into(),
        }
    }
}
