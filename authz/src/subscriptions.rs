//! Subscription registry port: which buyer may get tokens for which product, until when.

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;

use crate::agreements::AgreementRecord;
use crate::error::AuthzError;
use crate::jwks::Denial;
use crate::keyset::RETIRE_AFTER;

/// Whether a subscription lets its buyer get tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Granted, and not revoked.
    Active,
    /// Revoked by the seller.
    Revoked,
}

impl SubscriptionStatus {
    /// The stored and printed name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Revoked => "revoked",
        }
    }
}

/// A new grant id: 128 random bits, base64url. Opaque, so the published deny list names a
/// subscription without naming its buyer.
pub fn new_grant_id() -> Result<String, AuthzError> {
    use base64::Engine as _;
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|e| AuthzError::Crypto(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id))
}

/// The secret hash of a subscription made without a secret (by a Marketplace agreement): not a
/// PHC string, so no secret matches it.
pub const NO_SECRET: &str = "none";

/// One buyer's subscription to one product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// Buyer id.
    pub buyer: String,
    /// Product id (`aud` of its tokens).
    pub product: String,
    /// Opaque id made at the first grant and kept for the subscription's life: the `grant`
    /// claim of its tokens and the name the deny list gives it.
    pub grant_id: String,
    /// Active or revoked.
    pub status: SubscriptionStatus,
    /// When it ends by itself, if ever.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last revoked, if ever (a grant after it does not clear it: tokens issued
    /// before it stay refused).
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was first granted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The Marketplace agreements behind it, each with its last event applied
    /// ([`crate::agreements`]); empty for a subscription only ever granted by hand.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agreements: Vec<AgreementRecord>,
    /// When the seller last granted or revoked it by hand (`grant`, `revoke`), if since
    /// agreements began to be recorded.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub hand_at: Option<OffsetDateTime>,
}

impl Subscription {
    /// True if the buyer may get a token at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.status == SubscriptionStatus::Active && self.expires_at.is_none_or(|e| e > now)
    }

    /// When the seller last changed it by hand: `hand_at`, or for a subscription that no
    /// agreement ever touched, its last change.
    pub fn hand_changed_at(&self) -> Option<OffsetDateTime> {
        self.hand_at
            .or_else(|| self.agreements.is_empty().then_some(self.updated_at))
    }

    /// The printed status at `now`: `active`, `revoked` or `expired`.
    pub fn status_at(&self, now: OffsetDateTime) -> &'static str {
        match self.status {
            SubscriptionStatus::Active if !self.is_active(now) => "expired",
            s => s.as_str(),
        }
    }

    /// The deny-list entry this subscription needs at `now`: tokens issued before it was
    /// revoked or expired are refused until every such token is dead anyway.
    pub fn denial(&self, now: OffsetDateTime) -> Option<Denial> {
        let expired = self.expires_at.filter(|e| *e <= now);
        let cut = match (self.revoked_at, expired) {
            (Some(r), Some(e)) => r.max(e),
            (r, e) => r.or(e)?,
        };
        (cut + RETIRE_AFTER > now).then(|| Denial {
            grant: self.grant_id.clone(),
            before: cut.unix_timestamp(),
        })
    }
}

/// A subscription with the slow hash of its buyer's secret.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The subscription.
    pub subscription: Subscription,
    /// PHC string of the buyer's secret (argon2id).
    pub secret_hash: String,
}

/// The registry of subscriptions.
#[async_trait]
pub trait SubscriptionRegistry: Send + Sync {
    /// Grants (or renews) `buyer`'s subscription to `product` until `until`, with a new secret
    /// hash; returns the subscription. The first grant makes its grant id (`new_grant_id`); a
    /// renewal keeps it, `revoked_at` and the agreements. Sets `hand_at`.
    async fn grant(
        &self,
        buyer: &str,
        product: &str,
        until: Option<OffsetDateTime>,
        secret_hash: &str,
    ) -> Result<Subscription, AuthzError>;
    /// Revokes `buyer`'s subscription to `product`. Sets `hand_at`.
    async fn revoke(&self, buyer: &str, product: &str) -> Result<Subscription, AuthzError>;
    /// The subscription and secret hash of `buyer` for `product`, if any.
    async fn credentials(
        &self,
        buyer: &str,
        product: &str,
    ) -> Result<Option<Credentials>, AuthzError>;
    /// Every subscription, by product then buyer.
    async fn list(&self) -> Result<Vec<Subscription>, AuthzError>;
    /// Stores `next` in place of `expected`, the subscription of the same buyer and product as
    /// read before (`None`: there was none), only if nothing changed it since (same
    /// `updated_at`); false if something did. Stores every field of `next` but the secret
    /// hash: an existing subscription keeps its own, a new one gets [`NO_SECRET`].
    async fn swap(
        &self,
        expected: Option<&Subscription>,
        next: &Subscription,
    ) -> Result<bool, AuthzError>;

    /// The deny list of `product` at `now`: what the published keys carry.
    async fn denials(&self, product: &str, now: OffsetDateTime) -> Result<Vec<Denial>, AuthzError> {
        Ok(self
            .list()
            .await?
            .iter()
            .filter(|s| s.product == product)
            .filter_map(|s| s.denial(now))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(now: OffsetDateTime) -> Subscription {
        Subscription {
            buyer: "b1".into(),
            product: "p".into(),
            grant_id: "g1".into(),
            status: SubscriptionStatus::Active,
            expires_at: None,
            revoked_at: None,
            created_at: now,
            updated_at: now,
            agreements: Vec::new(),
            hand_at: None,
        }
    }

    #[test]
    fn a_revoked_or_expired_subscription_denies_earlier_tokens_while_they_can_live() {
        let now = OffsetDateTime::now_utc();
        let mut s = sub(now);
        assert!(s.is_active(now));
        assert_eq!(s.denial(now), None);
        s.expires_at = Some(now - time::Duration::seconds(5));
        assert_eq!(s.status_at(now), "expired");
        assert_eq!(
            s.denial(now).map(|d| d.before),
            Some(now.unix_timestamp() - 5)
        );
        s.revoked_at = Some(now);
        s.status = SubscriptionStatus::Revoked;
        assert_eq!(s.denial(now).map(|d| d.before), Some(now.unix_timestamp()));
        assert_eq!(s.denial(now + RETIRE_AFTER), None);
    }
}
