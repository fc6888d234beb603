//! The request object a buyer drops in the inbox, and its strict reader: each malformed one
//! names the rule it breaks.

use super::*;

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
