//! Backoff for messages that failed transiently: how long a message stays invisible before
//! its next delivery.

use std::time::Duration;

use backon::BackoffBuilder;

/// Delay before the `receive_count`-th redelivery: exponential from `min` with jitter, at most
/// `max`.
pub fn redelivery_delay(receive_count: u32, min: Duration, max: Duration) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        // Past 32 doublings every delay is the cap; do not walk further.
        .nth(receive_count.saturating_sub(1).min(32) as usize)
        .unwrap_or(max)
}

/// Delay before the `attempt`-th retry of a message held through a fault of the pipeline's own
/// storage (the message is kept, not given back, so this spends none of its receives).
pub fn storage_retry_delay(attempt: u32) -> Duration {
    redelivery_delay(attempt, Duration::from_millis(250), Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let first = redelivery_delay(1, min, max);
        assert!(first >= min && first <= 2 * min, "{first:?}");
        for n in [10, 1000, u32::MAX] {
            assert!(redelivery_delay(n, min, max) <= 2 * max);
        }
    }
}
