//! The attack table: forged, tampered and malformed tokens, each refused with its reason. Header
//! members that point at keys elsewhere (`jku`, `x5u`) are never followed.

// Test helpers outside #[test] functions: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey};
use sealbox_authz::jwks::PublishedKeys;
use sealbox_authz::keyset::{KeyEntry, RETIRE_AFTER};
use sealbox_authz::{KeyAlg, Keyset, Verifier, VerifierConfig};
use sealbox_core::contract::Reason;
use serde_json::{Value, json};

const BUYER: &str = "111122223333";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims() -> Value {
    let now = now();
    json!({
        "iss": "seller", "sub": BUYER, "aud": "product", "iat": now, "nbf": now,
        "exp": now + 600, "jti": "t-1", "scope": "invoke", "grant": "g-b1"
    })
}

fn header(key: &KeyEntry) -> Value {
    json!({"alg": key.alg.as_str(), "kid": key.kid, "typ": "JWT"})
}

fn encode(part: &Value) -> String {
    B64.encode(serde_json::to_vec(part).unwrap())
}

/// A token with exactly this header and these claims, signed by `key`.
fn signed(key: &KeyEntry, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", encode(header), encode(claims));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &key.encoding_key().unwrap(),
        key.alg.jwt(),
    )
    .unwrap();
    format!("{input}.{sig}")
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn with(mut value: Value, name: &str, to: Value) -> Value {
    value[name] = to;
    value
}

#[test]
fn every_attack_in_the_table_is_refused_with_its_reason() {
    let mut ks = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
    let doomed = ks.keys[1].clone();
    let revoked_token = signed(&doomed, &header(&doomed), &claims());
    ks.revoke(&doomed.kid, time::OffsetDateTime::now_utc(), RETIRE_AFTER)
        .unwrap();
    let key = ks.current().unwrap().clone();
    let verifier = Verifier::new(VerifierConfig::new("seller", "product"));
    verifier
        .load(PublishedKeys::from_keyset(&ks, Vec::new()).unwrap())
        .unwrap();
    let h = header(&key);
    let good = signed(&key, &h, &claims());
    assert!(verifier.verify(&good, BUYER).is_ok(), "the control token");

    // A listener that must never be contacted: jku and x5u point at it.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("http://{}/jwks.json", trap.local_addr().unwrap());

    let parts: Vec<&str> = good.split('.').collect();
    let hs256 = {
        let h = json!({"alg": "HS256", "kid": key.kid, "typ": "JWT"});
        let input = format!("{}.{}", encode(&h), encode(&claims()));
        let secret = EncodingKey::from_secret(&key.public_bytes().unwrap());
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &secret, Algorithm::HS256).unwrap();
        format!("{input}.{sig}")
    };
    let now = now();
    let table: Vec<(&str, String, Reason)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                encode(&json!({"alg": "none", "kid": key.kid})),
                parts[1]
            ),
            Reason::TokenAlgNone,
        ),
        (
            "HS256 signed with the public key bytes",
            hs256,
            Reason::TokenAlgHmac,
        ),
        (
            "RS256 header against an Ed25519 key",
            format!(
                "{}.{}.{}",
                encode(&with(h.clone(), "alg", json!("RS256"))),
                parts[1],
                parts[2]
            ),
            Reason::TokenAlgMismatch,
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                encode(&with(claims(), "sub", json!("999999999999"))),
                parts[2]
            ),
            Reason::TokenBadSignature,
        ),
        (
            "tampered signature",
            format!("{}.{}.{}", parts[0], parts[1], {
                let mut sig = B64.decode(parts[2]).unwrap();
                sig[10] ^= 1;
                B64.encode(sig)
            }),
            Reason::TokenBadSignature,
        ),
        (
            "expired beyond the 60 s leeway",
            signed(
                &key,
                &h,
                &with(
                    with(claims(), "exp", json!(now - 120)),
                    "iat",
                    json!(now - 700),
                ),
            ),
            Reason::TokenExpired,
        ),
        (
            "nbf in the future",
            signed(&key, &h, &with(claims(), "nbf", json!(now + 300))),
            Reason::TokenNotYetValid,
        ),
        (
            "iat in the future (escapes lifetime and deny-list checks)",
            signed(&key, &h, &with(claims(), "iat", json!(now + 300))),
            Reason::TokenNotYetValid,
        ),
        (
            "exp as a string",
            signed(
                &key,
                &h,
                &with(claims(), "exp", json!((now + 600).to_string())),
            ),
            Reason::TokenMissingClaim,
        ),
        (
            "nbf as a string",
            signed(&key, &h, &with(claims(), "nbf", json!(now.to_string()))),
            Reason::TokenMissingClaim,
        ),
        (
            "missing exp",
            signed(&key, &h, &without(claims(), "exp")),
            Reason::TokenMissingClaim,
        ),
        (
            "missing sub",
            signed(&key, &h, &without(claims(), "sub")),
            Reason::TokenMissingClaim,
        ),
        (
            "missing aud",
            signed(&key, &h, &without(claims(), "aud")),
            Reason::TokenMissingClaim,
        ),
        (
            "missing iss",
            signed(&key, &h, &without(claims(), "iss")),
            Reason::TokenMissingClaim,
        ),
        (
            "wrong aud",
            signed(&key, &h, &with(claims(), "aud", json!("other-product"))),
            Reason::TokenWrongAudience,
        ),
        (
            "aud an array naming the product (the contract's aud is one string)",
            signed(&key, &h, &with(claims(), "aud", json!(["product"]))),
            Reason::TokenWrongAudience,
        ),
        (
            "aud an array naming the product among others",
            signed(
                &key,
                &h,
                &with(claims(), "aud", json!(["other-product", "product"])),
            ),
            Reason::TokenWrongAudience,
        ),
        (
            "aud an array of other products",
            signed(&key, &h, &with(claims(), "aud", json!(["other-product"]))),
            Reason::TokenWrongAudience,
        ),
        (
            "aud a number",
            signed(&key, &h, &with(claims(), "aud", json!(7))),
            Reason::TokenMissingClaim,
        ),
        (
            "iss an array naming the seller",
            signed(&key, &h, &with(claims(), "iss", json!(["seller"]))),
            Reason::TokenMissingClaim,
        ),
        (
            "typ missing",
            signed(&key, &without(h.clone(), "typ"), &claims()),
            Reason::TokenMalformed,
        ),
        (
            "typ at+jwt (an OAuth access token signed by the same key)",
            signed(&key, &with(h.clone(), "typ", json!("at+jwt")), &claims()),
            Reason::TokenMalformed,
        ),
        (
            "typ JOSE",
            signed(&key, &with(h.clone(), "typ", json!("JOSE")), &claims()),
            Reason::TokenMalformed,
        ),
        (
            "wrong iss",
            signed(&key, &h, &with(claims(), "iss", json!("someone-else"))),
            Reason::TokenWrongIssuer,
        ),
        (
            "unknown kid",
            signed(
                &key,
                &with(h.clone(), "kid", json!("no-such-key")),
                &claims(),
            ),
            Reason::TokenUnknownKid,
        ),
        (
            "kid with a path",
            signed(
                &key,
                &with(h.clone(), "kid", json!("../../etc/passwd")),
                &claims(),
            ),
            Reason::TokenMalformed,
        ),
        (
            "kid with control characters",
            signed(
                &key,
                &with(h.clone(), "kid", json!("k\u{0}\n\u{1b}[31m")),
                &claims(),
            ),
            Reason::TokenMalformed,
        ),
        (
            "a 100 KB header",
            signed(
                &key,
                &with(h.clone(), "pad", json!("A".repeat(100 * 1024))),
                &claims(),
            ),
            Reason::TokenMalformed,
        ),
        (
            "jku header",
            signed(&key, &with(h.clone(), "jku", json!(trap_url)), &claims()),
            Reason::TokenMalformed,
        ),
        (
            "x5u header",
            signed(&key, &with(h.clone(), "x5u", json!(trap_url)), &claims()),
            Reason::TokenMalformed,
        ),
        (
            "x5t#S256 header",
            signed(&key, &with(h.clone(), "x5t#S256", json!("AAAA")), &claims()),
            Reason::TokenMalformed,
        ),
        (
            "embedded jwk header",
            signed(&key, &with(h.clone(), "jwk", key.jwk().unwrap()), &claims()),
            Reason::TokenMalformed,
        ),
        (
            "a token for another buyer's prefix",
            signed(&key, &h, &with(claims(), "sub", json!("444455556666"))),
            Reason::TokenSubjectMismatch,
        ),
        (
            "signed by a revoked key",
            revoked_token,
            Reason::TokenKeyRevoked,
        ),
        (
            "scope without invoke",
            signed(&key, &h, &with(claims(), "scope", json!("read"))),
            Reason::TokenScopeMissing,
        ),
        (
            "lives longer than 12 h",
            signed(&key, &h, &with(claims(), "exp", json!(now + 13 * 3600))),
            Reason::TokenLifetimeTooLong,
        ),
        ("not a JWT", "abc".into(), Reason::TokenMalformed),
    ];
    assert!(table.len() >= 15);
    let mut failures = Vec::new();
    for (name, token, want) in &table {
        match verifier.verify(token, BUYER) {
            Err(r) if r.reason == *want => {
                assert!(
                    !r.detail.chars().any(char::is_control),
                    "{name}: detail echoes control characters"
                );
            }
            other => failures.push(format!("{name}: want {want}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(trap.accept().is_err(), "a jku or x5u URL was contacted");
}

#[test]
fn an_es256_key_refuses_an_eddsa_token_under_its_kid() {
    let ed = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
    let es = Keyset::generate("seller", KeyAlg::ES256).unwrap();
    let es_key = es.current().unwrap();
    let verifier = Verifier::from_keyset(VerifierConfig::new("seller", "product"), &es).unwrap();
    // Signed by an Ed25519 key, claiming the ES256 key's kid.
    let forged = signed(
        ed.current().unwrap(),
        &json!({"alg": "EdDSA", "kid": es_key.kid, "typ": "JWT"}),
        &claims(),
    );
    assert_eq!(
        verifier.verify(&forged, BUYER).unwrap_err().reason,
        Reason::TokenAlgMismatch
    );
}
