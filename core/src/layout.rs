//! Bucket layout of contract v1: which keys mean what, and which keys are acceptable at all.

use crate::contract::is_valid_id;

/// Longest object key (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;
/// Default inbox bucket name.
pub const INBOX: &str = "inbox";
/// Default outbox bucket name.
pub const OUTBOX: &str = "outbox";

/// Checks that `key` is a key every backend can hold without escaping its bucket:
/// non-empty, at most 1024 bytes, relative, no NUL or backslash, no empty, `.` or `..` segment.
pub fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("must not be empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return Err("must be at most 1024 bytes");
    }
    if key.starts_with('/') {
        return Err("must be relative");
    }
    if key.contains('\0') {
        return Err("must not contain NUL");
    }
    if key.contains('\\') {
        return Err("must not contain a backslash");
    }
    for seg in key.split('/') {
        match seg {
            "" => return Err("must not contain an empty segment"),
            "." | ".." => return Err("must not contain `.` or `..` segments"),
            s if s.starts_with(TEMP_PREFIX) => {
                return Err("must not use the reserved `.sbx-` prefix");
            }
            _ => {}
        }
    }
    Ok(())
}

/// File names starting with this are temporary files of the embedded object store.
pub const TEMP_PREFIX: &str = ".sbx-";

/// A key of the form `<buyer>/requests/<name>.json`: the only keys that trigger ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey<'a> {
    /// The buyer prefix.
    pub buyer: &'a str,
    /// The file name without `.json` (the request id, if the buyer followed the contract).
    pub name: &'a str,
}

/// Parses a request object key; `None` for every other key.
pub fn parse_request_key(key: &str) -> Option<RequestKey<'_>> {
    let mut parts = key.split('/');
    let (buyer, dir, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || dir != "requests" || buyer.is_empty() {
        return None;
    }
    let name = file.strip_suffix(".json")?;
    // A request id may start with `.`; only the store's own temporary files are not requests.
    if name.is_empty() || file.starts_with(TEMP_PREFIX) {
        return None;
    }
    Some(RequestKey { buyer, name })
}

/// True if `buyer` is an acceptable buyer id (an AWS account id in production).
pub fn is_valid_buyer(buyer: &str) -> bool {
    is_valid_id(buyer)
}

/// `<buyer>/requests/<request_id>.json`
pub fn request_key(buyer: &str, request_id: &str) -> String {
    format!("{buyer}/requests/{request_id}.json")
}
/// `<buyer>/results/<request_id>.out`
pub fn result_key(buyer: &str, request_id: &str) -> String {
    format!("{buyer}/results/{request_id}.out")
}
/// `<buyer>/failed/<request_id>.json`
pub fn failed_key(buyer: &str, request_id: &str) -> String {
    format!("{buyer}/failed/{request_id}.json")
}
/// `<buyer>/rejected/<request_id>.json`
pub fn rejected_key(buyer: &str, request_id: &str) -> String {
    format!("{buyer}/rejected/{request_id}.json")
}
/// `<buyer>/claims/<request_id>.json`: the request's claim, in the outbox (never an outcome;
/// buyers only write the inbox).
pub fn claim_key(buyer: &str, request_id: &str) -> String {
    format!("{buyer}/claims/{request_id}.json")
}
/// `s3://<bucket>/<key>`
pub fn location(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// Decodes an S3 event key: percent-encoding, with `+` for space.
pub fn decode_event_key(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_escape_the_bucket_are_refused() {
        for bad in [
            "", "/abs", "a/../b", "..", "a/./b", "a//b", "a\0b", "a\\b", ".sbx-x",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_key(&"k".repeat(1025)).is_err());
        assert!(check_key("b1/requests/r.json").is_ok());
        assert!(check_key("b1/inputs/.hidden").is_ok());
    }

    #[test]
    fn only_request_keys_trigger_ingest() {
        assert_eq!(
            parse_request_key("b1/requests/r-1.json"),
            Some(RequestKey {
                buyer: "b1",
                name: "r-1"
            })
        );
        for other in [
            "b1/inputs/x.json",
            "b1/requests/x.txt",
            "b1/requests/a/b.json",
            "b1/requests/.json",
            "b1/requests/.sbx-1-2.json",
        ] {
            assert_eq!(parse_request_key(other), None, "{other}");
        }
    }

    #[test]
    fn a_request_id_starting_with_a_dot_is_a_request() {
        assert_eq!(
            parse_request_key("b1/requests/.hidden.json").map(|k| k.name),
            Some(".hidden")
        );
    }

    #[test]
    fn event_keys_are_url_decoded() {
        assert_eq!(
            decode_event_key("b1/requests/a+b%2Bc.json").as_deref(),
            Some("b1/requests/a b+c.json")
        );
        assert_eq!(decode_event_key("bad%2"), None);
    }
}
