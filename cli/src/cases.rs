//! Request objects for the demo, the benchmark and the tests: good ones, and a table of bad
//! request objects and hostile tokens, each with the outcome it must get.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use sealbox_authz::{Keyset, TokenClaims, TokenIssuer};
use sealbox_core::contract::{InputSpec, Reason, RequestObject, Split};
use sealbox_core::layout::{INBOX, request_key};
use sealbox_core::ports::{ObjectStore, PutMode};
use serde_json::json;
use time::OffsetDateTime;

/// The outcome a request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A result object.
    Completed,
    /// A failure document with this reason.
    Failed(Reason),
    /// A rejection document with this reason.
    Rejected(Reason),
}

/// One request to drop into the inbox.
#[derive(Debug, Clone)]
pub struct Case {
    /// What it exercises.
    pub name: String,
    /// Buyer prefix it is written under.
    pub buyer: String,
    /// Its object name (the request id, when the buyer follows the contract).
    pub request_id: String,
    /// The request object's bytes.
    pub body: Vec<u8>,
    /// Input objects to upload first: (key, bytes).
    pub inputs: Vec<(String, Vec<u8>)>,
    /// What must become of it.
    pub expect: Expect,
}

impl Case {
    /// Its key in the inbox.
    pub fn key(&self) -> String {
        request_key(&self.buyer, &self.request_id)
    }

    /// Writes its request object into the inbox, as a buyer's upload would.
    pub async fn put_request(&self, store: &dyn ObjectStore) -> sealbox_core::Result<()> {
        let body = bytes::Bytes::from(self.body.clone());
        store
            .put(INBOX, &self.key(), body, PutMode::Overwrite)
            .await
            .map(|_| ())
    }
}

/// Iris measurements, one per species, to build inputs from.
pub const SAMPLE_ROWS: [&str; 3] = ["5.1,3.5,1.4,0.2", "6.4,3.2,4.5,1.5", "6.3,3.3,6.0,2.5"];

/// The grant id of tokens signed here rather than by the token service: the cases never revoke
/// a subscription, so no deny list names it.
const LOCAL_GRANT: &str = "cases-local";

/// What cases are built with.
pub struct CaseContext {
    /// The buyer most cases are for.
    pub buyer: String,
    /// Another buyer, for isolation cases.
    pub other_buyer: String,
    /// Product id.
    pub product: String,
    /// Signs with the seller's current key.
    pub issuer: TokenIssuer,
    /// The seller's keyset (for its public key, used by the HMAC attack).
    pub keyset: Keyset,
    /// Signs with a key the seller never published.
    pub stranger: TokenIssuer,
    /// Tokens the buyers got from the token service, used by the good cases instead of
    /// tokens signed here.
    pub buyer_tokens: std::collections::HashMap<String, String>,
}

impl CaseContext {
    /// A context for the seller keyset `keyset`.
    pub fn new(
        keyset: &Keyset,
        buyer: &str,
        other_buyer: &str,
        product: &str,
    ) -> anyhow::Result<Self> {
        let strange = Keyset::generate(&keyset.issuer, sealbox_authz::KeyAlg::EdDSA)?;
        Ok(CaseContext {
            buyer: buyer.into(),
            other_buyer: other_buyer.into(),
            product: product.into(),
            issuer: TokenIssuer::new(keyset)?,
            keyset: keyset.clone(),
            stranger: TokenIssuer::new(&strange)?,
            buyer_tokens: std::collections::HashMap::new(),
        })
    }

    /// A valid token for `buyer`: the one it got from the token service, else one signed here.
    pub fn token(&self, buyer: &str) -> anyhow::Result<String> {
        if let Some(t) = self.buyer_tokens.get(buyer) {
            return Ok(t.clone());
        }
        Ok(self
            .issuer
            .issue(buyer, &self.product, LOCAL_GRANT, Duration::from_secs(3600))?)
    }

    fn claims(&self) -> TokenClaims {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        TokenClaims {
            iss: self.keyset.issuer.clone(),
            sub: self.buyer.clone(),
            aud: self.product.clone(),
            iat: now,
            nbf: now,
            exp: now + 3600,
            jti: "demo".into(),
            scope: "invoke".into(),
            grant: LOCAL_GRANT.into(),
        }
    }
}

/// A request object with inline text input.
pub fn text_request(request_id: &str, token: Option<&str>, text: &str) -> RequestObject {
    RequestObject {
        version: 1,
        request_id: request_id.into(),
        token: token.map(str::to_owned),
        input: InputSpec {
            text: Some(text.into()),
            ..InputSpec::default()
        },
        content_type: "text/csv".into(),
        accept: "text/csv".into(),
        custom_attributes: None,
        ttl_seconds: None,
        split: Split::None,
    }
}

fn to_bytes(r: &RequestObject) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

fn unsigned(header: serde_json::Value, claims: &serde_json::Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode(sig)
    )
}

/// `n` good requests for `ctx.buyer` (and a few for the other buyer), in several shapes.
pub fn good_cases(ctx: &CaseContext, n: usize) -> anyhow::Result<Vec<Case>> {
    let tokens = [ctx.token(&ctx.buyer)?, ctx.token(&ctx.other_buyer)?];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (buyer, token) = if i % 5 == 4 {
            (&ctx.other_buyer, &tokens[1])
        } else {
            (&ctx.buyer, &tokens[0])
        };
        let id = format!("good-{i:05}");
        let row = SAMPLE_ROWS[i % 3];
        let mut inputs = Vec::new();
        let mut r = text_request(&id, Some(token), row);
        match i % 6 {
            1 => {
                r.input = InputSpec {
                    base64: Some(STANDARD.encode(format!("{row}\n{}\n", SAMPLE_ROWS[(i + 1) % 3]))),
                    ..InputSpec::default()
                };
            }
            2 => {
                r.content_type = "application/json".into();
                r.accept = "application/json".into();
                r.input.text = Some(json!({"instances": [[5.9, 3.0, 5.1, 1.8]]}).to_string());
                r.custom_attributes = Some(format!("trace=demo-{i}"));
            }
            3 => {
                let key = format!("{buyer}/inputs/{id}.csv");
                inputs.push((key.clone(), SAMPLE_ROWS.join("\n").into_bytes()));
                r.input = InputSpec {
                    s3_key: Some(key),
                    ..InputSpec::default()
                };
            }
            4 => {
                let key = format!("{buyer}/inputs/{id}-lines.csv");
                let lines: Vec<&str> = (0..50).map(|j| SAMPLE_ROWS[j % 3]).collect();
                inputs.push((key.clone(), lines.join("\n").into_bytes()));
                r.input = InputSpec {
                    s3_key: Some(key),
                    ..InputSpec::default()
                };
                r.split = Split::Line;
            }
            _ => {}
        }
        out.push(Case {
            name: "good".into(),
            buyer: buyer.clone(),
            request_id: id,
            body: to_bytes(&r),
            inputs,
            expect: Expect::Completed,
        });
    }
    Ok(out)
}

/// The table of bad request objects and hostile tokens: each must end in its own reason.
pub fn bad_cases(ctx: &CaseContext) -> anyhow::Result<Vec<Case>> {
    let buyer = ctx.buyer.as_str();
    let good = ctx.token(buyer)?;
    let kid = ctx.issuer.kid().to_owned();
    let claims = serde_json::to_value(ctx.claims())?;
    let signed = |f: &dyn Fn(&mut TokenClaims)| -> anyhow::Result<String> {
        let mut c = ctx.claims();
        f(&mut c);
        Ok(ctx.issuer.sign(&c)?)
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();

    // HS256 "signed" with the public key bytes: the classic algorithm-confusion attack.
    let hmac_token = {
        let public = ctx.keyset.current()?.public_bytes()?;
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let key = aws_lc_rs_hmac(&public, signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(key))
    };
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = claims.clone();
        c["scope"] = json!("invoke admin");
        if parts.len() == 3 {
            parts[1] = B64.encode(c.to_string());
        }
        parts.join(".")
    };
    let no_jti = {
        let mut c = claims.clone();
        if let Some(o) = c.as_object_mut() {
            o.remove("jti");
        }
        ctx.issuer.sign(&c)?
    };

    let with_token =
        |id: &str, token: String| to_bytes(&text_request(id, Some(&token), SAMPLE_ROWS[0]));
    let mut out: Vec<Case> = Vec::new();
    let mut add = |name: &str, id: &str, body: Vec<u8>, expect: Expect| {
        out.push(Case {
            name: name.to_owned(),
            buyer: buyer.to_owned(),
            request_id: id.to_owned(),
            body,
            inputs: Vec::new(),
            expect,
        });
    };
    use Expect::Rejected as R;
    add(
        "malformed JSON",
        "bad-json",
        b"{\"version\": 1, \"request_id\": ".to_vec(),
        R(Reason::MalformedJson),
    );
    add(
        "wrong version",
        "bad-version",
        {
            let mut v = serde_json::to_value(text_request("bad-version", Some(&good), "x"))?;
            v["version"] = json!(2);
            v.to_string().into_bytes()
        },
        R(Reason::UnsupportedVersion),
    );
    add(
        "request id with bad characters",
        "bad id!",
        to_bytes(&text_request("bad id!", Some(&good), "x")),
        R(Reason::InvalidRequestId),
    );
    let long_id = "x".repeat(65);
    add(
        "oversized request id",
        &long_id,
        to_bytes(&text_request(&long_id, Some(&good), "x")),
        R(Reason::InvalidRequestId),
    );
    add(
        "request id differs from its key",
        "bad-mismatch",
        to_bytes(&text_request("other-id", Some(&good), "x")),
        R(Reason::RequestIdMismatch),
    );
    add(
        "request object over 1 MiB",
        "bad-huge",
        {
            let mut v = serde_json::to_value(text_request("bad-huge", Some(&good), "x"))?;
            v["padding"] = json!("p".repeat(1024 * 1024 + 10));
            v.to_string().into_bytes()
        },
        R(Reason::RequestTooLarge),
    );
    add(
        "missing token",
        "bad-no-token",
        to_bytes(&text_request("bad-no-token", None, "x")),
        R(Reason::TokenMissing),
    );
    add(
        "token is not a JWT",
        "bad-token-shape",
        with_token("bad-token-shape", "not-a-jwt".into()),
        R(Reason::TokenMalformed),
    );
    add(
        "alg none",
        "bad-alg-none",
        with_token(
            "bad-alg-none",
            unsigned(json!({"alg": "none", "typ": "JWT"}), &claims, b""),
        ),
        R(Reason::TokenAlgNone),
    );
    add(
        "HMAC-signed with the public key",
        "bad-hmac",
        with_token("bad-hmac", hmac_token),
        R(Reason::TokenAlgHmac),
    );
    add(
        "alg differs from the key's",
        "bad-alg-mismatch",
        with_token(
            "bad-alg-mismatch",
            unsigned(
                json!({"alg": "ES256", "typ": "JWT", "kid": kid}),
                &claims,
                &[0u8; 64],
            ),
        ),
        R(Reason::TokenAlgMismatch),
    );
    add(
        "tampered payload",
        "bad-tampered",
        with_token("bad-tampered", tampered),
        R(Reason::TokenBadSignature),
    );
    add(
        "expired",
        "bad-expired",
        with_token(
            "bad-expired",
            signed(&|c| {
                c.iat = now - 7200;
                c.nbf = now - 7200;
                c.exp = now - 3600;
            })?,
        ),
        R(Reason::TokenExpired),
    );
    add(
        "not yet valid",
        "bad-nbf",
        with_token(
            "bad-nbf",
            signed(&|c| {
                c.nbf = now + 3600;
                c.exp = now + 7200;
            })?,
        ),
        R(Reason::TokenNotYetValid),
    );
    add(
        "wrong audience",
        "bad-aud",
        with_token("bad-aud", signed(&|c| c.aud = "another-product".into())?),
        R(Reason::TokenWrongAudience),
    );
    add(
        "wrong issuer",
        "bad-iss",
        with_token("bad-iss", signed(&|c| c.iss = "someone-else".into())?),
        R(Reason::TokenWrongIssuer),
    );
    add(
        "token for another buyer",
        "bad-sub",
        with_token("bad-sub", ctx.token(&ctx.other_buyer)?),
        R(Reason::TokenSubjectMismatch),
    );
    add(
        "unknown kid",
        "bad-kid",
        with_token(
            "bad-kid",
            ctx.stranger
                .issue(buyer, &ctx.product, LOCAL_GRANT, Duration::from_secs(600))?,
        ),
        R(Reason::TokenUnknownKid),
    );
    add(
        "missing jti",
        "bad-no-jti",
        with_token("bad-no-jti", no_jti),
        R(Reason::TokenMissingClaim),
    );
    add(
        "scope without invoke",
        "bad-scope",
        with_token("bad-scope", signed(&|c| c.scope = "read".into())?),
        R(Reason::TokenScopeMissing),
    );
    add(
        "lifetime over 12 h",
        "bad-lifetime",
        with_token("bad-lifetime", signed(&|c| c.exp = c.iat + 13 * 3600)?),
        R(Reason::TokenLifetimeTooLong),
    );
    add(
        "two inputs",
        "bad-two-inputs",
        {
            let mut r = text_request("bad-two-inputs", Some(&good), "x");
            r.input.base64 = Some("eA==".into());
            to_bytes(&r)
        },
        R(Reason::InputInvalid),
    );
    add(
        "invalid base64",
        "bad-base64",
        {
            let mut r = text_request("bad-base64", Some(&good), "x");
            r.input = InputSpec {
                base64: Some("***".into()),
                ..InputSpec::default()
            };
            to_bytes(&r)
        },
        R(Reason::InputBase64Invalid),
    );
    add(
        "inline input over the cap",
        "bad-inline-size",
        to_bytes(&text_request(
            "bad-inline-size",
            Some(&good),
            &"5.1,3.5,1.4,0.2\n".repeat(20_000),
        )),
        R(Reason::InputInlineTooLarge),
    );
    add(
        "input under another buyer's prefix",
        "bad-prefix",
        {
            let mut r = text_request("bad-prefix", Some(&good), "x");
            r.input = InputSpec {
                s3_key: Some(format!("{}/inputs/secret.csv", ctx.other_buyer)),
                ..InputSpec::default()
            };
            to_bytes(&r)
        },
        R(Reason::InputOutsidePrefix),
    );
    add(
        "missing input object",
        "bad-missing-input",
        {
            let mut r = text_request("bad-missing-input", Some(&good), "x");
            r.input = InputSpec {
                s3_key: Some(format!("{buyer}/inputs/never-uploaded.csv")),
                ..InputSpec::default()
            };
            to_bytes(&r)
        },
        R(Reason::InputNotFound),
    );
    add(
        "content type not a MIME type",
        "bad-media",
        {
            let mut r = text_request("bad-media", Some(&good), "x");
            r.content_type = "csv".into();
            to_bytes(&r)
        },
        R(Reason::InvalidMediaType),
    );
    add(
        "custom attributes not ASCII",
        "bad-attrs",
        {
            let mut r = text_request("bad-attrs", Some(&good), "x");
            r.custom_attributes = Some("é".repeat(10));
            to_bytes(&r)
        },
        R(Reason::InvalidCustomAttributes),
    );
    add(
        "ttl out of range",
        "bad-ttl",
        {
            let mut r = text_request("bad-ttl", Some(&good), "x");
            r.ttl_seconds = Some(5);
            to_bytes(&r)
        },
        R(Reason::InvalidTtl),
    );
    add(
        "input the model refuses",
        "bad-model-input",
        to_bytes(&text_request(
            "bad-model-input",
            Some(&good),
            "not,a,number,row",
        )),
        Expect::Failed(Reason::ModelRejectedInput),
    );
    out.push(Case {
        name: "buyer prefix that is not a buyer id".into(),
        buyer: "not a buyer!".into(),
        request_id: "bad-buyer".into(),
        body: to_bytes(&text_request("bad-buyer", Some(&good), "x")),
        inputs: Vec::new(),
        expect: R(Reason::InvalidBuyer),
    });
    Ok(out)
}

fn aws_lc_rs_hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
}
