//! The subscription registry of the embedded stack: one SQLite file, shared by `sealbox up`
//! and the seller's CLI commands (WAL, so a grant does not wait for the daemon).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use sealbox_authz::AuthzError;
use sealbox_authz::agreements::{ledger_from_json, ledger_to_json};
use sealbox_authz::subscriptions::{
    Credentials, NO_SECRET, Subscription, SubscriptionRegistry, SubscriptionStatus, new_grant_id,
};

/// Subscriptions in a SQLite file.
#[derive(Clone)]
pub struct SqliteSubscriptions {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subscriptions (
    buyer TEXT NOT NULL,
    product TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    expires_at INTEGER,
    revoked_at INTEGER,
    secret_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    grant_id TEXT UNIQUE,
    agreements TEXT,
    hand_at INTEGER,
    PRIMARY KEY (buyer, product)
) STRICT;
";

fn to_time(ns: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn to_ns(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

impl SqliteSubscriptions {
    /// Opens (creating if needed) the registry at `path`.
    pub fn open(path: &Path) -> Result<Self, AuthzError> {
        let db = |e: rusqlite::Error| AuthzError::Registry(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| AuthzError::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
        }
        let conn = Connection::open(path).map_err(db)?;
        // Buyer ids and secret hashes: the owner's only, like the keyset. SQLite gives the WAL
        // and shared-memory files the database file's mode.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| AuthzError::Io {
                path: path.display().to_string(),
                source: e,
            })?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        add_grant_ids(&conn).map_err(db)?;
        add_agreements(&conn).map_err(db)?;
        Ok(SqliteSubscriptions {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, AuthzError> {
        let conn = self.conn.clone();
        let shown = self.path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| AuthzError::Registry(format!("{shown}: lock poisoned")))?;
            f(&mut c).map_err(|e| AuthzError::Registry(format!("{shown}: {e}")))
        })
        .await
        .map_err(|e| AuthzError::Registry(e.to_string()))?
    }
}

/// Registries made before grant ids existed get the column, and each subscription its id.
fn add_grant_ids(conn: &Connection) -> rusqlite::Result<()> {
    let has_column = conn
        .prepare("SELECT 1 FROM pragma_table_info('subscriptions') WHERE name = 'grant_id'")?
        .exists([])?;
    if !has_column {
        // SQLite cannot add a UNIQUE column; the index gives the same guarantee.
        conn.execute_batch(
            "ALTER TABLE subscriptions ADD COLUMN grant_id TEXT;
             CREATE UNIQUE INDEX IF NOT EXISTS subscriptions_grant_id ON subscriptions (grant_id);",
        )?;
    }
    let missing: Vec<(String, String)> = conn
        .prepare("SELECT buyer, product FROM subscriptions WHERE grant_id IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (buyer, product) in missing {
        let id = new_grant_id().map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        conn.execute(
            "UPDATE subscriptions SET grant_id = ?3 WHERE buyer = ?1 AND product = ?2 AND grant_id IS NULL",
            params![buyer, product, id],
        )?;
    }
    Ok(())
}

/// Registries made before agreement events were recorded get the two columns (null: a
/// subscription only ever granted by hand).
fn add_agreements(conn: &Connection) -> rusqlite::Result<()> {
    for (column, kind) in [("agreements", "TEXT"), ("hand_at", "INTEGER")] {
        let has_column = conn
            .prepare("SELECT 1 FROM pragma_table_info('subscriptions') WHERE name = ?1")?
            .exists([column])?;
        if !has_column {
            conn.execute_batch(&format!(
                "ALTER TABLE subscriptions ADD COLUMN {column} {kind};"
            ))?;
        }
    }
    Ok(())
}

const COLUMNS: &str = "buyer, product, status, expires_at, revoked_at, created_at, updated_at, \
                       secret_hash, grant_id, agreements, hand_at";

fn row_to_credentials(row: &rusqlite::Row<'_>) -> rusqlite::Result<Credentials> {
    let status: String = row.get(2)?;
    let agreements = match row.get::<_, Option<String>>(9)? {
        Some(json) => ledger_from_json(&json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, e.into())
        })?,
        None => Vec::new(),
    };
    Ok(Credentials {
        subscription: Subscription {
            buyer: row.get(0)?,
            product: row.get(1)?,
            grant_id: row.get::<_, Option<String>>(8)?.unwrap_or_default(),
            status: if status == "revoked" {
                SubscriptionStatus::Revoked
            } else {
                SubscriptionStatus::Active
            },
            expires_at: row.get::<_, Option<i64>>(3)?.map(to_time),
            revoked_at: row.get::<_, Option<i64>>(4)?.map(to_time),
            created_at: to_time(row.get(5)?),
            updated_at: to_time(row.get(6)?),
            agreements,
            hand_at: row.get::<_, Option<i64>>(10)?.map(to_time),
        },
        secret_hash: row.get(7)?,
    })
}

fn select(c: &Connection, buyer: &str, product: &str) -> rusqlite::Result<Option<Credentials>> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM subscriptions WHERE buyer = ?1 AND product = ?2"),
        params![buyer, product],
        row_to_credentials,
    )
    .optional()
}

#[async_trait]
impl SubscriptionRegistry for SqliteSubscriptions {
    async fn grant(
        &self,
        buyer: &str,
        product: &str,
        until: Option<OffsetDateTime>,
        secret_hash: &str,
    ) -> Result<Subscription, AuthzError> {
        let (buyer, product, hash) = (buyer.to_owned(), product.to_owned(), secret_hash.to_owned());
        let now = to_ns(OffsetDateTime::now_utc());
        let grant_id = new_grant_id()?;
        let got = self
            .with(move |c| {
                // A renewal keeps the grant id (and revoked_at): the one made here is for a
                // first grant only.
                c.execute(
                    "INSERT INTO subscriptions
                         (buyer, product, status, expires_at, revoked_at, secret_hash, created_at,
                          updated_at, grant_id, hand_at)
                     VALUES (?1, ?2, 'active', ?3, NULL, ?4, ?5, ?5, ?6, ?5)
                     ON CONFLICT (buyer, product) DO UPDATE SET
                         status = 'active', expires_at = ?3, secret_hash = ?4, updated_at = ?5,
                         hand_at = ?5",
                    params![buyer, product, until.map(to_ns), hash, now, grant_id],
                )?;
                select(c, &buyer, &product)
            })
            .await?;
        got.map(|c| c.subscription)
            .ok_or_else(|| AuthzError::Registry("grant left no subscription".into()))
    }

    async fn revoke(&self, buyer: &str, product: &str) -> Result<Subscription, AuthzError> {
        let (b, p) = (buyer.to_owned(), product.to_owned());
        let now = to_ns(OffsetDateTime::now_utc());
        let got = self
            .with(move |c| {
                c.execute(
                    "UPDATE subscriptions SET status = 'revoked', revoked_at = ?3, updated_at = ?3,
                         hand_at = ?3
                     WHERE buyer = ?1 AND product = ?2",
                    params![b, p, now],
                )?;
                select(c, &b, &p)
            })
            .await?;
        got.map(|c| c.subscription)
            .ok_or_else(|| AuthzError::NoSubscription {
                buyer: buyer.to_owned(),
                product: product.to_owned(),
            })
    }

    async fn credentials(
        &self,
        buyer: &str,
        product: &str,
    ) -> Result<Option<Credentials>, AuthzError> {
        let (b, p) = (buyer.to_owned(), product.to_owned());
        self.with(move |c| select(c, &b, &p)).await
    }

    async fn swap(
        &self,
        expected: Option<&Subscription>,
        next: &Subscription,
    ) -> Result<bool, AuthzError> {
        let expected = expected.map(|s| to_ns(s.updated_at));
        let n = next.clone();
        self.with(move |c| {
            let status = n.status.as_str();
            let ledger = (!n.agreements.is_empty()).then(|| ledger_to_json(&n.agreements));
            let changed = match expected {
                None => c.execute(
                    "INSERT INTO subscriptions
                         (buyer, product, status, expires_at, revoked_at, secret_hash, created_at,
                          updated_at, grant_id, agreements, hand_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (buyer, product) DO NOTHING",
                    params![
                        n.buyer,
                        n.product,
                        status,
                        n.expires_at.map(to_ns),
                        n.revoked_at.map(to_ns),
                        NO_SECRET,
                        to_ns(n.created_at),
                        to_ns(n.updated_at),
                        n.grant_id,
                        ledger,
                        n.hand_at.map(to_ns),
                    ],
                )?,
                Some(was) => c.execute(
                    "UPDATE subscriptions SET status = ?3, expires_at = ?4, revoked_at = ?5,
                         updated_at = ?6, agreements = ?7, hand_at = ?8
                     WHERE buyer = ?1 AND product = ?2 AND updated_at = ?9",
                    params![
                        n.buyer,
                        n.product,
                        status,
                        n.expires_at.map(to_ns),
                        n.revoked_at.map(to_ns),
                        to_ns(n.updated_at),
                        ledger,
                        n.hand_at.map(to_ns),
                        was,
                    ],
                )?,
            };
            Ok(changed == 1)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Subscription>, AuthzError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM subscriptions ORDER BY product, buyer"
            ))?;
            let rows = stmt.query_map([], row_to_credentials)?;
            rows.map(|r| r.map(|c| c.subscription)).collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grant_revoke_and_grant_again_keep_the_history_that_matters() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SqliteSubscriptions::open(&dir.path().join("subs.db")).unwrap();
        assert!(reg.credentials("b1", "p").await.unwrap().is_none());
        assert!(matches!(
            reg.revoke("b1", "p").await,
            Err(AuthzError::NoSubscription { .. })
        ));

        let s = reg.grant("b1", "p", None, "h1").await.unwrap();
        assert_eq!(s.status, SubscriptionStatus::Active);
        let revoked = reg.revoke("b1", "p").await.unwrap();
        assert_eq!(revoked.status, SubscriptionStatus::Revoked);
        assert!(revoked.revoked_at.is_some());

        let until = OffsetDateTime::now_utc() + time::Duration::days(30);
        let again = reg.grant("b1", "p", Some(until), "h2").await.unwrap();
        assert_eq!(again.status, SubscriptionStatus::Active);
        assert_eq!(
            again.revoked_at, revoked.revoked_at,
            "earlier tokens stay denied"
        );
        assert_eq!(again.created_at, s.created_at);
        assert_eq!(again.grant_id, s.grant_id, "a renewal keeps the grant id");
        assert_eq!(s.grant_id.len(), 22, "128 random bits, base64url");
        let creds = reg.credentials("b1", "p").await.unwrap().unwrap();
        assert_eq!(creds.secret_hash, "h2");
        assert_eq!(
            creds.subscription.expires_at.map(|t| t.unix_timestamp()),
            Some(until.unix_timestamp())
        );

        use std::os::unix::fs::PermissionsExt as _;
        for f in ["subs.db", "subs.db-wal"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // A second handle on the same file (the CLI beside the daemon) sees the same rows.
        let other = SqliteSubscriptions::open(&dir.path().join("subs.db")).unwrap();
        assert_eq!(other.list().await.unwrap().len(), 1);
    }
}
