//! Encodings between KMS and JOSE: KMS signs and publishes keys in X.509/DER forms, JWS wants raw
//! ones. Pure functions over bytes, with no AWS SDK, so they are tested here.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};

use crate::error::AuthzError;
use crate::keyset::KeyAlg;

/// The largest message KMS `Sign` accepts with `MessageType: RAW`; a longer one must be digested.
pub const KMS_MAX_MESSAGE_BYTES: usize = 4096;

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// OID contents of id-ecPublicKey (1.2.840.10045.2.1).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// OID contents of prime256v1 (1.2.840.10045.3.1.7).
const OID_PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// OID contents of id-Ed25519 (1.3.101.112).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Converts KMS's `ECDSA_SHA_256` signature (DER `SEQUENCE { r, s }`) to JWS ES256's `r‖s`
/// (RFC 7518 §3.4), refusing anything that is not strict DER.
pub fn ecdsa_der_to_fixed(der: &[u8]) -> Result<[u8; 64], AuthzError> {
    parse_ecdsa_der(der).map_err(|why| {
        AuthzError::Crypto(format!("KMS signature is not a DER ECDSA signature: {why}"))
    })
}

/// The raw public key JOSE needs from KMS `GetPublicKey`'s DER SubjectPublicKeyInfo: the 65-byte
/// uncompressed point for ES256, the 32-byte key for EdDSA.
pub fn public_key_from_spki(der: &[u8], alg: KeyAlg) -> Result<Vec<u8>, AuthzError> {
    // aws-lc-rs parses an SPKI (`ParsedPublicKey::new`) but gives back only the input bytes or a
    // re-encoded SPKI, never the raw point (`AsBigEndian<EcPublicKeyUncompressedBin>` exists only
    // on keys it generated), and it also accepts bare points. So a strict DER walk extracts the
    // key, and aws-lc-rs then checks that a P-256 point is on the curve.
    let spki = parse_spki(der).map_err(|why| {
        AuthzError::Crypto(format!(
            "KMS public key is not a DER SubjectPublicKeyInfo: {why}"
        ))
    })?;
    match alg {
        KeyAlg::ES256 => {
            if spki.algorithm != OID_EC_PUBLIC_KEY
                || spki.parameters != Some((TAG_OID, OID_PRIME256V1))
            {
                return Err(crypto("KMS public key is not a P-256 key"));
            }
            match spki.key {
                [0x04, ..] if spki.key.len() == 65 => {}
                [0x02 | 0x03, ..] => {
                    return Err(crypto(
                        "KMS public key is a compressed P-256 point; JOSE needs it uncompressed",
                    ));
                }
                _ => return Err(crypto("KMS public key is not an uncompressed P-256 point")),
            }
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, spki.key)
                .map_err(|_| crypto("KMS public key is not a point on P-256"))?;
        }
        KeyAlg::EdDSA => {
            // RFC 8410 §3: the parameters of id-Ed25519 are absent.
            if spki.algorithm != OID_ED25519 || spki.parameters.is_some() {
                return Err(crypto("KMS public key is not an Ed25519 key"));
            }
            if spki.key.len() != 32 {
                return Err(crypto("KMS public key is not a 32-byte Ed25519 key"));
            }
        }
    }
    Ok(spki.key.to_vec())
}

fn crypto(message: &str) -> AuthzError {
    AuthzError::Crypto(message.to_owned())
}

// A hand-written parser: the structures are two fixed shapes of a few dozen bytes, and a DER
// crate (or the RustCrypto ecdsa/p256 stack) would be a new dependency for one conversion each.

/// A cursor over DER bytes that reads one TLV at a time.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(input: &'a [u8]) -> Self {
        Der { rest: input }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The contents of the next element, which must carry `tag` (`what` names it in errors).
    fn read(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        let (&found, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| format!("truncated: {what} is missing"))?;
        if found != tag {
            return Err(format!(
                "wrong tag: expected {what} (0x{tag:02x}), found 0x{found:02x}"
            ));
        }
        let (&first, rest) = rest
            .split_first()
            .ok_or_else(|| format!("truncated: {what} has no length"))?;
        // DER lengths are definite and minimal: short form below 128, else `0x81 n` with n >= 128.
        // Nothing KMS sends here reaches 256 bytes, so longer forms are refused.
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81 => match rest.split_first() {
                Some((&n, rest)) if n >= 0x80 => (usize::from(n), rest),
                Some(_) => return Err(format!("{what} has a non-minimal long-form length")),
                None => return Err(format!("truncated: {what} has no length")),
            },
            _ => {
                return Err(format!(
                    "{what} has an unsupported length encoding 0x{first:02x}"
                ));
            }
        };
        if rest.len() < len {
            return Err(format!(
                "truncated: {what} says {len} bytes but {} remain",
                rest.len()
            ));
        }
        let (contents, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(contents)
    }
}

fn parse_ecdsa_der(der: &[u8]) -> Result<[u8; 64], String> {
    if der.is_empty() {
        return Err("empty input".to_owned());
    }
    let mut outer = Der::new(der);
    let sequence = outer.read(TAG_SEQUENCE, "SEQUENCE")?;
    if !outer.is_empty() {
        return Err("trailing bytes".to_owned());
    }
    let mut inner = Der::new(sequence);
    let r = inner.read(TAG_INTEGER, "INTEGER r")?;
    let s = inner.read(TAG_INTEGER, "INTEGER s")?;
    if !inner.is_empty() {
        return Err("trailing bytes inside the SEQUENCE".to_owned());
    }
    let mut fixed = [0u8; 64];
    let (r_out, s_out) = fixed.split_at_mut(32);
    put_scalar(r, "r", r_out)?;
    put_scalar(s, "s", s_out)?;
    Ok(fixed)
}

/// Writes a positive, minimally encoded DER INTEGER into `out` (32 bytes), left-padded with zeros.
fn put_scalar(contents: &[u8], name: &str, out: &mut [u8]) -> Result<(), String> {
    let magnitude = match contents {
        [] => return Err(format!("{name} is empty")),
        [0x00] => return Err(format!("{name} is zero")),
        // A leading zero is allowed only to keep a high-bit value positive.
        [0x00, next, ..] if next & 0x80 == 0 => {
            return Err(format!("{name} is not minimally encoded"));
        }
        [0x00, magnitude @ ..] => magnitude,
        [first, ..] if first & 0x80 != 0 => return Err(format!("{name} is negative")),
        _ => contents,
    };
    if magnitude.len() > out.len() {
        return Err(format!(
            "{name} has {} significant bytes, more than {}",
            magnitude.len(),
            out.len()
        ));
    }
    let pad = out.len() - magnitude.len();
    out[pad..].copy_from_slice(magnitude);
    Ok(())
}

/// The parts of a SubjectPublicKeyInfo that say which key it is.
struct Spki<'a> {
    /// The algorithm OID's contents.
    algorithm: &'a [u8],
    /// The parameters' tag and contents, if present.
    parameters: Option<(u8, &'a [u8])>,
    /// The subjectPublicKey BIT STRING without its unused-bits byte.
    key: &'a [u8],
}

fn parse_spki(der: &[u8]) -> Result<Spki<'_>, String> {
    if der.is_empty() {
        return Err("empty input".to_owned());
    }
    let mut outer = Der::new(der);
    let spki = outer.read(TAG_SEQUENCE, "SEQUENCE")?;
    if !outer.is_empty() {
        return Err("trailing bytes".to_owned());
    }
    let mut spki = Der::new(spki);
    let mut identifier = Der::new(spki.read(TAG_SEQUENCE, "AlgorithmIdentifier")?);
    let algorithm = identifier.read(TAG_OID, "algorithm OID")?;
    // Any parameters are kept with their tag: which ones are right depends on the key type (a
    // named curve's OID, or none), and RSA's NULL should read as "wrong key", not as bad DER.
    let parameters = match identifier.peek_tag() {
        None => None,
        Some(tag) => Some((tag, identifier.read(tag, "algorithm parameters")?)),
    };
    if !identifier.is_empty() {
        return Err("trailing bytes inside the AlgorithmIdentifier".to_owned());
    }
    let bits = spki.read(TAG_BIT_STRING, "subjectPublicKey BIT STRING")?;
    if !spki.is_empty() {
        return Err("trailing bytes inside the SEQUENCE".to_owned());
    }
    let key = match bits {
        [0x00, key @ ..] => key,
        [] => return Err("subjectPublicKey is empty".to_owned()),
        _ => return Err("subjectPublicKey has unused bits".to_owned()),
    };
    Ok(Spki {
        algorithm,
        parameters,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPublicKeyCompressedBin, PublicKeyX509Der};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair, UnparsedPublicKey,
    };
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        assert!(contents.len() < 0x80, "test helper builds short forms only");
        let mut out = vec![tag, contents.len() as u8];
        out.extend_from_slice(contents);
        out
    }

    fn signature(r: &[u8], s: &[u8]) -> Vec<u8> {
        tlv(
            TAG_SEQUENCE,
            &[tlv(TAG_INTEGER, r), tlv(TAG_INTEGER, s)].concat(),
        )
    }

    fn rejection(der: &[u8]) -> String {
        match ecdsa_der_to_fixed(der) {
            Err(AuthzError::Crypto(message)) => message,
            other => panic!("expected a Crypto error for {der:02x?}, got {other:?}"),
        }
    }

    fn spki_rejection(der: &[u8], alg: KeyAlg) -> String {
        match public_key_from_spki(der, alg) {
            Err(AuthzError::Crypto(message)) => message,
            other => panic!("expected a Crypto error, got {other:?}"),
        }
    }

    fn p256_spki(key: &[u8]) -> Vec<u8> {
        let identifier = [
            tlv(TAG_OID, OID_EC_PUBLIC_KEY),
            tlv(TAG_OID, OID_PRIME256V1),
        ]
        .concat();
        let bits = [&[0x00], key].concat();
        tlv(
            TAG_SEQUENCE,
            &[tlv(TAG_SEQUENCE, &identifier), tlv(TAG_BIT_STRING, &bits)].concat(),
        )
    }

    fn spki_of(pair: &impl KeyPair<PublicKey: AsDer<PublicKeyX509Der<'static>>>) -> Vec<u8> {
        pair.public_key().as_der().unwrap().as_ref().to_vec()
    }

    /// A valid signature: r with its high bit set (so DER prefixes 0x00), s of 32 bytes.
    fn high_bit_r() -> ([u8; 32], [u8; 32]) {
        let r = std::array::from_fn(|i| 0x80 | i as u8);
        let s = std::array::from_fn(|i| 0x40 + i as u8);
        (r, s)
    }

    #[test]
    fn der_signatures_from_aws_lc_convert_to_fixed_ones_that_verify() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let verifier = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref());
        let rng = SystemRandom::new();
        let (mut short_scalars, mut high_bit_scalars) = (0, 0);
        // About one scalar in 256 is shorter than 32 bytes: 2000 signatures (4000 scalars) make
        // missing one a one-in-millions event, and half of them have the high bit set.
        for i in 0..2000u32 {
            let message = format!("message {i}");
            let der = pair.sign(&rng, message.as_bytes()).unwrap();
            let fixed = ecdsa_der_to_fixed(der.as_ref()).unwrap();
            verifier.verify(message.as_bytes(), &fixed).unwrap();
            for first in [fixed[0], fixed[32]] {
                short_scalars += usize::from(first == 0);
                high_bit_scalars += usize::from(first & 0x80 != 0);
            }
        }
        assert!(short_scalars > 0, "no short r or s came up");
        assert!(high_bit_scalars > 0, "no high-bit r or s came up");
    }

    #[test]
    fn high_bit_r_drops_its_zero_prefix() {
        let (r, s) = high_bit_r();
        let der = signature(&[&[0x00], &r[..]].concat(), &s);
        let fixed = ecdsa_der_to_fixed(&der).unwrap();
        assert_eq!(&fixed[..32], &r);
        assert_eq!(&fixed[32..], &s);
    }

    #[test]
    fn short_s_is_left_padded_to_32_bytes() {
        let (r, _) = high_bit_r();
        let s: Vec<u8> = (1..=31).collect();
        let der = signature(&[&[0x00], &r[..]].concat(), &s);
        let fixed = ecdsa_der_to_fixed(&der).unwrap();
        assert_eq!(fixed[32], 0);
        assert_eq!(&fixed[33..], &s[..]);
    }

    #[test]
    fn trailing_bytes_after_the_sequence_are_refused() {
        let (r, s) = high_bit_r();
        let mut der = signature(&[&[0x00], &r[..]].concat(), &s);
        der.push(0x00);
        assert_eq!(
            rejection(&der),
            "KMS signature is not a DER ECDSA signature: trailing bytes"
        );
    }

    #[test]
    fn trailing_bytes_inside_the_sequence_are_refused() {
        let contents = [tlv(TAG_INTEGER, &[1]), tlv(TAG_INTEGER, &[1]), vec![0]].concat();
        let der = tlv(TAG_SEQUENCE, &contents);
        assert!(rejection(&der).contains("trailing bytes inside the SEQUENCE"));
    }

    #[test]
    fn an_outer_length_that_does_not_match_the_input_is_refused() {
        let der = signature(&[1], &[2]);
        let mut longer = der.clone();
        longer[1] += 1;
        assert!(rejection(&longer).contains("truncated"));
        let mut shorter = der.clone();
        shorter[1] -= 1;
        // The SEQUENCE now ends one byte early: what is left over is trailing.
        assert!(rejection(&shorter).contains("trailing bytes"));
    }

    #[test]
    fn long_form_lengths_that_short_form_could_say_are_refused() {
        let short = signature(&[1], &[2]);
        let long = [&[TAG_SEQUENCE, 0x81], &short[1..]].concat();
        assert!(rejection(&long).contains("non-minimal long-form length"));
        let indefinite = [&[TAG_SEQUENCE, 0x80], &short[2..], &[0, 0]].concat();
        assert!(rejection(&indefinite).contains("unsupported length encoding 0x80"));
    }

    #[test]
    fn a_negative_integer_is_refused() {
        let (r, s) = high_bit_r();
        assert!(rejection(&signature(&r, &s)).ends_with("r is negative"));
    }

    #[test]
    fn a_needless_leading_zero_is_refused() {
        let (_, s) = high_bit_r();
        let der = signature(&[1], &[&[0x00], &s[..]].concat());
        assert!(rejection(&der).ends_with("s is not minimally encoded"));
    }

    #[test]
    fn an_integer_of_33_significant_bytes_is_refused() {
        let (r, s) = high_bit_r();
        let r33 = [&[0x00, 0x80], &r[..]].concat();
        assert!(
            rejection(&signature(&r33, &s)).ends_with("r has 33 significant bytes, more than 32")
        );
        let s33 = [&[0x01], &s[..]].concat();
        assert!(
            rejection(&signature(&[1], &s33)).ends_with("s has 33 significant bytes, more than 32")
        );
    }

    #[test]
    fn a_zero_or_empty_integer_is_refused() {
        assert!(rejection(&signature(&[0], &[1])).ends_with("r is zero"));
        assert!(rejection(&signature(&[1], &[])).ends_with("s is empty"));
    }

    #[test]
    fn a_wrong_tag_is_refused() {
        let mut set = signature(&[1], &[2]);
        set[0] = 0x31;
        assert!(rejection(&set).contains("expected SEQUENCE (0x30), found 0x31"));
        let bits = tlv(
            TAG_SEQUENCE,
            &[tlv(TAG_INTEGER, &[1]), tlv(TAG_BIT_STRING, &[2])].concat(),
        );
        assert!(rejection(&bits).contains("expected INTEGER s (0x02), found 0x03"));
    }

    #[test]
    fn empty_input_is_refused() {
        assert_eq!(
            rejection(&[]),
            "KMS signature is not a DER ECDSA signature: empty input"
        );
    }

    #[test]
    fn every_truncation_of_a_valid_signature_is_refused() {
        let (r, s) = high_bit_r();
        let der = signature(&[&[0x00], &r[..]].concat(), &s);
        for len in 1..der.len() {
            rejection(&der[..len]);
        }
        let only_r = tlv(TAG_SEQUENCE, &tlv(TAG_INTEGER, &[1]));
        assert!(rejection(&only_r).contains("truncated: INTEGER s is missing"));
    }

    #[test]
    fn p256_spki_gives_back_the_uncompressed_point() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let point = public_key_from_spki(&spki_of(&pair), KeyAlg::ES256).unwrap();
        assert_eq!(point.len(), 65);
        assert_eq!(point, pair.public_key().as_ref());
    }

    #[test]
    fn ed25519_spki_gives_back_the_32_byte_key() {
        let pair = Ed25519KeyPair::generate().unwrap();
        let key = public_key_from_spki(&spki_of(&pair), KeyAlg::EdDSA).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(key, pair.public_key().as_ref());
    }

    #[test]
    fn p256_spki_asked_as_eddsa_is_refused() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        assert_eq!(
            spki_rejection(&spki_of(&pair), KeyAlg::EdDSA),
            "KMS public key is not an Ed25519 key"
        );
    }

    #[test]
    fn ed25519_spki_asked_as_es256_is_refused() {
        let pair = Ed25519KeyPair::generate().unwrap();
        assert_eq!(
            spki_rejection(&spki_of(&pair), KeyAlg::ES256),
            "KMS public key is not a P-256 key"
        );
    }

    #[test]
    fn p384_spki_asked_as_es256_is_refused() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
        assert_eq!(
            spki_rejection(&spki_of(&pair), KeyAlg::ES256),
            "KMS public key is not a P-256 key"
        );
    }

    #[test]
    fn rsa_spki_is_refused_as_the_wrong_key_type() {
        // rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters, as RFC 3279 writes it.
        let rsa_oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        let identifier = [tlv(TAG_OID, &rsa_oid), vec![0x05, 0x00]].concat();
        let spki = tlv(
            TAG_SEQUENCE,
            &[
                tlv(TAG_SEQUENCE, &identifier),
                tlv(TAG_BIT_STRING, &[0, 0x30, 0]),
            ]
            .concat(),
        );
        assert_eq!(
            spki_rejection(&spki, KeyAlg::ES256),
            "KMS public key is not a P-256 key"
        );
        assert_eq!(
            spki_rejection(&spki, KeyAlg::EdDSA),
            "KMS public key is not an Ed25519 key"
        );
    }

    #[test]
    fn compressed_p256_point_is_refused() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let compressed: EcPublicKeyCompressedBin = pair.public_key().as_be_bytes().unwrap();
        let spki = p256_spki(compressed.as_ref());
        // The hand-built SPKI is well formed: the same builder with the full point is accepted.
        let uncompressed = p256_spki(pair.public_key().as_ref());
        assert_eq!(spki_of(&pair), uncompressed);
        assert!(spki_rejection(&spki, KeyAlg::ES256).contains("compressed P-256 point"));
    }

    #[test]
    fn p256_point_off_the_curve_is_refused() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let mut point = pair.public_key().as_ref().to_vec();
        point[64] ^= 1;
        assert_eq!(
            spki_rejection(&p256_spki(&point), KeyAlg::ES256),
            "KMS public key is not a point on P-256"
        );
    }

    #[test]
    fn garbage_is_refused_as_a_public_key() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let spki = spki_of(&pair);
        let mut trailing = spki.clone();
        trailing.push(0);
        let garbage: [&[u8]; 5] = [
            &[],
            b"not a key at all",
            &spki[..40],
            &trailing,
            &[0x30, 0x00],
        ];
        for der in garbage {
            for alg in [KeyAlg::ES256, KeyAlg::EdDSA] {
                let message = spki_rejection(der, alg);
                assert!(
                    message.starts_with("KMS public key is not a DER SubjectPublicKeyInfo: "),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn es256_jwt_signed_by_a_der_signer_verifies_with_jsonwebtoken() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let point = public_key_from_spki(&spki_of(&pair), KeyAlg::ES256).unwrap();
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
        let header = br#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#;
        let claims = format!(r#"{{"sub":"buyer-1","exp":{exp}}}"#);
        let signing_input = format!("{}.{}", B64.encode(header), B64.encode(&claims));
        assert!(signing_input.len() <= KMS_MAX_MESSAGE_BYTES);
        let der = pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();

        let key = jsonwebtoken::DecodingKey::from_ec_der(&point);
        let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        let fixed = ecdsa_der_to_fixed(der.as_ref()).unwrap();
        let token = format!("{signing_input}.{}", B64.encode(fixed));
        let decoded = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
        assert_eq!(decoded.header.kid.as_deref(), Some("k1"));
        assert_eq!(decoded.claims["sub"], "buyer-1");

        // The DER signature as KMS returns it is not a JWS signature: why this module exists.
        let unconverted = format!("{signing_input}.{}", B64.encode(der.as_ref()));
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(&unconverted, &key, &validation).is_err()
        );
    }
}
