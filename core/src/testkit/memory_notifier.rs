//! A [`Notifier`] that keeps what it is given, in order.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::Result;
use crate::contract::Notification;
use crate::ports::Notifier;

/// Every notification published, in order (repeats included).
#[derive(Default)]
pub struct MemoryNotifier {
    published: Mutex<Vec<Notification>>,
}

impl MemoryNotifier {
    /// Nothing published yet.
    pub fn new() -> MemoryNotifier {
        MemoryNotifier::default()
    }

    /// What was published so far.
    pub fn published(&self) -> Vec<Notification> {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn publish(&self, notification: &Notification) -> Result<()> {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(notification.clone());
        Ok(())
    }
}
