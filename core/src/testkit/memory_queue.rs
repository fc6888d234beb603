//! A queue in memory with SQS's semantics: visibility timeouts, receive counts, delays,
//! receives shared between groups in turn, and a dead-letter queue after `max_receives`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::Instant;

use crate::Result;
use crate::ports::queue::{
    DeadLetter, OutgoingMessage, QueueAdmin, QueueConsumer, QueueSender, QueueStats,
    ReceiveOptions, ReceivedMessage,
};

struct Message {
    id: String,
    body: String,
    group: Option<String>,
    sent_at: SystemTime,
    visible_at: Instant,
    receive_count: u32,
    /// The receipt handle of its latest receive.
    handle: Option<String>,
}

#[derive(Default)]
struct State {
    messages: Vec<Message>,
    dead: VecDeque<DeadLetter>,
}

/// One queue and its dead-letter queue. Clones share the messages.
#[derive(Clone)]
pub struct MemoryQueue {
    state: Arc<Mutex<State>>,
    max_receives: u32,
    ids: Arc<AtomicU64>,
}

impl MemoryQueue {
    /// An empty queue whose messages move to its dead letters once received `max_receives`
    /// times.
    pub fn new(max_receives: u32) -> MemoryQueue {
        MemoryQueue {
            state: Arc::default(),
            max_receives: max_receives.max(1),
            ids: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next(&self, what: &str) -> String {
        format!("{what}-{}", self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Takes up to `max` visible messages, one group after another in turn.
    fn take(&self, max: usize, visibility: Duration) -> Vec<ReceivedMessage> {
        let now = Instant::now();
        let mut state = self.lock();
        // Messages received too often move to the dead letters before anything is handed out.
        let max_receives = self.max_receives;
        let (dead, kept): (Vec<Message>, Vec<Message>) = std::mem::take(&mut state.messages)
            .into_iter()
            .partition(|m| m.visible_at <= now && m.receive_count >= max_receives);
        state.messages = kept;
        for m in dead {
            state.dead.push_back(DeadLetter {
                message_id: m.id,
                body: m.body,
                receive_count: m.receive_count,
                sent_at: m.sent_at,
            });
        }
        let mut groups: Vec<Option<String>> = Vec::new();
        let mut by_group: Vec<VecDeque<usize>> = Vec::new();
        for (i, m) in state.messages.iter().enumerate() {
            if m.visible_at > now {
                continue;
            }
            match groups.iter().position(|g| *g == m.group) {
                Some(g) => by_group[g].push_back(i),
                None => {
                    groups.push(m.group.clone());
                    by_group.push(VecDeque::from([i]));
                }
            }
        }
        let mut chosen = Vec::new();
        while chosen.len() < max && by_group.iter().any(|g| !g.is_empty()) {
            for g in by_group.iter_mut() {
                if chosen.len() < max
                    && let Some(i) = g.pop_front()
                {
                    chosen.push(i);
                }
            }
        }
        let mut received = Vec::with_capacity(chosen.len());
        for i in chosen {
            let handle = self.next("handle");
            let m = &mut state.messages[i];
            m.receive_count += 1;
            m.visible_at = now + visibility;
            m.handle = Some(handle.clone());
            received.push(ReceivedMessage {
                message_id: m.id.clone(),
                body: m.body.clone(),
                receipt_handle: handle,
                receive_count: m.receive_count,
                sent_at: m.sent_at,
            });
        }
        received
    }
}

#[async_trait]
impl QueueSender for MemoryQueue {
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<String>> {
        let now = Instant::now();
        let ids: Vec<String> = messages.iter().map(|_| self.next("message")).collect();
        let mut state = self.lock();
        for (m, id) in messages.iter().zip(&ids) {
            state.messages.push(Message {
                id: id.clone(),
                body: m.body.clone(),
                group: m.group.clone(),
                sent_at: SystemTime::now(),
                visible_at: now + m.delay,
                receive_count: 0,
                handle: None,
            });
        }
        Ok(ids)
    }
}

#[async_trait]
impl QueueConsumer for MemoryQueue {
    async fn receive(&self, options: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let until = Instant::now() + options.wait;
        loop {
            let got = self.take(options.max_messages, options.visibility_timeout);
            if !got.is_empty() || Instant::now() >= until {
                return Ok(got);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        self.lock().messages.retain(|m| {
            m.handle
                .as_ref()
                .is_none_or(|h| !receipt_handles.contains(h))
        });
        Ok(())
    }

    async fn change_visibility(&self, receipt_handle: &str, timeout: Duration) -> Result<()> {
        let mut state = self.lock();
        if let Some(m) = state
            .messages
            .iter_mut()
            .find(|m| m.handle.as_deref() == Some(receipt_handle))
        {
            m.visible_at = Instant::now() + timeout;
        }
        Ok(())
    }
}

#[async_trait]
impl QueueAdmin for MemoryQueue {
    async fn stats(&self) -> Result<QueueStats> {
        let now = Instant::now();
        let state = self.lock();
        let mut stats = QueueStats::default();
        for m in &state.messages {
            match (m.visible_at <= now, m.handle.is_some()) {
                (true, _) => stats.visible += 1,
                (false, true) => stats.in_flight += 1,
                (false, false) => stats.delayed += 1,
            }
        }
        stats.oldest_age = state
            .messages
            .iter()
            .map(|m| m.sent_at)
            .min()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        Ok(stats)
    }

    async fn list_dead(&self, max: usize) -> Result<Vec<DeadLetter>> {
        Ok(self.lock().dead.iter().take(max).cloned().collect())
    }

    async fn redrive(&self, max: usize) -> Result<u64> {
        let now = Instant::now();
        let mut state = self.lock();
        let n = max.min(state.dead.len());
        for _ in 0..n {
            if let Some(d) = state.dead.pop_front() {
                state.messages.push(Message {
                    id: d.message_id,
                    body: d.body,
                    group: None,
                    sent_at: d.sent_at,
                    visible_at: now,
                    receive_count: 0,
                    handle: None,
                });
            }
        }
        Ok(n as u64)
    }

    async fn dead_count(&self) -> Result<u64> {
        Ok(self.lock().dead.len() as u64)
    }
}
