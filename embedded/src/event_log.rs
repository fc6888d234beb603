//! Notifier for the embedded stack: one JSON line per notification in an append-only file
//! (`events.ndjson`), the durable record of every notification; optionally followed by a
//! [`Webhook`] that reads the file behind a cursor.
//!
//! File I/O never runs on the async workers. `publish` hands its line to a writer thread and
//! waits for the acknowledgement. The writer takes every line waiting at that moment, appends
//! them with one write(2) and, with `durable`, one fsync (group commit), then acknowledges each.
//! So a publish returns only once its line is in the file (and on disk with `durable`), and a
//! burst of publishes costs one fsync, not one each.
//!
//! The writer also announces the end of what it has written ([`EventLog::committed`]): always a
//! line boundary, with every byte before it whole (and synced with `durable`). The webhook reads
//! up to there and no further.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc as std_mpsc};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use crate::webhook::Webhook;
use sealbox_core::contract::Notification;
use sealbox_core::ports::notifier::Notifier;
use sealbox_core::{Error, Result};

/// Most lines one group commit takes.
const MAX_BATCH_LINES: usize = 4096;
/// Most bytes one group commit takes (a line already taken is never split).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// One line for the writer, and where to say it is written.
struct Append {
    line: Vec<u8>,
    done: oneshot::Sender<Result<()>>,
}

/// Appends notifications to `events.ndjson`.
#[derive(Clone)]
pub struct EventLog {
    path: PathBuf,
    writer: std_mpsc::Sender<Append>,
    committed: watch::Receiver<u64>,
    webhook: Option<Arc<Webhook>>,
    observer: Option<mpsc::UnboundedSender<Notification>>,
}

impl EventLog {
    /// Opens (creating) the log at `path` and starts its writer thread; with `durable`, each
    /// group of lines is fsynced before its publishes return.
    pub fn open(path: &Path, durable: bool) -> Result<EventLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        // O_APPEND: each write lands whole at the end, even with several writers.
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let end = repair_torn_tail(&mut file, path)?;
        let (writer, lines) = std_mpsc::channel::<Append>();
        let (announce, committed) = watch::channel(end);
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || write_lines(file, &thread_path, durable, end, lines, announce))
            .map_err(|e| Error::io("starting the event log writer", e))?;
        Ok(EventLog {
            path: path.to_owned(),
            writer,
            committed,
            webhook: None,
            observer: None,
        })
    }

    /// Keeps `webhook` running as long as this log: it follows the file, not the publishes.
    pub fn with_webhook(mut self, webhook: Webhook) -> Self {
        self.webhook = Some(Arc::new(webhook));
        self
    }

    /// Also hands each notification to an in-process observer (demo and bench use it).
    pub fn with_observer(mut self, observer: mpsc::UnboundedSender<Notification>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The byte offset up to which the log holds whole lines this log wrote (synced with
    /// `durable`); it changes after each group commit.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
}

/// A crash (or a power loss) can leave half a line at the end; a newline after it keeps the
/// next line whole and readable. Returns the length of the file.
fn repair_torn_tail(file: &mut File, path: &Path) -> Result<u64> {
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading the size of {}", path.display()), e))?
        .len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)
        .map_err(|e| Error::io(format!("reading the end of {}", path.display()), e))?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    tracing::warn!(path = %path.display(), "the event log ends in half a line; closing it");
    file.write_all(b"\n")
        .map_err(|e| Error::io(format!("repairing {}", path.display()), e))?;
    Ok(len + 1)
}

/// The writer thread: group commits until every [`EventLog`] is gone.
fn write_lines(
    mut file: File,
    path: &Path,
    durable: bool,
    mut end: u64,
    lines: std_mpsc::Receiver<Append>,
    committed: watch::Sender<u64>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut acks = Vec::new();
    // A failed write may have left part of its lines: the next write starts on a new line.
    let mut torn = false;
    while let Ok(first) = lines.recv() {
        buf.clear();
        if torn {
            buf.push(b'\n');
        }
        buf.extend_from_slice(&first.line);
        acks.push(first.done);
        while acks.len() < MAX_BATCH_LINES && buf.len() < MAX_BATCH_BYTES {
            let Ok(next) = lines.try_recv() else { break };
            buf.extend_from_slice(&next.line);
            acks.push(next.done);
        }
        // One write(2) per group: a crash never leaves half a line behind a whole one.
        let written = file.write_all(&buf);
        torn = written.is_err();
        let result = written.map_err(|e| ("appending to", e)).and_then(|()| {
            if durable {
                file.sync_data().map_err(|e| ("syncing", e))
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                end += buf.len() as u64;
                committed.send_replace(end);
                for ack in acks.drain(..) {
                    let _ = ack.send(Ok(()));
                }
            }
            Err((what, e)) => {
                tracing::error!(path = %path.display(), error = %e, "{what} the event log failed");
                if let Ok(md) = file.metadata() {
                    end = md.len();
                }
                for ack in acks.drain(..) {
                    let copy = std::io::Error::new(e.kind(), e.to_string());
                    let _ = ack.send(Err(Error::io(format!("{what} {}", path.display()), copy)));
                }
            }
        }
    }
}

#[async_trait]
impl Notifier for EventLog {
    async fn publish(&self, n: &Notification) -> Result<()> {
        let mut line =
            serde_json::to_vec(n).map_err(|e| Error::json("encoding a notification", e))?;
        line.push(b'\n');
        let (done, written) = oneshot::channel();
        self.writer
            .send(Append { line, done })
            .map_err(|_| Error::Task("the event log writer has stopped".into()))?;
        written
            .await
            .map_err(|_| Error::Task("the event log writer stopped before writing".into()))??;
        if let Some(o) = &self.observer {
            let _ = o.send(n.clone());
        }
        Ok(())
    }
}

/// Reads every notification in an event log; lines that do not parse are skipped.
pub fn read_event_log(path: &Path) -> Result<Vec<Notification>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn note(request_id: &str) -> Notification {
        sealbox_core::conformance::test_notification(request_id)
    }

    #[tokio::test]
    async fn publish_returns_only_once_its_line_is_in_the_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("events.ndjson");
        let log = EventLog::open(&path, true).unwrap();
        for i in 0..20 {
            let n = note(&format!("r{i}"));
            log.publish(&n).await.unwrap();
            let written = read_event_log(&path).unwrap();
            assert_eq!(written.len(), i + 1);
            assert_eq!(written[i], n);
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(*log.committed().borrow(), len);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishes_are_each_written_whole_and_acknowledged() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("events.ndjson");
        let log = Arc::new(EventLog::open(&path, true).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..500 {
            let log = log.clone();
            tasks.spawn(async move { log.publish(&note(&format!("r{i}"))).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        let mut ids: Vec<String> = read_event_log(&path)
            .unwrap()
            .into_iter()
            .map(|n| n.request_id)
            .collect();
        assert_eq!(text.lines().count(), 500);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 500);
        assert_eq!(*log.committed().borrow(), text.len() as u64);
    }

    #[tokio::test]
    async fn a_torn_last_line_left_by_a_crash_does_not_swallow_the_next_notification() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("events.ndjson");
        let whole = serde_json::to_string(&note("r0")).unwrap();
        std::fs::write(&path, format!("{whole}\n{{\"version\":1,\"event_")).unwrap();
        let log = EventLog::open(&path, false).unwrap();
        log.publish(&note("r1")).await.unwrap();
        let ids: Vec<String> = read_event_log(&path)
            .unwrap()
            .into_iter()
            .map(|n| n.request_id)
            .collect();
        assert_eq!(ids, ["r0", "r1"]);
    }

    /// The log is a FIFO whose buffer is full, so the writer blocks in write(2) until the test
    /// drains it. A task spawned after the publish must still run on the single runtime thread
    /// while that publish waits; only then is the FIFO drained. Were the write done on the
    /// runtime thread, nothing else would run until the watchdog drains it, and the publish
    /// would finish first.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "current_thread")]
    async fn a_publish_waiting_on_a_blocked_write_leaves_the_async_runtime_free() {
        use std::os::unix::fs::OpenOptionsExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("events.ndjson");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        // Fill the FIFO's buffer from a non-blocking writer.
        let mut filler = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let chunk = [b'x'; 4096];
        while filler.write(&chunk).is_ok() {}
        let log = EventLog::open(&path, false).unwrap();

        let order = Arc::new(AtomicUsize::new(0));
        let (go, wait_go) = std_mpsc::channel::<()>();
        let drainer = std::thread::spawn(move || {
            // Watchdog only: a passing run sends `go` at once.
            let _ = wait_go.recv_timeout(std::time::Duration::from_secs(10));
            let mut sink = Vec::new();
            loop {
                match reader.read_to_end(&mut sink) {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if sink.ends_with(b"\n") {
                            break;
                        }
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            sink
        });
        let published = {
            let order = order.clone();
            tokio::spawn(async move {
                log.publish(&note("r0")).await.unwrap();
                order.fetch_add(1, Ordering::SeqCst)
            })
        };
        let other = {
            let order = order.clone();
            tokio::spawn(async move {
                let seen = order.fetch_add(1, Ordering::SeqCst);
                let _ = go.send(());
                seen
            })
        };
        assert_eq!(
            other.await.unwrap(),
            0,
            "the runtime was blocked by the write"
        );
        assert_eq!(published.await.unwrap(), 1);
        drop(filler);
        let sink = drainer.join().unwrap();
        assert!(sink.ends_with(b"\n"));
    }
}
