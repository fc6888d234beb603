//! Inbox notifications for the embedded stack: a request object that lands in
//! `<inbox>/<buyer>/requests/` by any means becomes an [`InboxEvent`] on the inbox-events queue,
//! the way S3 notifies SQS.
//!
//! A file-system watcher reports finished writes (close after write, rename into place); a scan
//! at start-up and after a watcher overflow picks up what was missed. Each (key, ETag) is sent
//! once, recorded in the queue's own transaction, so nothing is ingested twice.
//!
//! A file system, unlike S3, shows a file while it is being written. A file the watcher reports
//! closed or renamed is whole; a file a scan finds may not be, so a scan takes only files left
//! alone for [`SETTLE`] and looks at the others again once that has passed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::fs_store::FsObjectStore;
use super::sqlite_queue::SqliteQueue;
use crate::contract::InboxEvent;
use crate::error::{Error, Result};
use crate::layout::{TEMP_PREFIX, parse_request_key};

/// How long a file a scan finds must have been left unmodified before it is taken as whole.
pub const SETTLE: Duration = Duration::from_millis(500);

/// A running inbox watcher; dropping it stops watching.
pub struct InboxWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

enum Signal {
    /// Paths the watcher reported.
    Paths(Vec<PathBuf>),
    /// A new folder, or a file still being written, to look at again.
    Recheck(Vec<PathBuf>),
    /// The watcher lost events: scan everything.
    Rescan,
}

/// Turns request objects in one bucket folder into inbox events.
#[derive(Clone)]
pub struct InboxScanner {
    bucket: String,
    dir: PathBuf,
    events: SqliteQueue,
}

impl InboxScanner {
    /// A scanner of `bucket` in `store`, sending to `events`.
    pub fn new(store: &FsObjectStore, bucket: &str, events: SqliteQueue) -> Self {
        let dir = store.bucket_dir(bucket);
        InboxScanner {
            bucket: bucket.to_owned(),
            // The watcher reports absolute paths: a relative folder would match none of them.
            dir: std::path::absolute(&dir).unwrap_or(dir),
            events,
        }
    }

    /// The event for one file, if it is a request object.
    fn event_for(&self, path: &Path, md: &fs::Metadata) -> Option<(String, String)> {
        let rel = path.strip_prefix(&self.dir).ok()?.to_str()?;
        let name = path.file_name()?.to_str()?;
        if name.starts_with(TEMP_PREFIX) || parse_request_key(rel).is_none() {
            return None;
        }
        let meta = FsObjectStore::meta_of(rel, md);
        let event = InboxEvent {
            bucket: self.bucket.clone(),
            key: meta.key.clone(),
            etag: meta.etag.clone(),
            size: meta.size,
            // When it was seen, not its mtime: `cp -p` or `tar` keep old times, and the
            // deadline counts from arrival.
            event_time: time::OffsetDateTime::now_utc(),
        };
        let body = serde_json::to_string(&event).ok()?;
        Some((format!("{}|{}", meta.key, meta.etag), body))
    }

    /// Collects the events under `path`; files that may still be written go to `unsettled`
    /// unless `whole` says the watcher saw this very file closed or renamed.
    fn collect(&self, path: &Path, whole: bool, found: &mut Found) {
        match fs::symlink_metadata(path) {
            Ok(md) if md.is_dir() => {
                if let Ok(entries) = fs::read_dir(path) {
                    for entry in entries.flatten() {
                        self.collect(&entry.path(), false, found);
                    }
                }
            }
            Ok(md) if md.is_file() => {
                if whole || settled(&md, SystemTime::now()) {
                    found.events.extend(self.event_for(path, &md));
                } else {
                    found.unsettled.push(path.to_owned());
                }
            }
            _ => {}
        }
    }

    /// Sends an event for every request object under `paths` not sent before. `whole` says the
    /// watcher reported these paths as finished writes. Returns how many were sent and the
    /// files to look at again after [`SETTLE`].
    async fn scan(&self, paths: Vec<PathBuf>, whole: bool) -> Result<(usize, Vec<PathBuf>)> {
        let this = self.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut found = Found::default();
            for p in &paths {
                this.collect(p, whole, &mut found);
            }
            found
        })
        .await?;
        // Small transactions: a scan of a full folder must not hold the queue for long.
        let mut sent = 0;
        let mut events = found.events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<_> = events.by_ref().take(256).collect();
            sent += self.events.send_if_new(chunk).await?;
        }
        Ok((sent, found.unsettled))
    }

    /// Scans the whole bucket; returns how many events were sent and the files still being
    /// written.
    pub async fn scan_all(&self) -> Result<(usize, Vec<PathBuf>)> {
        self.scan(vec![self.dir.clone()], false).await
    }
}

/// What a scan found.
#[derive(Default)]
struct Found {
    /// (dedup id, event body) per request object.
    events: Vec<(String, String)>,
    /// Files modified too recently to be taken as whole.
    unsettled: Vec<PathBuf>,
}

/// Whether a file was left alone long enough to be taken as whole. A modification time in the
/// future (`touch -d`, a skewed clock on a share) is not a write in progress.
fn settled(md: &fs::Metadata, now: SystemTime) -> bool {
    md.modified()
        .map(|m| now.duration_since(m).map_or(true, |age| age >= SETTLE))
        .unwrap_or(true)
}

fn relevant(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Create(CreateKind::Folder)
    )
}

impl InboxWatcher {
    /// Starts watching, then scans the bucket for what landed while nothing watched.
    pub async fn start(scanner: InboxScanner) -> Result<InboxWatcher> {
        fs::create_dir_all(&scanner.dir)
            .map_err(|e| Error::io(format!("creating {}", scanner.dir.display()), e))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Signal>();
        let later = tx.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let signal = match res {
                Ok(ev) if ev.need_rescan() => Signal::Rescan,
                Ok(ev) if relevant(&ev.kind) => Signal::Paths(ev.paths),
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "inbox watcher error; rescanning");
                    Signal::Rescan
                }
            };
            let _ = tx.send(signal);
        })
        .map_err(|e| Error::Task(format!("starting the inbox watcher: {e}")))?;
        watcher
            .watch(&scanner.dir, RecursiveMode::Recursive)
            .map_err(|e| Error::Task(format!("watching {}: {e}", scanner.dir.display())))?;
        // Watch first, then scan: a file landing in between is seen twice and sent once.
        let (found, unsettled) = scanner.scan_all().await?;
        tracing::info!(found, dir = %scanner.dir.display(), "inbox scanned");
        recheck_later(&later, unsettled, SETTLE);
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut rescan = false;
                let mut reported = Vec::new();
                let mut again = Vec::new();
                let mut new_dirs = Vec::new();
                let mut next = Some(first);
                while let Some(signal) = next.take() {
                    match signal {
                        Signal::Paths(p) => {
                            new_dirs.extend(p.iter().filter(|p| p.is_dir()).cloned());
                            reported.extend(p);
                        }
                        Signal::Recheck(p) => again.extend(p),
                        Signal::Rescan => rescan = true,
                    }
                    if reported.len() + again.len() < 4096 {
                        next = rx.try_recv().ok();
                    }
                }
                // The watch on a new folder is added after the folder appears: what lands in
                // it meanwhile has no event. Scan new folders again once the watch is in place.
                for wait in [50, 1000] {
                    recheck_later(&later, new_dirs.clone(), Duration::from_millis(wait));
                }
                let scanned = if rescan {
                    scanner.scan_all().await
                } else {
                    match scanner.scan(reported, true).await {
                        Ok((n, mut unsettled)) => {
                            scanner.scan(again, false).await.map(|(m, more)| {
                                unsettled.extend(more);
                                (n + m, unsettled)
                            })
                        }
                        Err(e) => Err(e),
                    }
                };
                match scanned {
                    Ok((_, unsettled)) => recheck_later(&later, unsettled, SETTLE),
                    Err(e) => {
                        // The files stay in the inbox: look at everything again shortly.
                        tracing::error!(error = %e, "could not record inbox events; rescanning in 1 s");
                        let later = later.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let _ = later.send(Signal::Rescan);
                        });
                    }
                }
            }
        });
        Ok(InboxWatcher {
            _watcher: watcher,
            task,
        })
    }
}

/// Asks the watcher task to look at `paths` again after `wait`.
fn recheck_later(later: &mpsc::UnboundedSender<Signal>, paths: Vec<PathBuf>, wait: Duration) {
    if paths.is_empty() {
        return;
    }
    let later = later.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = later.send(Signal::Recheck(paths));
    });
}

impl Drop for InboxWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::sqlite_queue::QueueDb;
    use crate::ports::job_queue::{JobQueue, ReceiveOptions};

    async fn received(events: &SqliteQueue) -> Vec<String> {
        let options = ReceiveOptions {
            max_messages: 10,
            wait: Duration::ZERO,
            visibility_timeout: Duration::from_secs(30),
        };
        let got = events.receive(options).await.unwrap();
        got.into_iter().map(|m| m.body).collect()
    }

    fn fixture(dir: &Path) -> (InboxScanner, SqliteQueue) {
        let store = FsObjectStore::new(dir.join("buckets"), false);
        let db = QueueDb::open(&dir.join("queues.db")).unwrap();
        let events = db.queue("inbox-events", None);
        (InboxScanner::new(&store, "inbox", events.clone()), events)
    }

    fn request_file(scanner: &InboxScanner, name: &str) -> PathBuf {
        let dir = scanner.dir.join("b1/requests");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, b"{}").unwrap();
        path
    }

    fn age(path: &Path, by: Duration) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - by).unwrap();
    }

    #[tokio::test]
    async fn a_scan_leaves_files_still_being_written_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let (scanner, events) = fixture(dir.path());
        let fresh = request_file(&scanner, "fresh.json");
        let old = request_file(&scanner, "old.json");
        age(&old, SETTLE * 2);

        let (sent, unsettled) = scanner.scan_all().await.unwrap();
        assert_eq!((sent, unsettled), (1, vec![fresh.clone()]));
        let got = received(&events).await;
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("b1/requests/old.json"));

        age(&fresh, SETTLE * 2);
        let (sent, unsettled) = scanner.scan(vec![fresh], false).await.unwrap();
        assert_eq!((sent, unsettled.len()), (1, 0));
    }

    #[tokio::test]
    async fn a_file_the_watcher_saw_closed_is_taken_at_once_and_sent_once() {
        let dir = tempfile::tempdir().unwrap();
        let (scanner, _events) = fixture(dir.path());
        let closed = request_file(&scanner, "closed.json");
        let (sent, unsettled) = scanner.scan(vec![closed.clone()], true).await.unwrap();
        assert_eq!((sent, unsettled.len()), (1, 0));
        let (sent, _) = scanner.scan(vec![closed], true).await.unwrap();
        assert_eq!(sent, 0, "the same (key, ETag) is sent once");
    }

    #[test]
    fn a_modification_time_in_the_future_is_not_a_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let now = SystemTime::now();
        let md = fs::metadata(&path).unwrap();
        assert!(!settled(&md, now));
        assert!(settled(&md, now + SETTLE));
        assert!(settled(&md, now - Duration::from_secs(3600)));
    }

    #[tokio::test]
    async fn the_watcher_announces_a_file_written_in_place_once_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (scanner, events) = fixture(dir.path());
        let requests = scanner.dir.join("b1/requests");
        let _watcher = InboxWatcher::start(scanner).await.unwrap();
        // A new folder and a file written in two steps, as `cp` of a large file does.
        fs::create_dir_all(&requests).unwrap();
        let path = requests.join("r1.json");
        {
            use std::io::Write;
            let mut f = fs::File::create(&path).unwrap();
            f.write_all(b"{\"version\":").unwrap();
            tokio::time::sleep(Duration::from_millis(120)).await;
            f.write_all(b" 1}").unwrap();
        }
        let size = fs::metadata(&path).unwrap().len();
        let mut bodies = Vec::new();
        let deadline = tokio::time::Instant::now() + SETTLE * 6;
        while tokio::time::Instant::now() < deadline {
            bodies.extend(received(&events).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(bodies.len(), 1, "{bodies:?}");
        let event: InboxEvent = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(
            (event.key.as_str(), event.size),
            ("b1/requests/r1.json", size)
        );
    }
}
