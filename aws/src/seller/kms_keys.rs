//! The KMS key store: each signing key is a KMS asymmetric key whose private half never leaves
//! KMS (sealbox calls `CreateKey`, `GetPublicKey`, `Sign`, `DisableKey` and
//! `ScheduleKeyDeletion`, nothing that could export it). The keyset's states (next, current,
//! previous, revoked) live in one DynamoDB item changed only by conditional writes, so two
//! changes racing end with one winner and a consistent keyset.
//!
//! Table layout: partition key `id` (S). The item `id = "keyset"` holds `version` (N, one more
//! at every change; each write is conditional on the version it read), `keyset` (S: the keyset
//! JSON with public keys and KMS key ids, never a private key) and `updated_at` (S, RFC 3339).
//!
//! KMS keys this store makes and then does not use (a lost race, a failed write) and keys that
//! leave the keyset (retired or revoked) are disabled and scheduled for deletion after KMS's
//! shortest window, 7 days. Every key carries the tag `sealbox:keys-table` naming its table.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec, Tag};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use sealbox_authz::AuthzError;
use sealbox_authz::jose::{KMS_MAX_MESSAGE_BYTES, ecdsa_der_to_fixed, public_key_from_spki};
use sealbox_authz::key_store::{KeyStore, Rotation};
use sealbox_authz::keyset::{FreshKey, KeyAlg, KeyEntry, KeyState, Keyset, RETIRE_AFTER};
use time::OffsetDateTime;

use super::sdk_sentence;

/// The item's partition key value: one keyset per table.
const ITEM_ID: &str = "keyset";
/// Lost races retried before giving up (each retry reads the winner's keyset first).
const MAX_ATTEMPTS: usize = 8;
/// KMS's shortest deletion window.
const DELETION_WINDOW_DAYS: i32 = 7;

/// Signing keys in KMS, their states in a DynamoDB item.
#[derive(Debug, Clone)]
pub struct KmsKeyStore {
    kms: aws_sdk_kms::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
}

fn kms_error<E, R>(what: &str, e: &SdkError<E, R>) -> AuthzError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    AuthzError::KeyStore(format!("KMS {what}: {}", sdk_sentence(e)))
}

/// Creates the keys table if it does not exist (on-demand billing, key `id`).
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), AuthzError> {
    crate::dynamodb_table::ensure_table(client, table, "id", None)
        .await
        .map_err(AuthzError::KeyStore)
}

impl KmsKeyStore {
    /// The key store whose keyset item is in `table`.
    pub fn new(
        kms: aws_sdk_kms::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
    ) -> Self {
        KmsKeyStore {
            kms,
            dynamodb,
            table: table.into(),
        }
    }

    fn table_error<E, R>(&self, what: &str, e: &SdkError<E, R>) -> AuthzError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        AuthzError::KeyStore(format!(
            "{what} of table {}: {}",
            self.table,
            sdk_sentence(e)
        ))
    }

    /// The stored keyset and its version, read consistently; `None` before `init`.
    async fn read(&self) -> Result<Option<(Keyset, u64)>, AuthzError> {
        let got = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(ITEM_ID.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.table_error("GetItem", &e))?;
        let Some(item) = got.item else {
            return Ok(None);
        };
        let corrupt = |detail: String| AuthzError::Corrupt {
            path: format!("table {} item {ITEM_ID}", self.table),
            detail,
        };
        let version = match item.get("version") {
            Some(AttributeValue::N(n)) => n
                .parse::<u64>()
                .map_err(|e| corrupt(format!("version {n:?}: {e}")))?,
            _ => return Err(corrupt("no numeric attribute version".into())),
        };
        let keyset: Keyset = match item.get("keyset") {
            Some(AttributeValue::S(json)) => {
                serde_json::from_str(json).map_err(|e| corrupt(format!("keyset: {e}")))?
            }
            _ => return Err(corrupt("no string attribute keyset".into())),
        };
        keyset
            .current()
            .map_err(|_| corrupt("no key in state current".into()))?;
        Ok(Some((keyset, version)))
    }

    /// Writes `keyset` as the version after `read` (or the first one); `false` if another
    /// change was written first.
    async fn write(&self, keyset: &Keyset, read: Option<u64>) -> Result<bool, AuthzError> {
        let json = serde_json::to_string(keyset)
            .map_err(|e| AuthzError::KeyStore(format!("keyset JSON: {e}")))?;
        let next = read.map_or(1, |v| v + 1);
        let mut put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(ITEM_ID.into()))
            .item("version", AttributeValue::N(next.to_string()))
            .item("keyset", AttributeValue::S(json))
            .item(
                "updated_at",
                AttributeValue::S(sealbox_core::contract::rfc3339(OffsetDateTime::now_utc())),
            );
        put = match read {
            None => put.condition_expression("attribute_not_exists(id)"),
            Some(v) => put
                .condition_expression("version = :read")
                .expression_attribute_values(":read", AttributeValue::N(v.to_string())),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.table_error("PutItem", &e)),
        }
    }

    /// A new KMS signing key of `alg`, with its public key read back.
    async fn create_key(&self, alg: KeyAlg, state: KeyState) -> Result<KeyEntry, AuthzError> {
        let spec = match alg {
            KeyAlg::ES256 => KeySpec::EccNistP256,
            KeyAlg::EdDSA => KeySpec::EccNistEdwards25519,
        };
        let tag = Tag::builder()
            .tag_key("sealbox:keys-table")
            .tag_value(&self.table)
            .build()
            .map_err(|e| AuthzError::KeyStore(e.to_string()))?;
        let made = self
            .kms
            .create_key()
            .key_spec(spec)
            .key_usage(KeyUsageType::SignVerify)
            .description(format!("sealbox token signing key ({})", self.table))
            .tags(tag)
            .send()
            .await
            .map_err(|e| {
                let mut err = kms_error("CreateKey", &e);
                if alg == KeyAlg::EdDSA
                    && let AuthzError::KeyStore(text) = &mut err
                    && text.contains("ECC_NIST_EDWARDS25519")
                {
                    text.push_str(" (this KMS offers no Ed25519 keys: use --alg es256)");
                }
                err
            })?;
        let key_id = made
            .key_metadata
            .map(|m| m.key_id)
            .ok_or_else(|| AuthzError::KeyStore("KMS CreateKey answered no key".into()))?;
        let public = async {
            let got = self
                .kms
                .get_public_key()
                .key_id(&key_id)
                .send()
                .await
                .map_err(|e| kms_error("GetPublicKey", &e))?;
            let der = got.public_key.ok_or_else(|| {
                AuthzError::KeyStore(format!("KMS GetPublicKey of {key_id} answered no key"))
            })?;
            public_key_from_spki(der.as_ref(), alg)
        }
        .await;
        match public {
            Ok(public) => Ok(KeyEntry::in_kms(alg, state, &public, &key_id)),
            Err(e) => {
                self.discard(&[key_id], "its public key was unusable").await;
                Err(e)
            }
        }
    }

    /// Disables KMS keys sealbox no longer uses and schedules their deletion. Failures are
    /// logged, not returned: the keyset change they follow has been made.
    async fn discard(&self, key_ids: &[String], why: &str) {
        for id in key_ids {
            let disabled = self.kms.disable_key().key_id(id).send().await;
            let scheduled = self
                .kms
                .schedule_key_deletion()
                .key_id(id)
                .pending_window_in_days(DELETION_WINDOW_DAYS)
                .send()
                .await;
            match (disabled, scheduled) {
                (Ok(_), Ok(_)) => {
                    tracing::info!(kms_key = %id, why, "KMS key disabled and scheduled for deletion")
                }
                (d, s) => tracing::warn!(
                    kms_key = %id,
                    why,
                    disable = ?d.err().map(|e| sdk_sentence(&e)),
                    schedule = ?s.err().map(|e| sdk_sentence(&e)),
                    "could not retire a KMS key; disable it and schedule its deletion by hand"
                ),
            }
        }
    }

    /// Applies `op` to the stored keyset and writes the result conditionally, creating the KMS
    /// keys it asks for. `op` answers `None` to leave the keyset as it is. A lost race is
    /// retried on the winner's keyset (so `op` decides again), up to [`MAX_ATTEMPTS`].
    async fn change<T>(
        &self,
        op: impl Fn(&mut Keyset, &mut FreshKey<'_>) -> Result<Option<T>, AuthzError>,
    ) -> Result<(Keyset, Option<T>), AuthzError> {
        for _ in 0..MAX_ATTEMPTS {
            let (stored, version) = self
                .read()
                .await?
                .ok_or_else(|| AuthzError::NoKeyset(self.location()))?;
            // A dry run on a copy says which keys the change needs; KMS keys are made only
            // for a change that will be tried.
            let mut wanted = Vec::new();
            let mut dry = stored.clone();
            let planned = op(&mut dry, &mut |alg, state| {
                wanted.push((alg, state));
                Ok(KeyEntry::in_kms(alg, state, &[], "planned"))
            })?;
            if planned.is_none() {
                return Ok((stored, None));
            }
            let mut made = Vec::new();
            for (alg, state) in &wanted {
                match self.create_key(*alg, *state).await {
                    Ok(k) => made.push(k),
                    Err(e) => {
                        self.discard(&kms_ids(&made), "a keyset change failed")
                            .await;
                        return Err(e);
                    }
                }
            }
            let mut changed = stored.clone();
            let mut fresh = made.clone().into_iter();
            let out = op(&mut changed, &mut |alg, state| {
                fresh
                    .next()
                    .filter(|k| k.alg == alg)
                    .map(|mut k| {
                        k.state = state;
                        k
                    })
                    .ok_or_else(|| {
                        AuthzError::KeyStore(
                            "a keyset change asked for more keys than planned".into(),
                        )
                    })
            });
            let out = match out {
                Ok(Some(out)) => out,
                Ok(None) => {
                    self.discard(&kms_ids(&made), "a keyset change was dropped")
                        .await;
                    return Ok((stored, None));
                }
                Err(e) => {
                    self.discard(&kms_ids(&made), "a keyset change failed")
                        .await;
                    return Err(e);
                }
            };
            match self.write(&changed, Some(version)).await {
                Ok(true) => {
                    let kept: Vec<&str> = changed.keys.iter().map(|k| k.kid.as_str()).collect();
                    let gone: Vec<KeyEntry> = stored
                        .keys
                        .iter()
                        .filter(|k| !kept.contains(&k.kid.as_str()))
                        .cloned()
                        .collect();
                    self.discard(&kms_ids(&gone), "the key left the keyset")
                        .await;
                    return Ok((changed, Some(out)));
                }
                Ok(false) => {
                    self.discard(&kms_ids(&made), "another change to the keyset won")
                        .await;
                }
                Err(e) => {
                    self.discard(&kms_ids(&made), "a keyset change failed")
                        .await;
                    return Err(e);
                }
            }
        }
        Err(AuthzError::KeyStore(format!(
            "table {}: the keyset kept changing under {MAX_ATTEMPTS} attempts; try again",
            self.table
        )))
    }
}

fn kms_ids(keys: &[KeyEntry]) -> Vec<String> {
    keys.iter().filter_map(|k| k.kms_key_id.clone()).collect()
}

#[async_trait]
impl KeyStore for KmsKeyStore {
    fn location(&self) -> String {
        format!("DynamoDB table {}", self.table)
    }

    async fn init(&self, issuer: &str, alg: KeyAlg) -> Result<Keyset, AuthzError> {
        if self.read().await?.is_some() {
            return Err(AuthzError::Exists(self.location()));
        }
        let current = self.create_key(alg, KeyState::Current).await?;
        let next = match self.create_key(alg, KeyState::Next).await {
            Ok(k) => k,
            Err(e) => {
                self.discard(&kms_ids(&[current]), "keyset creation failed")
                    .await;
                return Err(e);
            }
        };
        let made = [current, next];
        let mut fresh = made.clone().into_iter();
        let keyset = Keyset::generate_with(issuer, alg, &mut |_, state| {
            fresh
                .next()
                .map(|mut k| {
                    k.state = state;
                    k
                })
                .ok_or_else(|| AuthzError::KeyStore("keyset creation asked for a third key".into()))
        })?;
        match self.write(&keyset, None).await {
            Ok(true) => Ok(keyset),
            Ok(false) => {
                self.discard(&kms_ids(&made), "another keyset was created first")
                    .await;
                Err(AuthzError::Exists(self.location()))
            }
            Err(e) => {
                self.discard(&kms_ids(&made), "keyset creation failed")
                    .await;
                Err(e)
            }
        }
    }

    async fn load(&self) -> Result<Keyset, AuthzError> {
        self.read()
            .await?
            .map(|(ks, _)| ks)
            .ok_or_else(|| AuthzError::NoKeyset(self.location()))
    }

    async fn rotate(&self, from: &str, now: OffsetDateTime) -> Result<Rotation, AuthzError> {
        let (keyset, done) = self
            .change(|ks, fresh| {
                if ks.current()?.kid != from {
                    return Ok(None);
                }
                ks.rotate_with(now, RETIRE_AFTER, fresh)?;
                Ok(Some(()))
            })
            .await?;
        Ok(Rotation {
            keyset,
            rotated: done.is_some(),
        })
    }

    async fn revoke(
        &self,
        kid: &str,
        now: OffsetDateTime,
    ) -> Result<(Keyset, KeyState), AuthzError> {
        let (keyset, was) = self
            .change(|ks, fresh| ks.revoke_with(kid, now, RETIRE_AFTER, fresh).map(Some))
            .await?;
        let was = was.ok_or_else(|| AuthzError::UnknownKey(kid.to_owned()))?;
        Ok((keyset, was))
    }

    async fn retire_expired(&self, now: OffsetDateTime) -> Result<Keyset, AuthzError> {
        let (keyset, _) = self
            .change(|ks, _| {
                let before = (ks.keys.len(), ks.revoked.len());
                ks.retire_expired(now);
                Ok((before != (ks.keys.len(), ks.revoked.len())).then_some(()))
            })
            .await?;
        Ok(keyset)
    }

    async fn sign(&self, key: &KeyEntry, input: &[u8]) -> Result<Vec<u8>, AuthzError> {
        let Some(key_id) = &key.kms_key_id else {
            return Err(AuthzError::KeyStore(format!(
                "key {} has no KMS key in {}",
                key.kid,
                self.location()
            )));
        };
        // KMS signs at most 4096 bytes as a RAW message; Ed25519 has no digest mode that JOSE
        // accepts, so a larger token is refused rather than signed some other way.
        if input.len() > KMS_MAX_MESSAGE_BYTES {
            return Err(AuthzError::TooLargeToSign(input.len()));
        }
        let algorithm = match key.alg {
            KeyAlg::ES256 => SigningAlgorithmSpec::EcdsaSha256,
            KeyAlg::EdDSA => SigningAlgorithmSpec::Ed25519Sha512,
        };
        let signed = self
            .kms
            .sign()
            .key_id(key_id)
            .message(Blob::new(input))
            .message_type(MessageType::Raw)
            .signing_algorithm(algorithm)
            .send()
            .await
            .map_err(|e| kms_error("Sign", &e))?;
        let signature = signed
            .signature
            .ok_or_else(|| AuthzError::KeyStore("KMS Sign answered no signature".into()))?;
        match key.alg {
            KeyAlg::ES256 => Ok(ecdsa_der_to_fixed(signature.as_ref())?.to_vec()),
            KeyAlg::EdDSA if signature.as_ref().len() == 64 => Ok(signature.into_inner()),
            KeyAlg::EdDSA => Err(AuthzError::Crypto(format!(
                "KMS answered an Ed25519 signature of {} bytes, not 64",
                signature.as_ref().len()
            ))),
        }
    }
}
