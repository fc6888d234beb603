//! The file store's own threads. An object operation is a few system calls, tens of
//! microseconds on a local disk; handing each to tokio's blocking pool woke an idle pool thread
//! and put it back to sleep every time, and those wake-ups and context switches cost the embedded
//! stack more CPU than the calls themselves. Two threads that stay awake while work waits take
//! the operations instead, each from its own queue (the shorter one is chosen).
//!
//! A slow disk or a hung call must not hold up the stack: an operation joins a thread only while
//! fewer than [`SPILL`] wait there and the one it runs started less than [`STALLED`] ago; else it
//! goes to tokio's blocking pool, which grows a thread for each.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use sealbox_core::{Error, Result};

/// Threads of the process's file store.
const THREADS: usize = 2;
/// Operations a thread may hold (the running one included) before more go to the pool.
const SPILL: usize = 16;
/// How long an operation may run before its thread takes no more.
const STALLED: Duration = Duration::from_millis(10);

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run blocking file work, each from its own queue.
pub(super) struct FileThreads {
    lanes: Vec<Lane>,
    /// What [`Lane::running_since`] counts from.
    epoch: Instant,
}

struct Lane {
    jobs: mpsc::Sender<Job>,
    state: Arc<LaneState>,
}

#[derive(Default)]
struct LaneState {
    queued: AtomicUsize,
    /// Microseconds after the epoch at which the running operation began, plus one; 0 if idle.
    running_since: AtomicU64,
}

/// Counts a queued operation off its lane when it ends, also by a panic.
struct Done(Arc<LaneState>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.running_since.store(0, Ordering::Relaxed);
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The process's file threads, started on first use.
pub(super) fn shared() -> &'static FileThreads {
    static SHARED: OnceLock<FileThreads> = OnceLock::new();
    SHARED.get_or_init(|| FileThreads::start(THREADS))
}

impl FileThreads {
    /// Starts `threads` threads (fewer if the system refuses some: the pool does their work).
    pub(super) fn start(threads: usize) -> FileThreads {
        let lanes = (0..threads)
            .map_while(|n| {
                let (jobs, inbox) = mpsc::channel::<Job>();
                let started = std::thread::Builder::new()
                    .name(format!("sealbox-files-{n}"))
                    .spawn(move || {
                        while let Ok(job) = inbox.recv() {
                            // A panic fails its own operation (its answer is dropped), not the thread.
                            let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                        }
                    });
                match started {
                    Ok(_) => Some(Lane {
                        jobs,
                        state: Arc::default(),
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start a file thread; tokio's blocking pool does its work");
                        None
                    }
                }
            })
            .collect();
        FileThreads {
            lanes,
            epoch: Instant::now(),
        }
    }

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// The lane to give an operation to: the shortest of those that are keeping up.
    fn lane(&self) -> Option<&Lane> {
        let now = self.micros();
        let stalled = STALLED.as_micros() as u64;
        self.lanes
            .iter()
            .filter(|l| {
                let since = l.state.running_since.load(Ordering::Relaxed);
                l.state.queued.load(Ordering::Relaxed) < SPILL
                    && (since == 0 || now.saturating_sub(since) < stalled)
            })
            .min_by_key(|l| l.state.queued.load(Ordering::Relaxed))
    }

    /// Runs blocking file work `f` off the async threads: on a file thread, or on tokio's
    /// blocking pool when none is keeping up.
    pub(super) async fn run<T: Send + 'static>(
        &'static self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let Some(lane) = self.lane() else {
            return tokio::task::spawn_blocking(f).await?;
        };
        let (answer, answered) = oneshot::channel();
        lane.state.queued.fetch_add(1, Ordering::Relaxed);
        let done = Done(lane.state.clone());
        let job: Job = Box::new(move || {
            done.0.running_since.store(self.micros(), Ordering::Relaxed);
            let out = std::panic::catch_unwind(AssertUnwindSafe(f));
            // Counted off before the answer, so the caller's next operation sees the lane free.
            drop(done);
            // A panic drops the answer: the caller hears the operation panicked.
            if let Ok(out) = out {
                let _ = answer.send(out);
            }
        });
        if let Err(mpsc::SendError(job)) = lane.jobs.send(job) {
            // The thread is gone (it cannot end, but if it did): the pool runs the job instead.
            drop(tokio::task::spawn_blocking(job));
        }
        answered
            .await
            .map_err(|_| Error::Task("a file operation panicked".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of a test's own, so other tests' operations do not change what it sees.
    fn threads() -> &'static FileThreads {
        Box::leak(Box::new(FileThreads::start(THREADS)))
    }

    #[tokio::test]
    async fn work_goes_to_the_pool_while_every_thread_is_stuck_on_a_call() {
        let threads = threads();
        // Each thread is stuck in one call, as on a hung disk.
        let (unstick, stuck) = std::sync::mpsc::channel::<()>();
        let stuck = Arc::new(std::sync::Mutex::new(stuck));
        let mut held = Vec::new();
        for _ in 0..THREADS {
            let stuck = stuck.clone();
            held.push(tokio::spawn(threads.run(move || {
                let _ = stuck.lock().map(|s| s.recv());
                Ok(())
            })));
        }
        tokio::time::sleep(STALLED * 3).await;
        let answered = tokio::time::timeout(Duration::from_secs(10), threads.run(|| Ok(42))).await;
        assert_eq!(answered.ok().and_then(|r| r.ok()), Some(42));
        for _ in 0..held.len() {
            let _ = unstick.send(());
        }
        for h in held {
            h.await.unwrap().unwrap();
        }
        // Unstuck, the threads take work again.
        assert!(threads.lane().is_some());
    }

    #[tokio::test]
    async fn a_panicking_operation_answers_an_error_and_the_threads_go_on() {
        let threads = threads();
        let panicked = threads
            .run(|| -> Result<()> { panic!("a bug in a file operation") })
            .await;
        assert!(
            matches!(panicked, Err(Error::Task(ref m)) if m.contains("panicked")),
            "{panicked:?}"
        );
        for n in 0..2 * THREADS {
            assert_eq!(threads.run(move || Ok(n)).await.unwrap(), n);
        }
        assert!(
            threads
                .lanes
                .iter()
                .all(|l| l.state.queued.load(Ordering::Relaxed) == 0)
        );
    }
}
