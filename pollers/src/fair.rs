//! Slots shared fairly between buyers: a slot that frees up goes to the waiting buyer with the
//! fewest slots, so one buyer's backlog in hand never queues another buyer's job behind it.
//! Work-conserving: a buyer alone uses every slot.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// `n` slots, handed out fairly between buyers; one set may be shared by several pollers (the
/// hand-off and the jobs poller of `sealbox up --backend aws`), so that together they run at
/// most `n` jobs and share them fairly.
pub struct FairSlots {
    size: usize,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    free: usize,
    /// Slots each buyer holds (only buyers holding one).
    running: HashMap<String, usize>,
    /// Waiters in arrival order: (ticket, buyer).
    waiting: Vec<(u64, String)>,
    /// Tickets granted a slot and not yet taken by their waiter.
    granted: HashSet<u64>,
    /// Jobs each buyer has on the queue the slots' pollers read, as far as this process knows
    /// (sent by [`FairSlots::queued`], taken by [`FairSlots::dequeued`]).
    queued: HashMap<String, usize>,
    next_ticket: u64,
}

impl State {
    /// Gives free slots to waiters: each to the earliest waiter of the buyer holding fewest.
    fn grant(&mut self) -> bool {
        let mut any = false;
        while self.free > 0 && !self.waiting.is_empty() {
            let mut best = 0;
            let mut fewest = usize::MAX;
            for (i, (_, buyer)) in self.waiting.iter().enumerate() {
                let n = self.running.get(buyer).copied().unwrap_or(0);
                if n < fewest {
                    (best, fewest) = (i, n);
                }
            }
            let (ticket, buyer) = self.waiting.remove(best);
            *self.running.entry(buyer).or_default() += 1;
            self.free -= 1;
            self.granted.insert(ticket);
            any = true;
        }
        any
    }

    fn release(&mut self, buyer: &str) {
        if let Some(n) = self.running.get_mut(buyer) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(buyer);
            }
        }
        self.free += 1;
    }
}

/// A slot held for a buyer; given back when dropped.
pub struct Slot {
    slots: Arc<FairSlots>,
    buyer: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.give_back(&self.buyer);
    }
}

/// A waiter's place in line; leaving the line (a cancelled wait) gives back what it was granted.
struct Ticket<'a> {
    slots: &'a Arc<FairSlots>,
    ticket: u64,
    buyer: &'a str,
    taken: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut state = self.slots.lock();
        if state.granted.remove(&self.ticket) {
            drop(state);
            self.slots.give_back(self.buyer);
        } else {
            state.waiting.retain(|(t, _)| *t != self.ticket);
        }
    }
}

impl FairSlots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(FairSlots {
            size: n.max(1),
            state: Mutex::new(State {
                free: n.max(1),
                ..State::default()
            }),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock, so a panic elsewhere cannot spoil it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many slots there are.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether a job of `buyer` should wait here for a slot: one is free with nobody waiting,
    /// or the buyer has fewer jobs (running, waiting here, or queued) than an even share of
    /// the slots between the buyers with any (itself included), or fewer than another buyer.
    /// When not, it is the buyer with the most, at least its share: its job is better off on a
    /// queue shared fairly between buyers, so that the work behind it (another buyer's) is
    /// seen now.
    pub fn within_share(&self, buyer: &str) -> bool {
        let state = self.lock();
        if state.free > 0 && state.waiting.is_empty() {
            return true;
        }
        let mut held: HashMap<&str, usize> = HashMap::new();
        let counts = state.running.iter().chain(state.queued.iter());
        for (b, n) in counts.map(|(b, n)| (b.as_str(), *n)) {
            *held.entry(b).or_default() += n;
        }
        for (_, b) in &state.waiting {
            *held.entry(b.as_str()).or_default() += 1;
        }
        let mine = held.remove(buyer).unwrap_or(0);
        let share = (self.size / (held.len() + 1)).max(1);
        mine < share || held.values().any(|&other| mine < other)
    }

    /// A job of `buyer` was put on the queue these slots' pollers read.
    pub fn queued(&self, buyer: &str) {
        *self.lock().queued.entry(buyer.to_owned()).or_default() += 1;
    }

    /// A job of `buyer` was received from that queue (one another process queued is not
    /// counted: it was never added).
    pub fn dequeued(&self, buyer: &str) {
        let mut state = self.lock();
        if let Some(n) = state.queued.get_mut(buyer) {
            *n -= 1;
            if *n == 0 {
                state.queued.remove(buyer);
            }
        }
    }

    /// Waits for a slot for `buyer`.
    pub async fn acquire(self: &Arc<Self>, buyer: &str) -> Slot {
        let slot = || Slot {
            slots: self.clone(),
            buyer: buyer.to_owned(),
        };
        let ticket = {
            let mut state = self.lock();
            if state.free > 0 && state.waiting.is_empty() {
                state.free -= 1;
                *state.running.entry(buyer.to_owned()).or_default() += 1;
                return slot();
            }
            let t = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.push((t, buyer.to_owned()));
            t
        };
        let mut ticket = Ticket {
            slots: self,
            ticket,
            buyer,
            taken: false,
        };
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().granted.remove(&ticket.ticket) {
                ticket.taken = true;
                return slot();
            }
            notified.await;
        }
    }

    fn give_back(&self, buyer: &str) {
        let granted = {
            let mut state = self.lock();
            state.release(buyer);
            state.grant()
        };
        if granted {
            self.wake.notify_waiters();
        }
    }
}

/// The buyer a job message is for, to share slots by; a body that does not say (a malformed
/// job, answered by the worker) shares the slots of the buyer named "".
pub(crate) fn buyer_of_job(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Buyer {
        buyer: String,
    }
    serde_json::from_str::<Buyer>(body)
        .map(|b| b.buyer)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_buyer_alone_uses_every_slot() {
        let slots = FairSlots::new(3);
        let held = [
            slots.acquire("a").await,
            slots.acquire("a").await,
            slots.acquire("a").await,
        ];
        assert_eq!(slots.lock().running.get("a"), Some(&3));
        drop(held);
        assert_eq!(slots.lock().free, 3);
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_buyer_holding_fewest_not_the_longest_waiting() {
        let slots = FairSlots::new(2);
        let a1 = slots.acquire("a").await;
        let a2 = slots.acquire("a").await;
        // Buyer a queues five more jobs, then buyer b one.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for (i, buyer) in ["a", "a", "a", "a", "a", "b"].into_iter().enumerate() {
            let (theirs, tx) = (slots.clone(), tx.clone());
            waiters.push(tokio::spawn(async move {
                let slot = theirs.acquire(buyer).await;
                tx.send((i, buyer)).unwrap();
                // Hold it until the test is done with the order.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(slot);
            }));
            // Arrival order is the spawn order.
            tokio::task::yield_now().await;
            while slots.lock().waiting.len() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(a1);
        let first = rx.recv().await.unwrap();
        assert_eq!(first, (5, "b"), "b holds none, a holds one: b goes first");
        drop(a2);
        let second = rx.recv().await.unwrap();
        assert_eq!(second, (0, "a"), "then a's earliest waiter");
        for w in waiters {
            w.abort();
        }
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_slot_back() {
        let slots = FairSlots::new(1);
        let held = slots.acquire("a").await;
        let waiting = {
            let slots = slots.clone();
            tokio::spawn(async move {
                let _slot = slots.acquire("b").await;
            })
        };
        while slots.lock().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        let _ = waiting.await;
        drop(held);
        // Whether the abort came before or after the grant, the slot is free again.
        let _again = slots.acquire("c").await;
        assert_eq!(slots.lock().running.get("c"), Some(&1));
        assert!(slots.lock().waiting.is_empty());
    }

    #[tokio::test]
    async fn only_the_buyer_holding_most_and_at_least_its_share_is_told_to_wait_elsewhere() {
        let slots = FairSlots::new(4);
        assert!(slots.within_share("a"), "a free slot: run here");
        let held: Vec<Slot> = acquire_n(&slots, "a", 4).await;
        assert!(
            !slots.within_share("a"),
            "a alone holds every slot: its share"
        );
        assert!(slots.within_share("b"), "b holds none of its share of two");
        let mut waiters = Vec::new();
        let mut wait_for_b = |n: usize| {
            for _ in 0..n {
                let slots = slots.clone();
                waiters.push(tokio::spawn(async move {
                    let _slot = slots.acquire("b").await;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }));
            }
        };
        // b waits for three: more than its share of two, fewer than a's four.
        wait_for_b(3);
        while slots.lock().waiting.len() < 3 {
            tokio::task::yield_now().await;
        }
        assert!(slots.within_share("b"), "a holds more than b");
        assert!(!slots.within_share("a"), "a holds most");
        assert!(slots.within_share("c"), "a third buyer's share is one");
        // With as many as a, b is told to wait elsewhere too.
        wait_for_b(1);
        while slots.lock().waiting.len() < 4 {
            tokio::task::yield_now().await;
        }
        assert!(
            !slots.within_share("b"),
            "b holds its share and as many as anyone"
        );
        for w in waiters {
            w.abort();
        }
        drop(held);
    }

    async fn acquire_n(slots: &Arc<FairSlots>, buyer: &str, n: usize) -> Vec<Slot> {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(slots.acquire(buyer).await);
        }
        held
    }
}
