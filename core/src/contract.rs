//! Wire contract v1: request objects, job messages, notifications, outcome documents and the
//! bucket layout. Everything that crosses a process or account boundary is defined here.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ports::object_store::Metadata;

/// The only contract version this build speaks.
pub const CONTRACT_VERSION: u32 = 1;
/// Largest request object accepted (1 MiB).
pub const MAX_REQUEST_OBJECT_BYTES: u64 = 1024 * 1024;
/// Largest inline input (`text` or decoded `base64`) accepted inside a request object.
pub const MAX_INLINE_INPUT_BYTES: usize = 256 * 1024;
/// Default endpoint payload limit (SageMaker real-time endpoints accept 6 MB).
pub const DEFAULT_PAYLOAD_LIMIT: u64 = 6 * 1000 * 1000;
/// Longest `custom_attributes` value (SageMaker's limit).
pub const MAX_CUSTOM_ATTRIBUTES: usize = 1024;
/// Smallest and largest `ttl_seconds`, and the default.
pub const TTL_RANGE: std::ops::RangeInclusive<u32> = 60..=21_600;
/// Default time to live of a request, in seconds.
pub const DEFAULT_TTL_SECONDS: u32 = 21_600;
/// Longest `request_id` and buyer id.
pub const MAX_ID_LEN: usize = 64;

/// The request object a buyer drops at `<buyer>/requests/<request_id>.json` in the inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestObject {
    /// Contract version; must be 1.
    pub version: u32,
    /// Idempotency key per buyer: 1-64 of `[A-Za-z0-9._-]`.
    pub request_id: String,
    /// Seller-signed JWT.
    #[serde(default)]
    pub token: Option<String>,
    /// Where the input is: exactly one of `text`, `base64`, `s3_key`.
    pub input: InputSpec,
    /// MIME type of the input, passed to the endpoint as `Content-Type`.
    pub content_type: String,
    /// MIME type wanted back, passed to the endpoint as `Accept`.
    pub accept: String,
    /// Passed to the endpoint as `X-Amzn-SageMaker-Custom-Attributes`.
    #[serde(default)]
    pub custom_attributes: Option<String>,
    /// Seconds the request may wait before it fails with `deadline_exceeded`.
    #[serde(default)]
    pub ttl_seconds: Option<u32>,
    /// How the input is cut into invocations.
    #[serde(default)]
    pub split: Split,
}

/// The `input` member of a request object, as written (validated by [`RequestObject::validate`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Inline UTF-8 input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Inline binary input, standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// Key of an input object under the buyer's own `inputs/` prefix in the inbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_key: Option<String>,
}

/// How an input is cut into invocations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// One invocation with the whole input.
    #[default]
    None,
    /// Records are lines, batched up to the payload limit; outputs are joined line by line.
    Line,
}

/// A validated input.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Inline bytes (from `text` or `base64`).
    Inline(Vec<u8>),
    /// An object in the inbox under `<buyer>/inputs/`.
    Object(String),
}

/// A request object that passed every check that needs no token and no I/O.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    /// The request id.
    pub request_id: String,
    /// The token, not verified; `None` when absent or blank.
    pub token: Option<String>,
    /// The input.
    pub input: Input,
    /// Input MIME type.
    pub content_type: String,
    /// Output MIME type.
    pub accept: String,
    /// Custom attributes for the endpoint.
    pub custom_attributes: Option<String>,
    /// Time to live in seconds.
    pub ttl_seconds: u32,
    /// Split mode.
    pub split: Split,
}

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

/// True if `id` is 1-64 characters of `[A-Za-z0-9._-]` and not `.` or `..`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_media_type(s: &str) -> bool {
    // type "/" subtype, optional parameters; tokens per RFC 9110 (loosely).
    let main = s.split(';').next().unwrap_or("").trim();
    let mut parts = main.splitn(2, '/');
    let tok = |t: Option<&str>| {
        t.is_some_and(|t| {
            !t.is_empty()
                && t.len() <= 127
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+*".contains(&b) || b == b'\'')
        })
    };
    // Parameters are passed on as a header value: visible ASCII, space and tab only.
    let header_safe = s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
    s.len() <= 256 && header_safe && tok(parts.next()) && tok(parts.next())
}

impl RequestObject {
    /// Parses a request object, naming the rule a malformed one breaks.
    pub fn parse(bytes: &[u8]) -> Result<RequestObject, Violation> {
        use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
        use serde_json::map::Entry;
        use serde_json::{Map, Value};

        /// Builds the same `Value` as `Value::deserialize`, but fails on a member name seen
        /// twice in one object. On that failure it leaves the path to the duplicate in `.0`,
        /// innermost segment first (each enclosing object or array adds its own on the way out).
        struct UniqueMembers<'a>(&'a mut Option<Vec<String>>);

        /// One path segment: `.name` (escaped, cut to 64 characters: the name is the sender's)
        /// or `[index]`.
        fn member(name: &str) -> String {
            let mut s = String::from(".");
            s.extend(name.chars().take(64).flat_map(char::escape_debug));
            if name.chars().nth(64).is_some() {
                s.push('…');
            }
            s
        }

        impl<'de> DeserializeSeed<'de> for UniqueMembers<'_> {
            type Value = Value;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                d.deserialize_any(self)
            }
        }

        impl<'de> Visitor<'de> for UniqueMembers<'_> {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(Value::from(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                // As serde_json does: a non-finite float (which JSON cannot spell) is null.
                Ok(Value::from(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::String(v))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                loop {
                    match seq.next_element_seed(UniqueMembers(&mut *self.0)) {
                        Ok(Some(v)) => items.push(v),
                        Ok(None) => return Ok(Value::Array(items)),
                        Err(e) => {
                            if let Some(path) = self.0.as_mut() {
                                path.push(format!("[{}]", items.len()));
                            }
                            return Err(e);
                        }
                    }
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut members = Map::new();
                while let Some(name) = map.next_key::<String>()? {
                    match members.entry(name) {
                        Entry::Occupied(seen) => {
                            *self.0 = Some(vec![member(seen.key())]);
                            return Err(de::Error::custom("duplicate member"));
                        }
                        Entry::Vacant(slot) => {
                            match map.next_value_seed(UniqueMembers(&mut *self.0)) {
                                Ok(v) => {
                                    slot.insert(v);
                                }
                                Err(e) => {
                                    if let Some(path) = self.0.as_mut() {
                                        path.push(member(slot.key()));
                                    }
                                    return Err(e);
                                }
                            }
                        }
                    }
                }
                Ok(Value::Object(members))
            }
        }

        if bytes.len() as u64 > MAX_REQUEST_OBJECT_BYTES {
            return Err(Violation::new(
                Reason::RequestTooLarge,
                "request",
                format!("must be at most {MAX_REQUEST_OBJECT_BYTES} bytes"),
            ));
        }
        // serde_json keeps the last of two members with one name, where another reader may keep
        // the first: `{"token": A, "token": B}` must not mean B here and A elsewhere. The check
        // rides along the one parse into a `Value` (no second pass over up to 1 MiB).
        let mut duplicate = None;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed = UniqueMembers(&mut duplicate)
            .deserialize(&mut de)
            .and_then(|v| de.end().map(|()| v));
        let value = match (parsed, duplicate) {
            (Ok(value), _) => value,
            (Err(_), Some(path)) => {
                let field: String = path.iter().rev().map(String::as_str).collect();
                let name = path
                    .first()
                    .map_or("", |s| s.strip_prefix('.').unwrap_or(s));
                return Err(Violation::new(
                    Reason::MalformedJson,
                    field.strip_prefix('.').unwrap_or(&field),
                    format!("duplicate member `{name}`: each member may appear only once"),
                ));
            }
            (Err(e), None) => {
                return Err(Violation::new(
                    Reason::MalformedJson,
                    "request",
                    format!("must be JSON: {e}"),
                ));
            }
        };
        // Check the version before the full shape, so a v2 object gets the right reason.
        match value.get("version") {
            Some(v) if v.as_u64() == Some(u64::from(CONTRACT_VERSION)) => {}
            Some(v) => {
                return Err(Violation::new(
                    Reason::UnsupportedVersion,
                    "version",
                    format!("must be {CONTRACT_VERSION}, got {v}"),
                ));
            }
            None => {
                return Err(Violation::new(
                    Reason::UnsupportedVersion,
                    "version",
                    "is required",
                ));
            }
        }
        serde_json::from_value(value).map_err(|e| {
            Violation::new(
                Reason::MalformedJson,
                "request",
                format!("must match contract v1: {e}"),
            )
        })
    }

    /// Checks every rule that needs neither the token's signature nor I/O.
    /// `buyer` is the prefix the object was written under; `name` its file name without `.json`.
    pub fn validate(&self, buyer: &str, name: &str) -> Result<ValidRequest, Violation> {
        if !is_valid_id(&self.request_id) {
            return Err(Violation::new(
                Reason::InvalidRequestId,
                "request_id",
                "must be 1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        if self.request_id != name {
            return Err(Violation::new(
                Reason::RequestIdMismatch,
                "request_id",
                format!("must equal the object name `{name}`"),
            ));
        }
        // Absent (or blank) is ingest's to judge: `token_missing`, unless the buyer's stack gets
        // tokens with its own AWS identity (`TokenSource: iam`).
        let token = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let input = self.validate_input(buyer)?;
        for (field, v) in [
            ("content_type", &self.content_type),
            ("accept", &self.accept),
        ] {
            if !is_media_type(v) {
                return Err(Violation::new(
                    Reason::InvalidMediaType,
                    field,
                    "must be a MIME type such as text/csv",
                ));
            }
        }
        if let Some(ca) = &self.custom_attributes
            && (ca.len() > MAX_CUSTOM_ATTRIBUTES || !ca.bytes().all(|b| (0x20..0x7f).contains(&b)))
        {
            return Err(Violation::new(
                Reason::InvalidCustomAttributes,
                "custom_attributes",
                format!("must be at most {MAX_CUSTOM_ATTRIBUTES} printable ASCII characters"),
            ));
        }
        let ttl_seconds = self.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
        if !TTL_RANGE.contains(&ttl_seconds) {
            return Err(Violation::new(
                Reason::InvalidTtl,
                "ttl_seconds",
                format!(
                    "must be between {} and {}",
                    TTL_RANGE.start(),
                    TTL_RANGE.end()
                ),
            ));
        }
        Ok(ValidRequest {
            request_id: self.request_id.clone(),
            token,
            input,
            content_type: self.content_type.clone(),
            accept: self.accept.clone(),
            custom_attributes: self.custom_attributes.clone(),
            ttl_seconds,
            split: self.split,
        })
    }

    fn validate_input(&self, buyer: &str) -> Result<Input, Violation> {
        let i = &self.input;
        let given = [i.text.is_some(), i.base64.is_some(), i.s3_key.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given != 1 {
            return Err(Violation::new(
                Reason::InputInvalid,
                "input",
                "must hold exactly one of text, base64, s3_key",
            ));
        }
        let too_large = |field: &str| {
            Violation::new(
                Reason::InputInlineTooLarge,
                field,
                format!(
                    "inline input must be at most {MAX_INLINE_INPUT_BYTES} bytes; upload it under inputs/ and use s3_key"
                ),
            )
        };
        if let Some(text) = &i.text {
            if text.len() > MAX_INLINE_INPUT_BYTES {
                return Err(too_large("input.text"));
            }
            return Ok(Input::Inline(text.as_bytes().to_vec()));
        }
        if let Some(b64) = &i.base64 {
            // Cheap bound first, so a huge string is not decoded.
            if b64.len() > MAX_INLINE_INPUT_BYTES / 3 * 4 + 4 {
                return Err(too_large("input.base64"));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| {
                    Violation::new(
                        Reason::InputBase64Invalid,
                        "input.base64",
                        format!("must be standard base64: {e}"),
                    )
                })?;
            if bytes.len() > MAX_INLINE_INPUT_BYTES {
                return Err(too_large("input.base64"));
            }
            return Ok(Input::Inline(bytes));
        }
        let key = i.s3_key.as_deref().unwrap_or_default();
        let prefix = format!("{buyer}/inputs/");
        if !key.starts_with(&prefix)
            || key.len() == prefix.len()
            || crate::layout::check_key(key).is_err()
        {
            return Err(Violation::new(
                Reason::InputOutsidePrefix,
                "input.s3_key",
                format!("must be an object key under `{prefix}`"),
            ));
        }
        Ok(Input::Object(key.to_owned()))
    }
}

/// Largest job message that carries its inline input ([`InputRef::Carried`]): SQS bills each
/// 64 KiB of a message as one request, so a larger input is read from the request object instead.
pub const MAX_CARRYING_JOB_BYTES: usize = 64 * 1024;

/// Where the worker finds the input of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputRef {
    /// Inline in the request object (re-read by the worker, pinned by the job's ETag).
    Inline,
    /// Inline, carried in the job message itself: the bytes ingest authorized, so the worker
    /// reads nothing before invoking. Exactly one of the two members is set.
    Carried {
        /// The input, when it is UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The input in standard base64, when it is not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
    },
    /// An input object in the inbox.
    Object {
        /// Its key.
        key: String,
    },
}

impl InputRef {
    /// The input carried in a job: as text when it is UTF-8, else as base64.
    pub fn carried(bytes: Vec<u8>) -> InputRef {
        match String::from_utf8(bytes) {
            Ok(text) => InputRef::Carried {
                text: Some(text),
                base64: None,
            },
            Err(e) => InputRef::Carried {
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
            },
        }
    }

    /// The bytes of a carried input: `None` for the other kinds, an error naming what is wrong
    /// for a carried input that is not exactly one valid member.
    pub fn carried_bytes(&self) -> Option<Result<Vec<u8>, String>> {
        let InputRef::Carried { text, base64 } = self else {
            return None;
        };
        Some(match (text, base64) {
            (Some(t), None) => Ok(t.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("the carried input is not standard base64: {e}")),
            _ => Err("a carried input holds exactly one of text and base64".to_owned()),
        })
    }

    /// Whether the input is inline in the request (read from it or carried in the job).
    pub fn is_inline(&self) -> bool {
        matches!(self, InputRef::Inline | InputRef::Carried { .. })
    }
}

/// A job on the `jobs` queue: one accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    /// Contract version (1).
    pub version: u32,
    /// Unique per job message (every send of ingest makes a new one): the owner named in the
    /// request's claim. A redelivery carries the same id, so it still owns the claim. Empty in
    /// messages of older builds; [`JobMessage::owner`] then derives one from the message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_id: String,
    /// Buyer id.
    pub buyer: String,
    /// Request id.
    pub request_id: String,
    /// Key of the request object in the inbox.
    pub request_key: String,
    /// ETag of the request object that was authorized.
    pub request_etag: String,
    /// Where the input is.
    pub input: InputRef,
    /// Input MIME type.
    pub content_type: String,
    /// Output MIME type.
    pub accept: String,
    /// Custom attributes for the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_attributes: Option<String>,
    /// Split mode.
    #[serde(default)]
    pub split: Split,
    /// When the request object landed in the inbox.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// When ingest accepted it.
    #[serde(with = "time::serde::rfc3339")]
    pub accepted_at: OffsetDateTime,
    /// After this the job fails with `deadline_exceeded`.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
}

impl JobMessage {
    /// A fresh random job id (128 bits, hex).
    pub fn new_job_id() -> String {
        let mut bytes = [0u8; 16];
        // The system's random source does not fail on Linux once booted; a fixed fallback
        // only costs uniqueness, which the time below restores.
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            let t = OffsetDateTime::now_utc()
                .unix_timestamp_nanos()
                .to_le_bytes();
            bytes.copy_from_slice(&t);
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The job id of the `index`-th event of the queue message `message_id`: the same on every
    /// delivery of that message (128 bits of a SHA-256, hex). For a job run straight from its
    /// inbox event, so that a rerun of the event after a crash still owns the claim it made.
    pub fn job_id_for_event(message_id: &str, index: usize) -> String {
        let seed = format!("{message_id}#{index}");
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
        d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The owner this job names in a claim: `job:<job_id>`.
    pub fn owner(&self) -> String {
        if self.job_id.is_empty() {
            // A message of an older build: stable across its redeliveries all the same.
            let seed = format!(
                "{}|{}|{}",
                self.request_key,
                self.request_etag,
                rfc3339(self.accepted_at)
            );
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
            let h: String = d.as_ref()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            return format!("job:{h}");
        }
        format!("job:{}", self.job_id)
    }
}

/// The claim of a request id (`<buyer>/claims/<request_id>.json` in the outbox), created with
/// create-new (`If-None-Match: *`) before any outcome of the request is written: whoever
/// created it owns the request and is the only one that writes its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimDocument {
    /// Contract version (1).
    pub version: u32,
    /// Buyer id.
    pub buyer: String,
    /// Request id (the object name when the request id itself was unusable).
    pub request_id: String,
    /// Who owns it: `job:<job_id>` (a job and its redeliveries) or `ingest:<etag>` (ingest
    /// rejecting that version of the request object).
    pub owner: String,
    /// ETag of the request object version the owner answers.
    pub request_etag: String,
    /// When the claim was made.
    #[serde(with = "time::serde::rfc3339")]
    pub claimed_at: OffsetDateTime,
    /// An ingest claim carries its whole rejection, so anyone who finds the claim without the
    /// document (the owner died in between) can finish writing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<OutcomeDocument>,
}

/// An inbox event: an object landed in the inbox (what S3 sends to the `inbox-events` queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEvent {
    /// Bucket name.
    pub bucket: String,
    /// Object key, decoded.
    pub key: String,
    /// ETag of the version that was written.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub event_time: OffsetDateTime,
}

/// The kind of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A result object was written.
    InferenceCompleted,
    /// A failure document was written.
    InferenceFailed,
    /// A rejection document was written.
    RequestRejected,
    /// Sent when a subscription is set up.
    TestNotification,
}

impl EventKind {
    /// The name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::InferenceCompleted => "InferenceCompleted",
            EventKind::InferenceFailed => "InferenceFailed",
            EventKind::RequestRejected => "RequestRejected",
            EventKind::TestNotification => "TestNotification",
        }
    }
}

/// A notification to downstream systems (SNS message JSON; one line of `events.ndjson`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Contract version (1).
    pub version: u32,
    /// Stable per outcome: a repeat of the same outcome carries the same id.
    pub event_id: String,
    /// What happened.
    pub event: EventKind,
    /// Buyer id.
    pub buyer: String,
    /// Request id.
    pub request_id: String,
    /// `s3://bucket/key` of the result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_location: Option<String>,
    /// `s3://bucket/key` of the failure or rejection document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_location: Option<String>,
    /// MIME type of the object at the location.
    pub content_type: String,
    /// Size of the object at the location.
    pub bytes: u64,
    /// When the request object landed.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// When the outcome was written.
    #[serde(with = "time::serde::rfc3339")]
    pub completed_at: OffsetDateTime,
    /// Deliveries of the job it took (0 for rejections).
    pub attempts: u32,
    /// Reason code, on failures and rejections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// What the request used of the endpoint (absent for rejections, failures that never
    /// invoked it, and outcomes of older builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// What one request used of the model endpoint, summed over all its invocations (every batch
/// of a split input): what a buyer reconciles the AWS Marketplace bill against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Endpoint calls made, retried calls included.
    pub invocations: u32,
    /// Records scored: the `ConsumedUnits` each successful answer metered, or 1 for an answer
    /// that metered nothing (AWS Marketplace bills one unit per successful answer by default).
    pub records: u64,
    /// True when every successful answer metered its units, so `records` is what the model
    /// metered; false when some answer was counted as 1.
    pub metered: bool,
    /// Payload bytes sent, over every call.
    pub bytes_in: u64,
    /// Bytes answered by successful calls.
    pub bytes_out: u64,
    /// Milliseconds spent inside endpoint calls.
    pub model_ms: u64,
}

impl Usage {
    /// Nothing used yet: no answer has gone unmetered.
    pub fn none() -> Usage {
        Usage {
            metered: true,
            ..Usage::default()
        }
    }

    /// Adds `other` (another request's usage, for totals).
    pub fn add(&mut self, other: &Usage) {
        self.invocations = self.invocations.saturating_add(other.invocations);
        self.records = self.records.saturating_add(other.records);
        self.metered &= other.metered;
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.model_ms = self.model_ms.saturating_add(other.model_ms);
    }
}

/// The user metadata name under which a result object carries its request's [`Usage`]
/// (on S3 the header `x-amz-meta-sealbox-usage`), as compact JSON: the result and its usage
/// are one write, so there is no usage without its result nor a result without its usage.
pub const USAGE_METADATA: &str = "sealbox-usage";

impl Usage {
    /// The result object's metadata carrying this usage.
    pub fn to_metadata(&self) -> Result<Metadata, serde_json::Error> {
        Ok(Metadata::from([(
            USAGE_METADATA.to_owned(),
            serde_json::to_string(self)?,
        )]))
    }

    /// The usage a result object's metadata carries: `None` for results written without it
    /// (older builds), an error for a value that is not a usage.
    pub fn from_metadata(metadata: &Metadata) -> Result<Option<Usage>, serde_json::Error> {
        metadata
            .get(USAGE_METADATA)
            .map(|v| serde_json::from_str(v))
            .transpose()
    }
}

/// The stable event id of the single outcome of (buyer, request_id).
pub fn event_id(buyer: &str, request_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("sealbox/v1/{buyer}/{request_id}").as_bytes(),
    );
    let h: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Which kind of outcome document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    /// Refused by ingest (under `rejected/`).
    Rejected,
    /// Failed in the worker (under `failed/`).
    Failed,
}

/// A rejection or failure document (what `rejected/` and `failed/` hold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeDocument {
    /// Contract version (1).
    pub version: u32,
    /// Buyer id.
    pub buyer: String,
    /// Request id (the object name when the request id itself was unusable).
    pub request_id: String,
    /// Rejected by ingest or failed in the worker.
    pub outcome: OutcomeKind,
    /// Reason code.
    pub reason: Reason,
    /// The field that broke a rule, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What went wrong, in words.
    pub message: String,
    /// What to do about it, in one line ([`Reason::hint`]); absent in documents of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Key of the request object.
    pub request_key: String,
    /// Deliveries of the job (0 for rejections).
    pub attempts: u32,
    /// When the request object landed.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// When this document was written.
    #[serde(with = "time::serde::rfc3339")]
    pub decided_at: OffsetDateTime,
    /// What the request used of the endpoint before it failed (absent when it never invoked
    /// it, in rejections, and in documents of older builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl OutcomeDocument {
    /// A document decided now.
    pub fn new(
        outcome: OutcomeKind,
        buyer: &str,
        request_id: &str,
        request_key: &str,
        violation: &Violation,
    ) -> Self {
        OutcomeDocument {
            version: CONTRACT_VERSION,
            buyer: buyer.to_owned(),
            request_id: request_id.to_owned(),
            outcome,
            reason: violation.reason,
            field: Some(violation.field.clone()).filter(|f| !f.is_empty()),
            message: violation.rule.clone(),
            hint: Some(violation.reason.hint().to_owned()),
            request_key: request_key.to_owned(),
            attempts: 0,
            received_at: OffsetDateTime::now_utc(),
            decided_at: OffsetDateTime::now_utc(),
            usage: None,
        }
    }
}

/// Formats an RFC 3339 timestamp (UTC).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "version": 1, "request_id": "r-1", "token": "t",
            "input": {"text": "5.1,3.5,1.4,0.2"},
            "content_type": "text/csv", "accept": "text/csv"
        })
    }

    fn check(v: serde_json::Value) -> Result<ValidRequest, Violation> {
        RequestObject::parse(&serde_json::to_vec(&v).unwrap_or_default())?.validate("b1", "r-1")
    }

    #[test]
    fn a_minimal_request_is_valid_with_defaults() {
        let r = check(base());
        assert!(
            matches!(&r, Ok(v) if v.ttl_seconds == DEFAULT_TTL_SECONDS && v.split == Split::None),
            "{r:?}"
        );
    }

    #[test]
    fn each_rule_names_its_reason_and_field() {
        let cases: Vec<(serde_json::Value, Reason, &str)> = vec![
            (
                serde_json::json!({"version": 2}),
                Reason::UnsupportedVersion,
                "version",
            ),
            (
                {
                    let mut v = base();
                    v["request_id"] = "a/b".into();
                    v
                },
                Reason::InvalidRequestId,
                "request_id",
            ),
            (
                {
                    let mut v = base();
                    v["input"] = serde_json::json!({"text": "x", "base64": "eA=="});
                    v
                },
                Reason::InputInvalid,
                "input",
            ),
            (
                {
                    let mut v = base();
                    v["input"] = serde_json::json!({"s3_key": "b2/inputs/x"});
                    v
                },
                Reason::InputOutsidePrefix,
                "input.s3_key",
            ),
            (
                {
                    let mut v = base();
                    v["ttl_seconds"] = 5.into();
                    v
                },
                Reason::InvalidTtl,
                "ttl_seconds",
            ),
            (
                {
                    let mut v = base();
                    v["accept"] = "csv".into();
                    v
                },
                Reason::InvalidMediaType,
                "accept",
            ),
            (
                {
                    let mut v = base();
                    v["content_type"] = "text/csv; charset=\u{1}".into();
                    v
                },
                Reason::InvalidMediaType,
                "content_type",
            ),
        ];
        for (v, reason, field) in cases {
            let err = check(v.clone()).err();
            assert_eq!(
                err.as_ref().map(|e| (e.reason, e.field.as_str())),
                Some((reason, field)),
                "{v}"
            );
        }
    }

    /// A minimal valid request object with `extra` spliced in after `version` and `input`'s
    /// members replaced by `input` (raw JSON, so members can be repeated).
    fn raw(extra: &str, input: &str) -> String {
        format!(
            r#"{{"version": 1, {extra} "request_id": "r-1", "token": "t", "input": {{{input}}},
            "content_type": "text/csv", "accept": "text/csv"}}"#
        )
    }

    #[test]
    fn a_member_given_twice_at_any_depth_is_malformed_json_naming_it_and_its_path() {
        let cases = [
            (
                raw(r#""token": "other","#, r#""text": "x""#),
                "token",
                "token",
            ),
            (raw("", r#""text": "x", "text": "y""#), "input.text", "text"),
            (
                raw("", r#""text": "x", "s3_key": "b1/inputs/a", "text": "y""#),
                "input.text",
                "text",
            ),
            // The same name once escaped: serde_json reads both as `token`.
            (
                raw(r#""tok\u0065n": "other","#, r#""text": "x""#),
                "token",
                "token",
            ),
            // Otherwise the last one wins and this reads as an unsupported version.
            (
                raw(r#""version": 2,"#, r#""text": "x""#),
                "version",
                "version",
            ),
            (
                raw(
                    r#""x": [{"a": 1}, {"b": {"a": 1, "a": 2}}],"#,
                    r#""text": "x""#,
                ),
                "x[1].b.a",
                "a",
            ),
        ];
        for (json, field, name) in &cases {
            let err = RequestObject::parse(json.as_bytes()).err();
            assert_eq!(
                err.as_ref().map(|e| (e.reason, e.field.as_str())),
                Some((Reason::MalformedJson, *field)),
                "{json}"
            );
            let rule = err.map(|e| e.rule).unwrap_or_default();
            assert!(
                rule.contains(&format!("duplicate member `{name}`")),
                "{rule}"
            );
        }
    }

    #[test]
    fn the_same_name_in_different_objects_is_not_a_duplicate() {
        let json = r#"{"version": 2, "a": {"k": 1}, "b": {"k": 1}, "c": [{"k": 1}, {"k": 2}]}"#;
        assert_eq!(
            RequestObject::parse(json.as_bytes()).map_err(|e| e.reason),
            Err(Reason::UnsupportedVersion)
        );
        let ok = raw("", r#""text": "x""#);
        assert!(RequestObject::parse(ok.as_bytes()).is_ok(), "{ok}");
    }

    #[test]
    fn a_duplicate_name_is_echoed_escaped_and_cut_short() {
        let long = "k".repeat(100);
        let json = format!(
            r#"{{"version": 1, "a\u001b[31m": 1, "a\u001b[31m": 2, "{long}": 1, "{long}": 2}}"#
        );
        let err = RequestObject::parse(json.as_bytes()).err();
        let (field, rule) = err.map(|e| (e.field, e.rule)).unwrap_or_default();
        assert_eq!(field, r"a\u{1b}[31m");
        assert!(!rule.chars().any(char::is_control), "{rule:?}");
        let json = format!(r#"{{"version": 1, "{long}": 1, "{long}": 2}}"#);
        let field = RequestObject::parse(json.as_bytes())
            .err()
            .map(|e| e.field)
            .unwrap_or_default();
        assert_eq!(field, format!("{}…", "k".repeat(64)));
    }

    #[test]
    fn parsing_reads_every_value_as_serde_json_does() {
        let json = r#"{"version": 1, "request_id": "r-1", "token": "t\u00e9\n",
            "input": {"base64": "eA=="}, "content_type": "text/csv", "accept": "application/json",
            "custom_attributes": "a=1", "ttl_seconds": 3600, "split": "line"}"#;
        let plain: Result<RequestObject, _> = serde_json::from_slice(json.as_bytes());
        assert_eq!(RequestObject::parse(json.as_bytes()).ok(), plain.ok());
        for (version, got) in [
            ("1.0", "1.0"),
            ("-1", "-1"),
            ("[1]", "[1]"),
            ("null", "null"),
        ] {
            let json = format!(r#"{{"version": {version}}}"#);
            let err = RequestObject::parse(json.as_bytes()).err();
            assert_eq!(
                err.map(|e| (e.reason, e.rule)),
                Some((Reason::UnsupportedVersion, format!("must be 1, got {got}"))),
                "{json}"
            );
        }
        for bad in [
            raw("", r#""text": "x""#) + " x",
            "{\"version\": 1".into(),
            String::new(),
        ] {
            assert_eq!(
                RequestObject::parse(bad.as_bytes()).map_err(|e| (e.reason, e.field)),
                Err((Reason::MalformedJson, "request".to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn event_ids_are_stable_and_distinct() {
        assert_eq!(event_id("a", "1"), event_id("a", "1"));
        assert_ne!(event_id("a", "1"), event_id("a", "2"));
        assert_eq!(event_id("a", "1").len(), 36);
    }

    #[test]
    fn ids_follow_the_contract_rule() {
        assert!(is_valid_id("abc-1.2_3"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(".."));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id("a b"));
    }

    #[test]
    fn an_events_job_id_is_stable_per_message_and_index() {
        let id = JobMessage::job_id_for_event("m-1", 0);
        assert_eq!(id, JobMessage::job_id_for_event("m-1", 0));
        assert_eq!(id.len(), 32);
        assert_ne!(id, JobMessage::job_id_for_event("m-1", 1));
        assert_ne!(id, JobMessage::job_id_for_event("m-2", 0));
    }

    #[test]
    fn a_carried_input_round_trips_as_text_or_base64() {
        for bytes in [b"5.1,3.5\n".to_vec(), vec![0xff, 0x00, 0x80]] {
            let input = InputRef::carried(bytes.clone());
            let json = serde_json::to_string(&input).unwrap();
            assert!(json.starts_with("{\"kind\":\"carried\""), "{json}");
            let back: InputRef = serde_json::from_str(&json).unwrap();
            assert_eq!(back.carried_bytes(), Some(Ok(bytes)));
            assert!(back.is_inline());
        }
        assert_eq!(InputRef::Inline.carried_bytes(), None);
    }

    #[test]
    fn an_outcome_document_carries_its_reasons_one_line_hint_and_reads_without_one() {
        let v = Violation::new(Reason::TokenExpired, "token", "token has expired");
        let doc =
            OutcomeDocument::new(OutcomeKind::Rejected, "b1", "r1", "b1/requests/r1.json", &v);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["hint"], Reason::TokenExpired.hint());
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("hint");
        let back: OutcomeDocument = serde_json::from_value(old).unwrap();
        assert_eq!(back.hint, None, "documents of earlier builds have no hint");
        for r in [
            Reason::MalformedJson,
            Reason::TokenMalformed,
            Reason::ModelError,
        ] {
            assert!(!r.hint().is_empty() && !r.hint().contains('\n'), "{r}");
        }
    }

    #[test]
    fn a_carried_input_with_both_or_neither_member_is_an_error_not_a_guess() {
        for json in [
            r#"{"kind":"carried"}"#,
            r#"{"kind":"carried","text":"a","base64":"YQ=="}"#,
            r#"{"kind":"carried","base64":"%%%"}"#,
        ] {
            let input: InputRef = serde_json::from_str(json).unwrap();
            assert!(matches!(input.carried_bytes(), Some(Err(_))), "{json}");
        }
    }
    #[test]
    fn notifications_and_documents_of_older_builds_read_without_usage() {
        let n: Notification = serde_json::from_value(serde_json::json!({
            "version": 1, "event_id": "e", "event": "InferenceCompleted", "buyer": "b",
            "request_id": "r", "output_location": "s3://outbox/b/results/r.out",
            "content_type": "text/csv", "bytes": 3, "received_at": "2026-11-25T19:00:00Z",
            "completed_at": "2026-11-25T19:00:01Z", "attempts": 1
        }))
        .unwrap();
        assert_eq!(n.usage, None);
        assert!(!serde_json::to_string(&n).unwrap().contains("usage"));
        let d: OutcomeDocument = serde_json::from_value(serde_json::json!({
            "version": 1, "buyer": "b", "request_id": "r", "outcome": "failed",
            "reason": "model_error", "message": "m", "request_key": "b/requests/r.json",
            "attempts": 1, "received_at": "2026-11-25T19:00:00Z",
            "decided_at": "2026-11-25T19:00:01Z"
        }))
        .unwrap();
        assert_eq!(d.usage, None);
    }

    #[test]
    fn usage_is_written_with_every_member_and_read_back() {
        let usage = Usage {
            invocations: 3,
            records: 250,
            metered: true,
            bytes_in: 4000,
            bytes_out: 3000,
            model_ms: 12,
        };
        let v = serde_json::to_value(usage).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"invocations": 3, "records": 250, "metered": true,
                               "bytes_in": 4000, "bytes_out": 3000, "model_ms": 12})
        );
        assert_eq!(serde_json::from_value::<Usage>(v).unwrap(), usage);
    }

    #[test]
    fn usage_rides_in_one_metadata_entry_of_compact_json_well_under_s3s_limit() {
        let usage = Usage {
            invocations: u32::MAX,
            records: u64::MAX,
            metered: false,
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
            model_ms: u64::MAX,
        };
        let metadata = usage.to_metadata().unwrap();
        assert_eq!(metadata.len(), 1);
        let value = &metadata[USAGE_METADATA];
        assert!(!value.contains(' '), "{value}");
        crate::ports::object_store::check_metadata(&metadata).unwrap();
        assert!(value.len() < 256, "{} bytes", value.len());
        assert_eq!(Usage::from_metadata(&metadata).unwrap(), Some(usage));
    }

    #[test]
    fn a_result_without_usage_metadata_has_none_and_a_bad_value_is_an_error() {
        assert_eq!(Usage::from_metadata(&Metadata::new()).unwrap(), None);
        let bad = Metadata::from([(USAGE_METADATA.to_owned(), "{\"records\":1}".to_owned())]);
        assert!(Usage::from_metadata(&bad).is_err());
    }

    #[test]
    fn usage_totals_add_every_member_and_stay_metered_only_if_all_were() {
        let mut total = Usage::none();
        total.add(&Usage {
            invocations: 2,
            records: 10,
            metered: true,
            bytes_in: 1,
            bytes_out: 2,
            model_ms: 3,
        });
        assert!(total.metered);
        total.add(&Usage {
            invocations: 1,
            records: 1,
            metered: false,
            bytes_in: 1,
            bytes_out: 1,
            model_ms: 1,
        });
        assert_eq!(
            total,
            Usage {
                invocations: 3,
                records: 11,
                metered: false,
                bytes_in: 2,
                bytes_out: 3,
                model_ms: 4,
            }
        );
    }
}

/// The claims of a sealbox token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Seller.
    pub iss: String,
    /// Buyer id.
    pub sub: String,
    /// Product id.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expires.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// Space-separated scopes; must contain `invoke`.
    pub scope: String,
    /// The opaque id of the subscription (grant) the token was issued under: what the published
    /// deny list names, so the list never shows a buyer id.
    pub grant: String,
}
