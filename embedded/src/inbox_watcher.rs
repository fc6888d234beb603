//! Inbox notifications for the embedded stack: a request object that lands in
//! `<inbox>/<buyer>/requests/` by any means (a rename, a write in place, `ln`, `linkat`)
//! becomes an [`InboxEvent`] on the inbox-events queue, the way S3 notifies SQS.
//!
//! Only three levels are watched, each folder on its own (never recursively, never through a
//! symbolic link): the bucket, each `<buyer>/` and each `<buyer>/requests/`. What a buyer puts
//! under `inputs/`, however deep, costs no watch. A rename into place is whole and taken at
//! once; a file created or written in place is taken once it has been left alone for
//! [`SETTLE`] (a save in several writes gets one event, for the finished file); a scan at
//! start-up and after a watcher overflow picks up what was missed. Each (key, ETag) is sent
//! once, recorded in the queue's own transaction, so nothing is ingested twice.
//!
//! What S3 could never hold gets an event all the same when it is named like a request object
//! (a symbolic link, a FIFO, a folder named `x.json`: ingest rejects it as `request_not_a_file`)
//! or a log line otherwise (a `requests` folder that is a symbolic link, a folder nested under
//! `requests/`, a name that is not UTF-8).

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::fs_store::FsObjectStore;
use crate::sqlite_queue::SqliteQueue;
use sealbox_core::contract::InboxEvent;
use sealbox_core::layout::{TEMP_PREFIX, parse_request_key};
use sealbox_core::ports::OutgoingMessage;
use sealbox_core::{Error, Result};

/// How long a file written in place must have been left unmodified before it is taken whole.
pub const SETTLE: Duration = Duration::from_millis(500);

/// How often the whole inbox is scanned while watching.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(3600);

/// Events recorded per queue transaction, and per message of a scan to the recorder.
const CHUNK: usize = 256;

/// A running inbox watcher; dropping it stops watching.
pub struct InboxWatcher {
    task: tokio::task::JoinHandle<()>,
}

enum Signal {
    /// Renamed into place: whole now.
    Whole(Vec<PathBuf>),
    /// Created or written in place: taken once settled.
    Look(Vec<PathBuf>),
    /// New folders: watch them, and look again shortly (what lands before the watch is added
    /// has no event).
    NewDirs(Vec<PathBuf>),
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

/// Where a path lies in the bucket.
enum Level<'a> {
    Root,
    Buyer,
    Requests,
    /// An entry of `<buyer>/requests/`, with its key.
    Entry(&'a str),
    /// Anything else (inputs, nested folders, files at the top).
    Other,
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

    fn level<'a>(&self, path: &'a Path) -> Level<'a> {
        let Ok(rel) = path.strip_prefix(&self.dir) else {
            return Level::Other;
        };
        let parts: Vec<Component<'_>> = rel.components().collect();
        match parts.as_slice() {
            [] => Level::Root,
            [Component::Normal(_)] => Level::Buyer,
            [Component::Normal(_), Component::Normal(r)] if *r == "requests" => Level::Requests,
            [
                Component::Normal(_),
                Component::Normal(r),
                Component::Normal(_),
            ] if *r == "requests" => match rel.to_str() {
                Some(key) => Level::Entry(key),
                None => {
                    tracing::warn!(path = %path.display(), "inbox name is not UTF-8 (S3 keys always are); ignored");
                    Level::Other
                }
            },
            _ => Level::Other,
        }
    }

    /// The event for an entry of `requests/` named like a request object. Entries that are
    /// not regular files get one too: ingest answers them with `request_not_a_file`.
    fn event_for(&self, key: &str, md: &fs::Metadata) -> Option<(String, OutgoingMessage)> {
        let name = key.rsplit('/').next()?;
        if name.starts_with(TEMP_PREFIX) {
            return None;
        }
        let Some(request) = parse_request_key(key) else {
            if md.is_dir() {
                tracing::warn!(
                    key,
                    "a folder under requests/ is not a request object; nothing in it is read"
                );
            }
            return None;
        };
        let meta = FsObjectStore::meta_of(key, md);
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
        // The buyer is the event's tenant: one buyer's burst does not delay another's.
        let message = OutgoingMessage::new(body).in_group(request.buyer);
        // The ETag quoted, as the file store's tags were before `ETag`: the keys stored by an
        // earlier version still match, so an upgraded stack does not send its inbox again.
        Some((format!("{}|{}", meta.key, meta.etag.quoted()), message))
    }

    /// Collects what is under `path` (blocking). Files that may still be written go to
    /// `found.unsettled` unless `whole` says the watcher saw this very file renamed into place.
    fn collect(&self, path: &Path, whole: bool, found: &mut Found) {
        let level = self.level(path);
        // Temporary files of the store's own writes are renamed into place shortly: not even
        // looked at (each write's creation, close and rename name one).
        if matches!(level, Level::Entry(_)) && is_temp_file(path) {
            return;
        }
        let Ok(md) = fs::symlink_metadata(path) else {
            return;
        };
        if md.is_symlink() && matches!(level, Level::Buyer | Level::Requests) {
            tracing::warn!(path = %path.display(), "a symbolic link in the inbox is never followed; nothing behind it is read");
            return;
        }
        match level {
            Level::Root | Level::Buyer | Level::Requests if md.is_dir() => {
                found.dirs.push(path.to_owned());
                let Ok(entries) = fs::read_dir(path) else {
                    return;
                };
                for entry in entries.flatten() {
                    let child = entry.path();
                    // A buyer's folder holds requests/ and inputs/; only requests/ is read.
                    if matches!(level, Level::Buyer) && entry.file_name() != "requests" {
                        continue;
                    }
                    self.collect(&child, false, found);
                }
            }
            Level::Entry(key) => {
                if md.is_file() && parse_request_key(key).is_none() {
                    return;
                }
                if md.is_file() && !whole && !settled(&md, SystemTime::now()) {
                    found.unsettled.push(path.to_owned());
                } else if let Some(event) = self.event_for(key, &md) {
                    found.push(event);
                }
            }
            _ => {}
        }
    }

    /// The folders to watch: the bucket, each buyer's and each `requests/` (blocking; reads
    /// no request folder).
    fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.dir.clone()];
        let Ok(buyers) = fs::read_dir(&self.dir) else {
            return dirs;
        };
        for buyer in buyers.flatten() {
            if !buyer.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let requests = buyer.path().join("requests");
            dirs.push(buyer.path());
            if fs::symlink_metadata(&requests).is_ok_and(|m| m.is_dir()) {
                dirs.push(requests);
            }
        }
        dirs
    }

    /// Sends an event for every request object under `paths` not sent before. `whole` says the
    /// watcher reported these paths renamed into place. Returns how many were sent, the files
    /// to look at again after [`SETTLE`] and the folders that want a watch.
    async fn scan(&self, paths: Vec<PathBuf>, whole: bool) -> Result<Scanned> {
        // The walk streams its events in chunks: a scan of a full inbox never holds them all.
        let (tx, mut rx) = mpsc::channel::<Vec<(String, OutgoingMessage)>>(4);
        let this = self.clone();
        let walk = tokio::task::spawn_blocking(move || {
            let mut found = Found {
                chunk: Vec::new(),
                unsettled: Vec::new(),
                dirs: Vec::new(),
                tx,
            };
            for p in &paths {
                this.collect(p, whole, &mut found);
            }
            found.flush();
            (found.unsettled, found.dirs)
        });
        let mut sent = 0;
        let mut failed = None;
        while let Some(chunk) = rx.recv().await {
            if failed.is_none() {
                match self.events.send_if_new(chunk).await {
                    Ok(n) => sent += n,
                    Err(e) => failed = Some(e),
                }
            }
        }
        let (unsettled, dirs) = walk.await?;
        match failed {
            Some(e) => Err(e),
            None => Ok(Scanned {
                sent,
                unsettled,
                dirs,
            }),
        }
    }

    /// Scans the whole bucket; returns how many events were sent and the files still being
    /// written.
    pub async fn scan_all(&self) -> Result<(usize, Vec<PathBuf>)> {
        let s = self.full_scan().await?;
        Ok((s.sent, s.unsettled))
    }

    /// Scans the whole bucket, then forgets the (key, ETag) records of request objects it no
    /// longer holds, so the record stays as large as the inbox.
    async fn full_scan(&self) -> Result<Scanned> {
        let began = SystemTime::now();
        let scanned = self.scan(vec![self.dir.clone()], false).await?;
        match self.events.forget_unseen_since(began).await {
            Ok(n) if n > 0 => tracing::debug!(
                forgotten = n,
                "forgot events of request objects no longer in the inbox"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not forget events of removed request objects")
            }
        }
        Ok(scanned)
    }
}

/// What a scan found, as the walk goes.
struct Found {
    /// Events not yet handed to the recorder: (dedup id, event body).
    chunk: Vec<(String, OutgoingMessage)>,
    /// Files modified too recently to be taken as whole.
    unsettled: Vec<PathBuf>,
    /// Folders of the three watched levels.
    dirs: Vec<PathBuf>,
    tx: mpsc::Sender<Vec<(String, OutgoingMessage)>>,
}

impl Found {
    fn push(&mut self, event: (String, OutgoingMessage)) {
        self.chunk.push(event);
        if self.chunk.len() >= CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.chunk.is_empty() {
            // A closed channel means the recorder failed; the caller reports that.
            let _ = self.tx.blocking_send(std::mem::take(&mut self.chunk));
        }
    }
}

/// The outcome of one scan.
struct Scanned {
    sent: usize,
    unsettled: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

/// Whether a file was left alone long enough to be taken as whole. A modification time in the
/// future (`touch -d`, a skewed clock on a share) is not a write in progress.
fn settled(md: &fs::Metadata, now: SystemTime) -> bool {
    md.modified()
        .map(|m| now.duration_since(m).map_or(true, |age| age >= SETTLE))
        .unwrap_or(true)
}

/// The signal a file-system event gives, if any.
fn signal_of(event: notify::Event) -> Option<Signal> {
    if event.need_rescan() {
        return Some(Signal::Rescan);
    }
    // The store's own temporary files are renamed into place: only the final name matters,
    // so three of the four events of an atomic write wake no one.
    let files = || -> Option<Vec<PathBuf>> {
        let paths: Vec<PathBuf> = event
            .paths
            .iter()
            .filter(|p| !is_temp_file(p))
            .cloned()
            .collect();
        (!paths.is_empty()).then_some(paths)
    };
    match event.kind {
        EventKind::Create(CreateKind::Folder) => Some(Signal::NewDirs(event.paths)),
        EventKind::Modify(ModifyKind::Name(_)) => files().map(Signal::Whole),
        // A hard link or `linkat` shows only as a creation; a write in place as a creation
        // and a close.
        EventKind::Create(_) | EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
            files().map(Signal::Look)
        }
        _ => None,
    }
}

/// Whether `path` names a temporary file of the store's writes.
fn is_temp_file(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes()))
}

type SharedWatcher = Arc<Mutex<notify::RecommendedWatcher>>;

/// Watches each folder on its own; a failure (the watch limit) is logged with the remedy.
fn watch_dirs(watcher: &SharedWatcher, dirs: &[PathBuf]) {
    let Ok(mut w) = watcher.lock() else {
        return;
    };
    for dir in dirs {
        if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot watch an inbox folder; its requests are found at the next restart (raise fs.inotify.max_user_watches if the limit is reached)");
        }
    }
}

impl InboxWatcher {
    /// Starts watching, then scans the bucket for what landed while nothing watched.
    pub async fn start(scanner: InboxScanner) -> Result<InboxWatcher> {
        fs::create_dir_all(&scanner.dir)
            .map_err(|e| Error::io(format!("creating {}", scanner.dir.display()), e))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Signal>();
        let later = tx.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let signal = match res {
                Ok(ev) => signal_of(ev),
                Err(e) => {
                    tracing::warn!(error = %e, "inbox watcher error; rescanning");
                    Some(Signal::Rescan)
                }
            };
            if let Some(signal) = signal {
                let _ = tx.send(signal);
            }
        };
        let config = notify::Config::default().with_follow_symlinks(false);
        let watcher = notify::RecommendedWatcher::new(handler, config)
            .map_err(|e| Error::Task(format!("starting the inbox watcher: {e}")))?;
        let watcher: SharedWatcher = Arc::new(Mutex::new(watcher));
        // Watch first, then scan: a file landing in between is seen twice and sent once.
        let dirs = {
            let scanner = scanner.clone();
            tokio::task::spawn_blocking(move || scanner.watched_dirs()).await?
        };
        watch_dirs(&watcher, &dirs);
        let first = scanner.full_scan().await?;
        // Folders made during the scan have their watch from their creation event on.
        watch_dirs(&watcher, &first.dirs);
        tracing::info!(found = first.sent, dir = %scanner.dir.display(), "inbox scanned");
        recheck_later(&later, first.unsettled, SETTLE);
        // A periodic full scan finds what a lost watch missed and keeps the record trimmed.
        let periodic = {
            let later = later.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(FULL_SCAN_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if later.send(Signal::Rescan).is_err() {
                        return;
                    }
                }
            })
        };
        let task = tokio::spawn(async move {
            let _periodic = AbortOnDrop(periodic);
            while let Some(first) = rx.recv().await {
                let mut rescan = false;
                let (mut whole, mut look, mut new_dirs) = (Vec::new(), Vec::new(), Vec::new());
                let mut next = Some(first);
                while let Some(signal) = next.take() {
                    match signal {
                        Signal::Whole(p) => whole.extend(p),
                        Signal::Look(p) => look.extend(p),
                        Signal::NewDirs(p) => new_dirs.extend(p),
                        Signal::Rescan => rescan = true,
                    }
                    if whole.len() + look.len() + new_dirs.len() < 4096 {
                        next = rx.try_recv().ok();
                    }
                }
                let scanned = if rescan {
                    scanner.full_scan().await
                } else {
                    let mut all = Scanned {
                        sent: 0,
                        unsettled: Vec::new(),
                        dirs: Vec::new(),
                    };
                    let mut result = Ok(());
                    // Folders new or renamed into place want a watch and a second look.
                    for (paths, is_whole, fresh) in [
                        (whole, true, true),
                        (new_dirs, false, true),
                        (look, false, false),
                    ] {
                        if paths.is_empty() || result.is_err() {
                            continue;
                        }
                        match scanner.scan(paths, is_whole).await {
                            Ok(s) => {
                                all.sent += s.sent;
                                all.unsettled.extend(s.unsettled);
                                if fresh {
                                    all.dirs.extend(s.dirs);
                                } else {
                                    watch_dirs(&watcher, &s.dirs);
                                }
                            }
                            Err(e) => result = Err(e),
                        }
                    }
                    result.map(|()| all)
                };
                match scanned {
                    Ok(s) => {
                        watch_dirs(&watcher, &s.dirs);
                        recheck_later(&later, s.unsettled, SETTLE);
                        if !rescan {
                            for wait in [50, 1000] {
                                recheck_later(&later, s.dirs.clone(), Duration::from_millis(wait));
                            }
                        }
                    }
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
        Ok(InboxWatcher { task })
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
        let _ = later.send(Signal::Look(paths));
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
    use crate::sqlite_queue::QueueDb;
    use sealbox_core::ports::queue::{QueueConsumer, ReceiveOptions};

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

    #[test]
    fn the_events_of_the_stores_temporary_files_wake_no_scan() {
        let dir = PathBuf::from("/data/buckets/inbox/b1/requests");
        let temp = dir.join(format!("{TEMP_PREFIX}42-7.tmp"));
        let done = dir.join("r1.json");
        let event = |kind, paths: &[&PathBuf]| {
            paths
                .iter()
                .fold(notify::Event::new(kind), |e, p| e.add_path((*p).clone()))
        };
        let created = event(EventKind::Create(CreateKind::File), &[&temp]);
        assert!(signal_of(created).is_none());
        let closed = event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &[&temp],
        );
        assert!(signal_of(closed).is_none());
        let renamed = event(
            EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::Both)),
            &[&temp, &done],
        );
        assert!(matches!(signal_of(renamed), Some(Signal::Whole(p)) if p == vec![done.clone()]));
        let written_in_place = event(EventKind::Create(CreateKind::File), &[&done]);
        assert!(matches!(signal_of(written_in_place), Some(Signal::Look(p)) if p == vec![done]));
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
        let Scanned {
            sent, unsettled, ..
        } = scanner.scan(vec![fresh], false).await.unwrap();
        assert_eq!((sent, unsettled.len()), (1, 0));
    }

    #[tokio::test]
    async fn a_file_renamed_into_place_is_taken_at_once_and_sent_once() {
        let dir = tempfile::tempdir().unwrap();
        let (scanner, _events) = fixture(dir.path());
        let closed = request_file(&scanner, "closed.json");
        let Scanned {
            sent, unsettled, ..
        } = scanner.scan(vec![closed.clone()], true).await.unwrap();
        assert_eq!((sent, unsettled.len()), (1, 0));
        let Scanned { sent, .. } = scanner.scan(vec![closed], true).await.unwrap();
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

    /// Collects the inbox events the queue receives within `window`.
    async fn events_within(events: &SqliteQueue, window: Duration) -> Vec<InboxEvent> {
        let mut bodies = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while tokio::time::Instant::now() < deadline {
            bodies.extend(received(events).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_request_placed_by_a_hard_link_is_announced_while_watching() {
        let dir = tempfile::tempdir().unwrap();
        let (scanner, events) = fixture(dir.path());
        let requests = scanner.dir.join("b1/requests");
        fs::create_dir_all(&requests).unwrap();
        let outside = dir.path().join("prepared.json");
        fs::write(&outside, b"{}").unwrap();
        age(&outside, SETTLE * 2);
        let _watcher = InboxWatcher::start(scanner).await.unwrap();
        // `ln` emits only a creation: no close, no rename.
        fs::hard_link(&outside, requests.join("linked.json")).unwrap();
        let got = events_within(&events, SETTLE * 4).await;
        let keys: Vec<_> = got.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["b1/requests/linked.json"]);
    }

    #[tokio::test]
    async fn a_save_in_several_writes_is_announced_once_finished() {
        let dir = tempfile::tempdir().unwrap();
        let (scanner, events) = fixture(dir.path());
        let requests = scanner.dir.join("b1/requests");
        fs::create_dir_all(&requests).unwrap();
        let _watcher = InboxWatcher::start(scanner).await.unwrap();
        let path = requests.join("r1.json");
        // Write and close, then open again and append: two closes of two versions.
        fs::write(&path, b"{\"version\":").unwrap();
        {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(b" 1}").unwrap();
        }
        let size = fs::metadata(&path).unwrap().len();
        let got = events_within(&events, SETTLE * 4).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].size, size);
    }

    #[tokio::test]
    async fn entries_that_are_not_files_are_announced_for_rejection_and_nested_folders_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let (scanner, events) = fixture(dir.path());
        let requests = scanner.dir.join("b1/requests");
        fs::create_dir_all(&requests).unwrap();
        let _watcher = InboxWatcher::start(scanner).await.unwrap();
        std::os::unix::fs::symlink("/etc/hostname", requests.join("link.json")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            requests.join("pipe.json"),
            rustix::fs::Mode::RUSR,
        )
        .unwrap();
        fs::create_dir(requests.join("folder.json")).unwrap();
        fs::create_dir_all(requests.join("nested")).unwrap();
        fs::write(requests.join("nested/deep.json"), b"{}").unwrap();
        fs::write(requests.join(".dotted.json"), b"{}").unwrap();
        let got = events_within(&events, SETTLE * 4).await;
        let mut keys: Vec<_> = got.iter().map(|e| e.key.clone()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "b1/requests/.dotted.json",
                "b1/requests/folder.json",
                "b1/requests/link.json",
                "b1/requests/pipe.json"
            ]
        );
    }

    #[tokio::test]
    async fn a_requests_folder_that_is_a_symbolic_link_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (scanner, events) = fixture(dir.path());
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join("r1.json"), b"{}").unwrap();
        age(&elsewhere.join("r1.json"), SETTLE * 2);
        fs::create_dir_all(scanner.dir.join("b1")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, scanner.dir.join("b1/requests")).unwrap();
        let _watcher = InboxWatcher::start(scanner).await.unwrap();
        fs::write(elsewhere.join("r2.json"), b"{}").unwrap();
        assert!(events_within(&events, SETTLE * 3).await.is_empty());
    }
}
