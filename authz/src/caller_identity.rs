//! A buyer proves its AWS account without a shared secret: it signs an
//! `sts:GetCallerIdentity` request with its own AWS credentials (SigV4) and hands it to the
//! token service, which checks what it can locally and forwards it, unchanged, to an STS
//! endpoint it trusts. STS checks the signature and answers the caller's account. The way
//! HashiCorp Vault's AWS IAM auth method and the EKS aws-iam-authenticator work.
//!
//! The request names this token service in a signed header ([`AUDIENCE_HEADER`], its issuer),
//! so a signature made for another service cannot be replayed here; it is never forwarded
//! anywhere but STS (the regional `sts.*.amazonaws.com` hosts, or the endpoint this process's
//! environment names), and nothing the caller merely states is believed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The signed header that names the token service a proof is for (its issuer).
pub const AUDIENCE_HEADER: &str = "x-sealbox-token-service";

/// The only body a proof may carry.
pub const GET_CALLER_IDENTITY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// How far a proof's `X-Amz-Date` may be from now: STS's own limit for a signature.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Headers a proof may sign: anything else could smuggle meaning past the checks.
const SIGNABLE: [&str; 7] = [
    "host",
    "content-type",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "content-length",
    AUDIENCE_HEADER,
];

/// A signed `sts:GetCallerIdentity` request, as the buyer sends it in `{"aws_sts": …}`: the
/// headers it signed (with `host` and `authorization`) and its body. No URL: where it goes is
/// the service's choice, from the signed host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentityProof {
    /// Header names (any case) and values.
    pub headers: BTreeMap<String, String>,
    /// The form-encoded body.
    pub body: String,
}

/// The AWS identity STS answered for a proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCaller {
    /// The 12-digit account.
    pub account: String,
    /// The caller's ARN (a user, a role session).
    pub arn: String,
}

/// Why a proof was not accepted; each names what the caller can do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofRefusal {
    /// The body is not exactly a GetCallerIdentity call.
    #[error("the signed request must be sts:GetCallerIdentity with body {GET_CALLER_IDENTITY:?}")]
    NotGetCallerIdentity,
    /// No SigV4 signature for STS, or one that leaves out what must be signed.
    #[error("the request is not signed as it must be: {0}")]
    Unsigned(String),
    /// Signed for another token service, or without naming one.
    #[error(
        "the request is signed for {found:?}, not this token service ({expected:?}): sign {AUDIENCE_HEADER}: {expected}"
    )]
    WrongAudience {
        /// What the signed header said (empty: none).
        found: String,
        /// This service's issuer.
        expected: String,
    },
    /// Its `X-Amz-Date` is too far from now: an old signature replayed, or a wrong clock.
    #[error(
        "the signature is dated {date}, more than 15 minutes from now: sign a fresh request (and check this machine's clock)"
    )]
    Stale {
        /// The date it carries.
        date: String,
    },
    /// Signed for a host that is not an STS endpoint this service trusts.
    #[error(
        "the request is signed for host {0:?}, which is not an STS endpoint this token service trusts"
    )]
    UntrustedHost(String),
    /// STS refused it (a bad signature, expired credentials).
    #[error("STS refused the signed request: {code}: {message}")]
    Refused {
        /// STS's error code, e.g. `SignatureDoesNotMatch`, `ExpiredToken`.
        code: String,
        /// STS's message.
        message: String,
    },
    /// STS could not be asked (unreachable, 5xx, an answer that does not parse): not the
    /// caller's fault; try again.
    #[error("STS could not be asked: {0}")]
    Unavailable(String),
}

impl ProofRefusal {
    /// The error code of the token service's answer.
    pub fn code(&self) -> &'static str {
        match self {
            ProofRefusal::NotGetCallerIdentity => "not_get_caller_identity",
            ProofRefusal::Unsigned(_) => "unsigned",
            ProofRefusal::WrongAudience { .. } => "wrong_audience",
            ProofRefusal::Stale { .. } => "stale_signature",
            ProofRefusal::UntrustedHost(_) => "untrusted_sts",
            ProofRefusal::Refused { .. } => "sts_refused",
            ProofRefusal::Unavailable(_) => "sts_unavailable",
        }
    }
}

/// The STS endpoint this process's environment names for itself (`AWS_ENDPOINT_URL_STS`, else
/// `AWS_ENDPOINT_URL`, as the AWS SDKs read them), if any.
pub fn sts_endpoint_from_env() -> Option<String> {
    ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        .map(|u| u.trim().trim_end_matches('/').to_owned())
}

/// Whether `host` is a public STS endpoint: `sts.amazonaws.com` or `sts.REGION.amazonaws.com`
/// (`.com.cn` in China).
fn is_public_sts_host(host: &str) -> bool {
    let rest = match host.strip_suffix(".amazonaws.com") {
        Some(r) => r,
        None => match host.strip_suffix(".amazonaws.com.cn") {
            Some(r) => r,
            None => return false,
        },
    };
    if rest == "sts" {
        return true;
    }
    rest.strip_prefix("sts.").is_some_and(|region| {
        !region.is_empty()
            && region.len() <= 32
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// The parts of a SigV4 `Authorization` header that decide what was signed.
struct Signature {
    service: String,
    signed: Vec<String>,
}

fn parse_authorization(value: &str) -> Result<Signature, ProofRefusal> {
    let unsigned = |why: &str| ProofRefusal::Unsigned(why.to_owned());
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| unsigned("no AWS4-HMAC-SHA256 authorization header"))?;
    let mut credential = None;
    let mut signed = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').unwrap_or(("", ""));
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| unsigned("no Credential in the authorization"))?;
    // AKID/DATE/REGION/SERVICE/aws4_request
    let scope: Vec<&str> = credential.split('/').collect();
    let [_, _, _, service, "aws4_request"] = scope[..] else {
        return Err(unsigned(
            "the Credential scope is not KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    let signed = signed
        .ok_or_else(|| unsigned("no SignedHeaders in the authorization"))?
        .split(';')
        .map(str::to_owned)
        .collect();
    Ok(Signature {
        service: service.to_owned(),
        signed,
    })
}

/// Where proofs are checked and sent: the STS endpoint the environment names (then only that
/// one is trusted), or the public regional ones.
#[derive(Debug, Clone)]
pub struct StsForwarder {
    endpoint: Option<String>,
    client: reqwest::Client,
}

impl StsForwarder {
    /// Trusts `endpoint` alone when given (e.g. from [`sts_endpoint_from_env`]), else the
    /// public STS hosts over https.
    pub fn new(endpoint: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        StsForwarder { endpoint, client }
    }

    /// Trusts what this process's environment names ([`sts_endpoint_from_env`]).
    pub fn from_env() -> Self {
        StsForwarder::new(sts_endpoint_from_env())
    }

    /// The URL to send a proof signed for `host` to, if that host is trusted.
    fn target(&self, host: &str) -> Result<String, ProofRefusal> {
        match &self.endpoint {
            Some(url) => {
                let authority = url.split_once("://").map_or(url.as_str(), |(_, a)| a);
                let authority = authority.split('/').next().unwrap_or_default();
                if host.eq_ignore_ascii_case(authority) {
                    Ok(format!("{url}/"))
                } else {
                    Err(ProofRefusal::UntrustedHost(host.to_owned()))
                }
            }
            None if is_public_sts_host(host) => Ok(format!("https://{host}/")),
            None => Err(ProofRefusal::UntrustedHost(host.to_owned())),
        }
    }

    /// Checks `proof` for this token service (`audience`, its issuer) at `now`, forwards it to
    /// STS, and answers who signed it.
    pub async fn caller(
        &self,
        proof: &IdentityProof,
        audience: &str,
        now: OffsetDateTime,
    ) -> Result<AwsCaller, ProofRefusal> {
        let headers: BTreeMap<String, &str> = proof
            .headers
            .iter()
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.as_str()))
            .collect();
        let target = check(proof, &headers, audience, now).and_then(|host| self.target(host))?;
        let mut request = self.client.post(&target);
        for (name, value) in &headers {
            // What was signed, and the signature; host comes from the URL (the same, by
            // `target`), the length from the body.
            let signed = SIGNABLE.contains(&name.as_str()) || name == "authorization";
            if signed && name != "host" && name != "content-length" {
                request = request.header(name.as_str(), *value);
            }
        }
        let answer = request
            .body(proof.body.clone())
            .send()
            .await
            .map_err(|e| ProofRefusal::Unavailable(format!("{target}: {e}")))?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|e| ProofRefusal::Unavailable(format!("reading the answer: {e}")))?;
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(ProofRefusal::Unavailable(format!("STS answered {status}")));
        }
        if !status.is_success() {
            return Err(ProofRefusal::Refused {
                code: element(&text, "Code").unwrap_or("unknown").to_owned(),
                message: element(&text, "Message").unwrap_or_default().to_owned(),
            });
        }
        let account = element(&text, "Account")
            .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| ProofRefusal::Unavailable("STS's answer names no account".into()))?;
        Ok(AwsCaller {
            account: account.to_owned(),
            arn: element(&text, "Arn").unwrap_or_default().to_owned(),
        })
    }
}

/// The local checks of a proof; answers the signed host.
fn check<'a>(
    proof: &IdentityProof,
    headers: &BTreeMap<String, &'a str>,
    audience: &str,
    now: OffsetDateTime,
) -> Result<&'a str, ProofRefusal> {
    let mut pairs: Vec<(String, String)> = proof
        .body
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    pairs.sort();
    if pairs
        != [
            ("Action".to_owned(), "GetCallerIdentity".to_owned()),
            ("Version".to_owned(), "2011-06-15".to_owned()),
        ]
    {
        return Err(ProofRefusal::NotGetCallerIdentity);
    }
    let authorization = headers
        .get("authorization")
        .ok_or_else(|| ProofRefusal::Unsigned("no authorization header".into()))?;
    let signature = parse_authorization(authorization)?;
    if signature.service != "sts" {
        return Err(ProofRefusal::Unsigned(format!(
            "signed for the service {:?}, not sts",
            signature.service
        )));
    }
    for must in ["host", "x-amz-date"] {
        if !signature.signed.iter().any(|s| s == must) {
            return Err(ProofRefusal::Unsigned(format!("{must} is not signed")));
        }
    }
    if let Some(other) = signature
        .signed
        .iter()
        .find(|s| !SIGNABLE.contains(&s.as_str()))
    {
        return Err(ProofRefusal::Unsigned(format!(
            "{other} may not be signed (only {})",
            SIGNABLE.join(", ")
        )));
    }
    let found = headers.get(AUDIENCE_HEADER).copied().unwrap_or_default();
    let audience_signed = signature.signed.iter().any(|s| s == AUDIENCE_HEADER);
    if !audience_signed || found != audience {
        return Err(ProofRefusal::WrongAudience {
            found: if audience_signed {
                found.to_owned()
            } else {
                String::new()
            },
            expected: audience.to_owned(),
        });
    }
    let date = headers.get("x-amz-date").copied().unwrap_or_default();
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let signed_at = time::PrimitiveDateTime::parse(date, format)
        .map_err(|_| {
            ProofRefusal::Unsigned(format!("x-amz-date {date:?} is not YYYYMMDDTHHMMSSZ"))
        })?
        .assume_utc();
    if (now - signed_at).unsigned_abs() > MAX_SKEW {
        return Err(ProofRefusal::Stale {
            date: date.to_owned(),
        });
    }
    let host = headers
        .get("host")
        .copied()
        .ok_or_else(|| ProofRefusal::Unsigned("no host header".into()))?;
    Ok(host)
}

/// The text of the first `<name>…</name>` in an STS answer (its documents are flat and fixed;
/// a value is never nested markup).
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "20261206T120000Z";

    fn proof(f: impl FnOnce(&mut BTreeMap<String, String>)) -> IdentityProof {
        let mut headers = BTreeMap::from([
            ("Host".to_owned(), "sts.us-east-1.amazonaws.com".to_owned()),
            ("X-Amz-Date".to_owned(), NOW.to_owned()),
            (AUDIENCE_HEADER.to_owned(), "seller".to_owned()),
            (
                "Authorization".to_owned(),
                "AWS4-HMAC-SHA256 Credential=AKID/20261206/us-east-1/sts/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-sealbox-token-service, Signature=ab"
                    .to_owned(),
            ),
        ]);
        f(&mut headers);
        IdentityProof {
            headers,
            body: GET_CALLER_IDENTITY.to_owned(),
        }
    }

    fn checked(p: &IdentityProof, now: &str) -> Result<String, ProofRefusal> {
        let format =
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let now = time::PrimitiveDateTime::parse(now, format)
            .unwrap()
            .assume_utc();
        let headers = p
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        let host = check(p, &headers, "seller", now)?;
        StsForwarder::new(None).target(host)
    }

    #[test]
    fn a_well_formed_proof_goes_to_the_regional_sts_host_it_was_signed_for() {
        assert_eq!(
            checked(&proof(|_| {}), NOW).unwrap(),
            "https://sts.us-east-1.amazonaws.com/"
        );
    }

    #[test]
    fn a_proof_for_another_service_or_naming_none_is_refused() {
        let other = proof(|h| {
            h.insert(AUDIENCE_HEADER.into(), "another-seller".into());
        });
        assert!(matches!(
            checked(&other, NOW),
            Err(ProofRefusal::WrongAudience { .. })
        ));
        let unsigned_audience = proof(|h| {
            h.insert(
                "Authorization".into(),
                "AWS4-HMAC-SHA256 Credential=AKID/20261206/us-east-1/sts/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=ab"
                    .into(),
            );
        });
        assert!(matches!(
            checked(&unsigned_audience, NOW),
            Err(ProofRefusal::WrongAudience { .. })
        ));
    }

    #[test]
    fn a_proof_older_than_fifteen_minutes_is_stale() {
        assert!(checked(&proof(|_| {}), "20261206T121400Z").is_ok());
        assert!(matches!(
            checked(&proof(|_| {}), "20261206T121600Z"),
            Err(ProofRefusal::Stale { .. })
        ));
    }

    #[test]
    fn only_sts_hosts_are_trusted() {
        for host in [
            "evil.example",
            "sts.us-east-1.amazonaws.com.evil.example",
            "s3.amazonaws.com",
            "sts.us-east-1.amazonaws.com/evil",
            "127.0.0.1:5000",
        ] {
            let p = proof(|h| {
                h.insert("Host".into(), host.into());
            });
            assert!(
                matches!(checked(&p, NOW), Err(ProofRefusal::UntrustedHost(_))),
                "{host}"
            );
        }
        let global = proof(|h| {
            h.insert("Host".into(), "sts.amazonaws.com".into());
        });
        assert_eq!(checked(&global, NOW).unwrap(), "https://sts.amazonaws.com/");
        let mock = StsForwarder::new(Some("http://127.0.0.1:5000".into()));
        assert_eq!(
            mock.target("127.0.0.1:5000").unwrap(),
            "http://127.0.0.1:5000/"
        );
        assert!(mock.target("sts.us-east-1.amazonaws.com").is_err());
    }

    #[test]
    fn a_body_that_is_not_get_caller_identity_is_refused() {
        for body in [
            "Action=AssumeRole&Version=2011-06-15",
            "Action=GetCallerIdentity&Version=2011-06-15&RoleArn=x",
            "",
        ] {
            let mut p = proof(|_| {});
            p.body = body.into();
            assert_eq!(
                checked(&p, NOW),
                Err(ProofRefusal::NotGetCallerIdentity),
                "{body}"
            );
        }
    }

    #[test]
    fn headers_beyond_the_few_a_proof_needs_may_not_be_signed() {
        let p = proof(|h| {
            h.insert(
                "Authorization".into(),
                "AWS4-HMAC-SHA256 Credential=AKID/20261206/us-east-1/sts/aws4_request, \
                 SignedHeaders=host;x-amz-date;x-forwarded-for;x-sealbox-token-service, Signature=ab"
                    .into(),
            );
        });
        assert!(matches!(checked(&p, NOW), Err(ProofRefusal::Unsigned(_))));
        let s3 = proof(|h| {
            h.insert(
                "Authorization".into(),
                "AWS4-HMAC-SHA256 Credential=AKID/20261206/us-east-1/s3/aws4_request, \
                 SignedHeaders=host;x-amz-date;x-sealbox-token-service, Signature=ab"
                    .into(),
            );
        });
        assert!(matches!(checked(&s3, NOW), Err(ProofRefusal::Unsigned(_))));
    }

    #[test]
    fn the_account_is_read_from_stss_answer() {
        let xml = "<GetCallerIdentityResponse><GetCallerIdentityResult>\
                   <Arn>arn:aws:sts::444455556666:assumed-role/r/s</Arn>\
                   <UserId>X:s</UserId><Account>444455556666</Account>\
                   </GetCallerIdentityResult></GetCallerIdentityResponse>";
        assert_eq!(element(xml, "Account"), Some("444455556666"));
        assert_eq!(
            element(xml, "Arn"),
            Some("arn:aws:sts::444455556666:assumed-role/r/s")
        );
        assert_eq!(element(xml, "Nope"), None);
    }
}
