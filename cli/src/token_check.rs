//! The buyer's look at a token before anything is uploaded. A request sent with a token that
//! ingest will refuse spends its request id; most such tokens can be told apart without the
//! seller's keys: wrong shape, wrong buyer or product, expired. The signature is not checked
//! here (only ingest, holding the published keys, can), so a token that passes may still be
//! refused there; one that fails here would certainly be.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use time::OffsetDateTime;

use crate::output::short_duration;

/// A token must live at least this much longer to be sent: ingest may read the request a
/// little after it lands, and clocks differ.
pub const SEND_MARGIN: Duration = Duration::from_secs(60);

/// The token without surrounding whitespace or an HTTP `Bearer ` prefix (which belongs to an
/// `Authorization` header, never to a request object), warning on stderr when one was there.
/// `from` names where the token came from, for the warning.
pub fn strip_bearer(token: &str, from: &str) -> String {
    let t = token.trim();
    match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => {
            eprintln!(
                "warning: the token from {from} starts with `Bearer `, the prefix of an HTTP \
                 Authorization header; it is not part of the token and was removed"
            );
            t[7..].trim_start().to_owned()
        }
        _ => t.to_owned(),
    }
}

fn decode_part(part: &str, which: &str) -> Result<serde_json::Map<String, Value>, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| format!("its {which} is not base64url (unpadded)"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(format!("its {which} is not a JSON object")),
    }
}

/// Checks what can be checked without keys: three base64url parts, a JWT header (`typ` JWT,
/// a signing `alg`), and claims naming `buyer` and `product` that are still good for
/// [`SEND_MARGIN`] at `now`. The reason in words when the token would be refused.
pub fn precheck(
    token: &str,
    buyer: &str,
    product: &str,
    now: OffsetDateTime,
) -> Result<(), String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(format!(
            "it is not a JWT: it has {} dot-separated part{}, a JWT has three \
             (header.claims.signature)",
            parts.len(),
            if parts.len() == 1 { "" } else { "s" }
        ));
    };
    let header = decode_part(header, "header")?;
    match header.get("typ").and_then(Value::as_str) {
        Some(typ) if typ.eq_ignore_ascii_case("JWT") => {}
        Some(typ) => {
            return Err(format!(
                "its header says typ {typ:?}; sealbox tokens are JWT"
            ));
        }
        None => return Err("its header has no typ (sealbox tokens say JWT)".into()),
    }
    match header.get("alg").and_then(Value::as_str) {
        Some(alg) if alg.eq_ignore_ascii_case("none") => {
            return Err("it is unsigned (alg none)".into());
        }
        Some(alg) if alg.to_ascii_uppercase().starts_with("HS") => {
            return Err(format!(
                "it is signed with a shared secret ({alg}); sealbox tokens are EdDSA or ES256"
            ));
        }
        Some(_) => {}
        None => return Err("its header has no alg".into()),
    }
    if signature.is_empty() {
        return Err("its signature part is empty".into());
    }
    let claims = decode_part(claims, "claims part")?;
    let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
        return Err("it has no exp claim (whole seconds)".into());
    };
    let left = exp.saturating_sub(now.unix_timestamp());
    let margin = SEND_MARGIN.as_secs() as i64;
    if left <= 0 {
        let at = OffsetDateTime::from_unix_timestamp(exp)
            .map(sealbox_core::contract::rfc3339)
            .unwrap_or_else(|_| exp.to_string());
        return Err(format!("it expired at {at}, {} ago", short_duration(-left)));
    }
    if left < margin {
        return Err(format!(
            "it expires in {}, less than the {} a request needs to reach ingest",
            short_duration(left),
            short_duration(margin)
        ));
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if sub == buyer => {}
        Some(sub) => {
            return Err(format!(
                "it is for buyer {sub}, not {buyer} (--buyer): ingest binds a token to the \
                 buyer prefix it is sent under"
            ));
        }
        None => return Err("it has no sub claim (the buyer id)".into()),
    }
    match claims.get("aud") {
        Some(Value::String(aud)) if aud == product => {}
        Some(Value::String(aud)) => {
            return Err(format!(
                "it is for product {aud}, not {product} (--product, or $SEALBOX_PRODUCT)"
            ));
        }
        Some(_) => {
            return Err(format!(
                "its aud claim is not the single string {product:?}"
            ));
        }
        None => return Err("it has no aud claim (the product id)".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn token(header: Value, claims: Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&claims))
    }

    fn good_claims(now: i64) -> Value {
        json!({"iss": "s", "sub": "111122223333", "aud": "iris-classifier", "iat": now,
               "nbf": now, "exp": now + 3600, "jti": "j", "scope": "invoke", "grant": "g"})
    }

    fn check(t: &str) -> Result<(), String> {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        precheck(t, "111122223333", "iris-classifier", now)
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_well_formed_token_for_this_buyer_and_product_passes_without_any_key() {
        let h = json!({"alg": "EdDSA", "typ": "JWT", "kid": "k"});
        assert_eq!(check(&token(h, good_claims(NOW))), Ok(()));
    }

    #[test]
    fn each_kind_of_bad_token_is_refused_with_its_own_reason() {
        let h = json!({"alg": "EdDSA", "typ": "JWT", "kid": "k"});
        let with = |k: &str, v: Value| {
            let mut c = good_claims(NOW);
            c[k] = v;
            token(h.clone(), c)
        };
        let cases = [
            ("abc".to_owned(), "1 dot-separated part,"),
            ("a.b".to_owned(), "2 dot-separated parts"),
            ("%%.b.c".to_owned(), "header is not base64url"),
            (
                format!("{}.b.c", b64(&json!([1]))),
                "header is not a JSON object",
            ),
            (token(json!({"alg": "EdDSA"}), good_claims(NOW)), "no typ"),
            (
                token(json!({"alg": "EdDSA", "typ": "at+jwt"}), good_claims(NOW)),
                "typ \"at+jwt\"",
            ),
            (
                token(json!({"alg": "none", "typ": "JWT"}), good_claims(NOW)),
                "unsigned",
            ),
            (
                token(json!({"alg": "HS256", "typ": "JWT"}), good_claims(NOW)),
                "shared secret",
            ),
            (format!("{}.%%.c", b64(&h)), "claims part is not base64url"),
            (
                with("exp", json!(NOW - 125)),
                "expired at 2027-01-15T07:57:55Z, 2m 5s ago",
            ),
            (with("exp", json!(NOW + 30)), "expires in 30s"),
            (with("exp", json!("soon")), "no exp claim"),
            (
                with("sub", json!("999999999999")),
                "for buyer 999999999999, not 111122223333",
            ),
            (
                with("aud", json!("other")),
                "for product other, not iris-classifier",
            ),
            (
                with("aud", json!(["iris-classifier"])),
                "not the single string",
            ),
        ];
        for (t, why) in cases {
            let got = check(&t).expect_err(why);
            assert!(got.contains(why), "{why:?} not in {got:?}");
        }
    }

    #[test]
    fn a_bearer_prefix_is_removed_in_any_case_and_nothing_else_is() {
        assert_eq!(strip_bearer("Bearer a.b.c", "test"), "a.b.c");
        assert_eq!(strip_bearer(" bearer  a.b.c\n", "test"), "a.b.c");
        assert_eq!(strip_bearer("a.b.c", "test"), "a.b.c");
        assert_eq!(strip_bearer("Bearera.b.c", "test"), "Bearera.b.c");
    }
}
