//! Scheduled rotation: what the `rotate-keys` function does each time it is invoked. Rotates
//! when the current key has signed for a whole period, and retires keys whose tokens have all
//! expired; invoked twice in a row (a retried schedule), it rotates once.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::error::AuthzError;
use crate::key_store::KeyStore;
use crate::keyset::Keyset;

/// What a scheduled rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduledRotation {
    /// Whether this run rotated (false: the current key is younger than the period, or a
    /// concurrent run rotated first).
    pub rotated: bool,
    /// The key that signs now.
    pub current: String,
    /// Keys that left the keyset (retired after their tokens expired).
    pub retired: Vec<String>,
    /// The keyset after the run (not serialized: a report names kids only).
    #[serde(skip)]
    pub keyset: Keyset,
}

/// Rotates the keys of `keys` if the current one has signed for at least `period` at `now`,
/// and retires expired keys either way.
pub async fn rotate_if_due(
    keys: &dyn KeyStore,
    period: Duration,
    now: OffsetDateTime,
) -> Result<ScheduledRotation, AuthzError> {
    let before = keys.load().await?;
    let from = before.current()?.kid.clone();
    let (keyset, rotated) = if before.current_age(now)? >= period {
        // A rotation retires expired keys too.
        let r = keys.rotate(&from, now).await?;
        (r.keyset, r.rotated)
    } else {
        (keys.retire_expired(now).await?, false)
    };
    let retired = before
        .keys
        .iter()
        .filter(|k| keyset.keys.iter().all(|a| a.kid != k.kid))
        .map(|k| k.kid.clone())
        .collect();
    Ok(ScheduledRotation {
        rotated,
        current: keyset.current()?.kid.clone(),
        retired,
        keyset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_store::file::FileKeyStore;
    use crate::keyset::{KeyAlg, KeyState, RETIRE_AFTER};

    #[tokio::test]
    async fn a_due_rotation_rotates_once_and_later_runs_retire_expired_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(dir.path().join("keyset.json"));
        store.init("seller", KeyAlg::EdDSA).await.unwrap();
        let period = Duration::from_secs(3600);
        let t0 = OffsetDateTime::now_utc();

        let early = rotate_if_due(&store, period, t0).await.unwrap();
        assert!(!early.rotated, "the first key is younger than the period");

        let due = t0 + period;
        let first = rotate_if_due(&store, period, due).await.unwrap();
        let again = rotate_if_due(&store, period, due).await.unwrap();
        assert!(first.rotated);
        assert!(!again.rotated, "invoked twice in a row, it rotates once");
        assert_eq!(again.current, first.current);
        let previous: Vec<_> = (again.keyset.keys.iter())
            .filter(|k| k.state == KeyState::Previous)
            .collect();
        assert_eq!(previous.len(), 1);

        // Past the previous key's retirement but before the next period ends: it leaves.
        let later = due + RETIRE_AFTER + Duration::from_secs(1);
        let run = rotate_if_due(&store, Duration::from_secs(100 * 24 * 3600), later)
            .await
            .unwrap();
        assert!(!run.rotated);
        assert_eq!(run.retired, [previous[0].kid.clone()]);
        assert_eq!(run.keyset.keys.len(), 2);
    }
}
