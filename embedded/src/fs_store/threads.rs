//! The file store's own threads. An object operation is a few system calls, tens of
//! microseconds on a local disk; handing each to tokio's blocking pool woke an idle pool thread
//! and put it back to sleep every time, and those wake-ups and context switches cost the embedded
//! stack more CPU than the calls themselves. Two threads that stay awake while work waits take
//! the operations instead, each from its own queue (the shorter one is chosen).
//!
//! A disk that stalls must not stall the stack: once both queues hold [`SPILL`] operations, the
//! next ones go to tokio's blocking pool, which grows a thread for each.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};

use tokio::sync::oneshot;

use sealbox_core::{Error, Result};

/// Threads, each with its own queue.
const THREADS: usize = 2;
/// Operations a queue may hold before more go to tokio's blocking pool.
const SPILL: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

struct Lane {
    jobs: mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
}

/// Counts a queued operation off its lane when it ends, also by a panic.
struct Done(Arc<AtomicUsize>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The process's file threads, started on first use; none if they could not be started.
fn lanes() -> &'static [Lane] {
    static LANES: OnceLock<Vec<Lane>> = OnceLock::new();
    LANES.get_or_init(|| {
        (0..THREADS)
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
                        queued: Arc::default(),
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start a file thread; file operations use tokio's blocking pool");
                        None
                    }
                }
            })
            .collect()
    })
}

/// Runs blocking file work `f` off the async threads: on a file thread, or on tokio's blocking
/// pool when they are all busy with a backlog.
pub(super) async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let Some(lane) = lanes()
        .iter()
        .min_by_key(|l| l.queued.load(Ordering::Relaxed))
        .filter(|l| l.queued.load(Ordering::Relaxed) < SPILL)
    else {
        return tokio::task::spawn_blocking(f).await?;
    };
    let (answer, answered) = oneshot::channel();
    lane.queued.fetch_add(1, Ordering::Relaxed);
    let done = Done(lane.queued.clone());
    let job: Job = Box::new(move || {
        let _done = done;
        let _ = answer.send(f());
    });
    if let Err(mpsc::SendError(job)) = lane.jobs.send(job) {
        // The thread is gone (it cannot end, but if it did): the pool runs the job instead.
        drop(tokio::task::spawn_blocking(job));
    }
    answered
        .await
        .map_err(|_| Error::Task("a file operation panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn work_beyond_what_the_threads_hold_goes_to_the_pool_instead_of_waiting() {
        // Every file thread is stuck, as on a hung disk, with a full queue.
        let (unstick, stuck) = std::sync::mpsc::channel::<()>();
        let stuck = Arc::new(std::sync::Mutex::new(stuck));
        let mut held = Vec::new();
        for _ in 0..THREADS * SPILL {
            let stuck = stuck.clone();
            held.push(tokio::spawn(run(move || {
                let _ = stuck.lock().map(|s| s.recv());
                Ok(())
            })));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answered = tokio::time::timeout(Duration::from_secs(10), run(|| Ok(42))).await;
        assert_eq!(answered.ok().and_then(|r| r.ok()), Some(42));
        for _ in 0..held.len() {
            let _ = unstick.send(());
        }
        for h in held {
            h.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_panicking_operation_answers_an_error_and_the_threads_go_on() {
        let panicked = run(|| -> Result<()> { panic!("a bug in a file operation") }).await;
        assert!(
            matches!(panicked, Err(Error::Task(ref m)) if m.contains("panicked")),
            "{panicked:?}"
        );
        for n in 0..2 * THREADS {
            assert_eq!(run(move || Ok(n)).await.unwrap(), n);
        }
    }
}
