//! Backoff for messages that failed transiently: how long a message stays invisible before
//! its next delivery.

use std::time::Duration;

use backon::BackoffBuilder;

/// Exponential backoff with jitter, from `min` up to `max`: how long a message that failed for
/// now stays away before it is handled again. Each handler names its own (`BACKOFF` in
/// `sealbox-ingest` and `sealbox-worker`); the pollers hold our own outages by [`HOLD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay (before jitter).
    pub min: Duration,
    /// The longest delay (before jitter).
    pub max: Duration,
}

impl Backoff {
    /// Backoff from `min` up to `max`.
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max }
    }

    /// The delay after the `n`-th failed try (a message's receive count, or a hold's attempt).
    pub fn delay(&self, n: u32) -> Duration {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
            .build()
            // Past 32 doublings every delay is the cap; do not walk further.
            .nth(n.saturating_sub(1).min(32) as usize)
            .unwrap_or(self.max)
    }
}

/// Between tries of a message held through a fault of the pipeline's own storage (the message
/// is kept, not given back, so this spends none of its receives).
pub const HOLD: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(15));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let backoff = Backoff::new(min, max);
        let first = backoff.delay(1);
        assert!(first >= min && first <= 2 * min, "{first:?}");
        for n in [10, 1000, u32::MAX] {
            assert!(backoff.delay(n) <= 2 * max);
        }
    }
}
