//! The settings every AWS role reads from the environment: the Lambda functions and the CLI's
//! `--backend aws` read the same variables, and a missing one is reported by name, all at once.

use std::collections::BTreeMap;
use std::fmt;

/// Default product id (`aud` of tokens), as in the embedded runtime.
pub const DEFAULT_PRODUCT: &str = "iris-classifier";
/// Default seller name (`iss` of tokens), as in the embedded runtime.
pub const DEFAULT_ISSUER: &str = "sealbox-seller";

/// One setting, named by its environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Var {
    /// `SEALBOX_INBOX_BUCKET`: where buyers write request objects and inputs.
    InboxBucket,
    /// `SEALBOX_OUTBOX_BUCKET`: where outcomes and claims are written.
    OutboxBucket,
    /// `SEALBOX_INBOX_EVENTS_QUEUE_URL`: the queue S3 notifies of new request objects.
    InboxEventsQueueUrl,
    /// `SEALBOX_JOBS_QUEUE_URL`: the queue of authorized jobs.
    JobsQueueUrl,
    /// `SEALBOX_TOPIC_ARN`: the notifications topic.
    TopicArn,
    /// `SEALBOX_ENDPOINT_NAME`: the SageMaker endpoint.
    EndpointName,
    /// `SEALBOX_JWKS`: the seller's published keys, an https URL or `s3://bucket/key`.
    Jwks,
    /// `SEALBOX_PRODUCT`: the product id tokens must name (default `iris-classifier`).
    Product,
    /// `SEALBOX_ISSUER`: the seller tokens must come from (default `sealbox-seller`).
    Issuer,
    /// `SEALBOX_KEYS_TABLE`: the seller's DynamoDB table of key states.
    KeysTable,
    /// `SEALBOX_SUBSCRIPTIONS_TABLE`: the seller's DynamoDB table of subscriptions.
    SubscriptionsTable,
    /// `SEALBOX_JWKS_OBJECT`: where the seller publishes its keys, `s3://bucket/key`.
    JwksObject,
    /// `SEALBOX_ROTATE_EVERY`: how long a key signs before the scheduled rotation replaces it
    /// (default 30d).
    RotateEvery,
    /// `SEALBOX_MARKETPLACE_PRODUCTS`: which sealbox product each AWS Marketplace product is,
    /// `prod-abc123=my-product[,prod-...=...]` (the marketplace-events function).
    MarketplaceProducts,
    /// `SEALBOX_TOKEN_SOURCE`: where ingest gets the token of a request object that carries
    /// none: `request` (nowhere: `token_missing`, the default) or `iam` (the token service, with
    /// the function's own AWS identity).
    TokenSource,
    /// `SEALBOX_TOKEN_SERVICE_URL`: the seller's token service, for `SEALBOX_TOKEN_SOURCE=iam`.
    TokenServiceUrl,
    /// `SEALBOX_CLAIMS_TABLE`: the DynamoDB table of claims (who owns each request); unset,
    /// claims are objects in the outbox.
    ClaimsTable,
    /// `SEALBOX_CLAIM_RETENTION`: how long a claim in the table is kept (default 90d, the
    /// outbox's retention of outcomes).
    ClaimRetention,
    /// `SEALBOX_OUTBOX_CLAIMS`: with a claims table, whether claims left in the outbox by
    /// earlier versions still decide their requests: `read` (the default, one GET per claim)
    /// or `ignore` (a stack that never had them, or whose outbox claims are past retention).
    OutboxClaims,
}

impl Var {
    /// Every setting of the buyer's side, in the order they are listed to users.
    pub const ALL: [Var; 9] = [
        Var::InboxBucket,
        Var::OutboxBucket,
        Var::InboxEventsQueueUrl,
        Var::JobsQueueUrl,
        Var::TopicArn,
        Var::EndpointName,
        Var::Jwks,
        Var::Product,
        Var::Issuer,
    ];

    /// The settings of the ingest function.
    pub const INGEST: [Var; 9] = [
        Var::InboxBucket,
        Var::OutboxBucket,
        Var::InboxEventsQueueUrl,
        Var::JobsQueueUrl,
        Var::TopicArn,
        Var::Jwks,
        Var::Product,
        Var::Issuer,
        Var::TokenSource,
    ];

    /// The settings of the worker function.
    pub const WORKER: [Var; 5] = [
        Var::InboxBucket,
        Var::OutboxBucket,
        Var::JobsQueueUrl,
        Var::TopicArn,
        Var::EndpointName,
    ];

    /// Settings every role reads when they are set, none of them needed (their absence, or
    /// their defaults, mean claims stay objects in the outbox).
    pub const OPTIONAL: [Var; 3] = [Var::ClaimsTable, Var::ClaimRetention, Var::OutboxClaims];

    /// Every setting of the seller's side.
    pub const SELLER: [Var; 5] = [
        Var::KeysTable,
        Var::SubscriptionsTable,
        Var::JwksObject,
        Var::Product,
        Var::Issuer,
    ];

    /// The environment variable.
    pub const fn name(self) -> &'static str {
        match self {
            Var::InboxBucket => "SEALBOX_INBOX_BUCKET",
            Var::OutboxBucket => "SEALBOX_OUTBOX_BUCKET",
            Var::InboxEventsQueueUrl => "SEALBOX_INBOX_EVENTS_QUEUE_URL",
            Var::JobsQueueUrl => "SEALBOX_JOBS_QUEUE_URL",
            Var::TopicArn => "SEALBOX_TOPIC_ARN",
            Var::EndpointName => "SEALBOX_ENDPOINT_NAME",
            Var::Jwks => "SEALBOX_JWKS",
            Var::Product => "SEALBOX_PRODUCT",
            Var::Issuer => "SEALBOX_ISSUER",
            Var::KeysTable => "SEALBOX_KEYS_TABLE",
            Var::SubscriptionsTable => "SEALBOX_SUBSCRIPTIONS_TABLE",
            Var::JwksObject => "SEALBOX_JWKS_OBJECT",
            Var::RotateEvery => "SEALBOX_ROTATE_EVERY",
            Var::MarketplaceProducts => "SEALBOX_MARKETPLACE_PRODUCTS",
            Var::TokenSource => "SEALBOX_TOKEN_SOURCE",
            Var::TokenServiceUrl => "SEALBOX_TOKEN_SERVICE_URL",
            Var::ClaimsTable => "SEALBOX_CLAIMS_TABLE",
            Var::ClaimRetention => "SEALBOX_CLAIM_RETENTION",
            Var::OutboxClaims => "SEALBOX_OUTBOX_CLAIMS",
        }
    }

    /// The value used when the variable is unset, if it has one.
    pub const fn default_value(self) -> Option<&'static str> {
        match self {
            Var::Product => Some(DEFAULT_PRODUCT),
            Var::Issuer => Some(DEFAULT_ISSUER),
            Var::RotateEvery => Some("30d"),
            Var::TokenSource => Some("request"),
            Var::ClaimRetention => Some("90d"),
            Var::OutboxClaims => Some("read"),
            _ => None,
        }
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings that are missing or unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Variables this role needs are unset or empty.
    #[error("missing settings: {} (set them in the environment; `sealbox aws bootstrap` or, for the seller, `sealbox aws bootstrap-seller` prints them for a development stack)", join(.0))]
    Missing(Vec<Var>),
    /// A variable is set to something unusable.
    #[error("{var} = {value:?}: {rule}")]
    Invalid {
        /// The variable.
        var: Var,
        /// Its value.
        value: String,
        /// What it must be.
        rule: &'static str,
    },
}

fn join(vars: &[Var]) -> String {
    vars.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
}

/// The settings a role needs, all present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<Var, String>,
}

impl Settings {
    /// Reads `needed` from the process environment; every missing one is named in the error.
    pub fn from_env(needed: &[Var]) -> Result<Settings, ConfigError> {
        Self::from_lookup(needed, |name| std::env::var(name).ok())
    }

    /// Reads `needed` through `lookup` (the environment, or a test's map).
    pub fn from_lookup(
        needed: &[Var],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        for &var in needed {
            let value = lookup(var.name())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .or_else(|| var.default_value().map(str::to_owned));
            match value {
                Some(v) => {
                    check(var, &v)?;
                    values.insert(var, v);
                }
                None => missing.push(var),
            }
        }
        for var in Var::OPTIONAL {
            if values.contains_key(&var) {
                continue;
            }
            let value = lookup(var.name())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .or_else(|| var.default_value().map(str::to_owned));
            if let Some(v) = value {
                check(var, &v)?;
                values.insert(var, v);
            }
        }
        if missing.is_empty() {
            Ok(Settings { values })
        } else {
            Err(ConfigError::Missing(missing))
        }
    }

    /// The value of a setting that was asked for; empty if it was not.
    pub fn get(&self, var: Var) -> &str {
        self.values.get(&var).map(String::as_str).unwrap_or("")
    }

    /// The value of a setting, if it was set or has a default (for [`Var::OPTIONAL`]).
    pub fn optional(&self, var: Var) -> Option<&str> {
        self.values.get(&var).map(String::as_str)
    }

    /// The settings as `KEY=VALUE` pairs, in the documented order.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        self.values
            .iter()
            .map(|(k, v)| (k.name(), v.as_str()))
            .collect()
    }
}

/// The bucket and key of `s3://bucket/key`.
pub fn s3_location(value: &str) -> Option<(&str, &str)> {
    let (bucket, key) = value.strip_prefix("s3://")?.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

fn check(var: Var, value: &str) -> Result<(), ConfigError> {
    let invalid = |rule| {
        Err(ConfigError::Invalid {
            var,
            value: value.to_owned(),
            rule,
        })
    };
    match var {
        Var::InboxEventsQueueUrl | Var::JobsQueueUrl
            if !(value.starts_with("https://") || value.starts_with("http://")) =>
        {
            invalid("a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")
        }
        Var::TopicArn if !value.starts_with("arn:") => invalid("a topic ARN (arn:aws:sns:...)"),
        Var::Jwks
            if !(value.starts_with("https://")
                || value.starts_with("http://")
                || value.starts_with("s3://")) =>
        {
            invalid("an https URL or s3://bucket/key")
        }
        Var::TokenSource if !matches!(value, "request" | "iam") => {
            invalid("request (tokens only in request objects) or iam (the function's AWS identity)")
        }
        Var::TokenServiceUrl
            if !(value.starts_with("https://") || value.starts_with("http://")) =>
        {
            invalid("the token service's URL (https://...)")
        }
        Var::JwksObject if s3_location(value).is_none() => {
            invalid("an object location, s3://bucket/key")
        }
        Var::OutboxClaims if !matches!(value, "read" | "ignore") => {
            invalid("read (claims earlier versions left in the outbox still decide) or ignore")
        }
        Var::RotateEvery | Var::ClaimRetention if humantime::parse_duration(value).is_err() => {
            invalid("a duration such as 30d, 12h or 90m")
        }
        Var::MarketplaceProducts
            if !value.split(',').map(str::trim).all(|pair| {
                pair.split_once('=')
                    .is_some_and(|(m, p)| !m.trim().is_empty() && !p.trim().is_empty())
            }) =>
        {
            invalid(
                "MARKETPLACE_PRODUCT_ID=SEALBOX_PRODUCT pairs, comma-separated (prod-abc123=my-product)",
            )
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_setting_is_named_at_once() {
        let err =
            Settings::from_lookup(&[Var::InboxBucket, Var::TopicArn, Var::Product], |_| None).err();
        assert_eq!(
            err,
            Some(ConfigError::Missing(vec![Var::InboxBucket, Var::TopicArn]))
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("SEALBOX_INBOX_BUCKET, SEALBOX_TOPIC_ARN"),
            "{text}"
        );
    }

    #[test]
    fn product_and_issuer_default_as_in_the_embedded_runtime() {
        let s = Settings::from_lookup(&[Var::Product, Var::Issuer], |_| Some(" ".into()));
        let s = s.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.get(Var::Product), DEFAULT_PRODUCT);
        assert_eq!(s.get(Var::Issuer), DEFAULT_ISSUER);
    }

    #[test]
    fn claims_settings_are_read_when_set_and_never_needed() {
        let s = Settings::from_lookup(&[Var::Product], |_| None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.optional(Var::ClaimsTable), None);
        assert_eq!(s.optional(Var::OutboxClaims), Some("read"));
        assert_eq!(s.optional(Var::ClaimRetention), Some("90d"));
        let s = Settings::from_lookup(&[], |n| {
            (n == "SEALBOX_CLAIMS_TABLE").then(|| "dev-claims".to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.optional(Var::ClaimsTable), Some("dev-claims"));
        let err = Settings::from_lookup(&[], |n| {
            (n == "SEALBOX_OUTBOX_CLAIMS").then(|| "maybe".to_owned())
        })
        .err();
        assert!(matches!(
            err,
            Some(ConfigError::Invalid {
                var: Var::OutboxClaims,
                ..
            })
        ));
    }

    #[test]
    fn an_unusable_value_is_refused_with_its_rule() {
        let err = Settings::from_lookup(&[Var::Jwks], |_| Some("ftp://x".into())).err();
        assert!(matches!(
            err,
            Some(ConfigError::Invalid { var: Var::Jwks, .. })
        ));
    }
}
