//! Notifier port: tells downstream systems about outcomes (SNS; locally an event log).

use async_trait::async_trait;

use crate::contract::Notification;
use crate::error::Result;

/// Publishes notifications, at least once.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Publishes one notification; returns once it is durably recorded.
    async fn publish(&self, notification: &Notification) -> Result<()>;
}
