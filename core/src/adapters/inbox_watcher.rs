//! Inbox notifications for the embedded stack: a request object that lands in
//! `<inbox>/<buyer>/requests/` by any means becomes an [`InboxEvent`] on the inbox-events queue,
//! the way S3 notifies SQS.
//!
//! A file-system watcher reports finished writes (close after write, rename into place); a scan
//! at start-up and after a watcher overflow picks up what was missed. Each (key, ETag) is sent
//! once, recorded in the queue's own transaction, so nothing is ingested twice.

use std::fs;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::fs_store::FsObjectStore;
use super::sqlite_queue::SqliteQueue;
use crate::contract::InboxEvent;
use crate::error::{Error, Result};
use crate::layout::{TEMP_PREFIX, parse_request_key};

/// A running inbox watcher; dropping it stops watching.
pub struct InboxWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

enum Signal {
    /// Paths the watcher reported.
    Paths(Vec<PathBuf>),
    /// A new folder to look at again, now that its watch is in place.
    Recheck(PathBuf),
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
        InboxScanner {
            bucket: bucket.to_owned(),
            dir: store.bucket_dir(bucket),
            events,
        }
    }

    /// The event for one file, if it is a request object.
    fn event_for(&self, path: &Path) -> Option<(String, String)> {
        let rel = path.strip_prefix(&self.dir).ok()?.to_str()?;
        let name = path.file_name()?.to_str()?;
        if name.starts_with(TEMP_PREFIX) || parse_request_key(rel).is_none() {
            return None;
        }
        let md = fs::metadata(path).ok().filter(|m| m.is_file())?;
        let meta = FsObjectStore::meta_of(rel, &md);
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

    fn collect(&self, path: &Path, out: &mut Vec<(String, String)>) {
        match fs::symlink_metadata(path) {
            Ok(md) if md.is_dir() => {
                if let Ok(entries) = fs::read_dir(path) {
                    for entry in entries.flatten() {
                        self.collect(&entry.path(), out);
                    }
                }
            }
            Ok(md) if md.is_file() => out.extend(self.event_for(path)),
            _ => {}
        }
    }

    /// Sends an event for every request object under `paths` not sent before; returns how many.
    pub async fn scan(&self, paths: Vec<PathBuf>) -> Result<usize> {
        let this = self.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for p in &paths {
                this.collect(p, &mut out);
            }
            out
        })
        .await?;
        // Small transactions: a scan of a full folder must not hold the queue for long.
        let mut sent = 0;
        let mut found = found.into_iter().peekable();
        while found.peek().is_some() {
            let chunk: Vec<_> = found.by_ref().take(256).collect();
            sent += self.events.send_if_new(chunk).await?;
        }
        Ok(sent)
    }

    /// Scans the whole bucket.
    pub async fn scan_all(&self) -> Result<usize> {
        self.scan(vec![self.dir.clone()]).await
    }
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
        let found = scanner.scan_all().await?;
        tracing::info!(found, dir = %scanner.dir.display(), "inbox scanned");
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut rescan = false;
                let mut paths = Vec::new();
                let mut new_dirs = Vec::new();
                let mut next = Some(first);
                while let Some(signal) = next.take() {
                    match signal {
                        Signal::Paths(p) => {
                            new_dirs.extend(p.iter().filter(|p| p.is_dir()).cloned());
                            paths.extend(p);
                        }
                        Signal::Recheck(dir) => paths.push(dir),
                        Signal::Rescan => rescan = true,
                    }
                    if paths.len() < 4096 {
                        next = rx.try_recv().ok();
                    }
                }
                // The watch on a new folder is added after the folder appears: what lands in
                // it meanwhile has no event. Scan new folders again once the watch is in place.
                for dir in new_dirs {
                    let later = later.clone();
                    tokio::spawn(async move {
                        for wait in [50, 1000] {
                            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                            if later.send(Signal::Recheck(dir.clone())).is_err() {
                                return;
                            }
                        }
                    });
                }
                let scanned = if rescan {
                    scanner.scan_all().await
                } else {
                    scanner.scan(paths).await
                };
                if let Err(e) = scanned {
                    // The files stay in the inbox: look at everything again shortly.
                    tracing::error!(error = %e, "could not record inbox events; rescanning in 1 s");
                    let later = later.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        let _ = later.send(Signal::Rescan);
                    });
                }
            }
        });
        Ok(InboxWatcher {
            _watcher: watcher,
            task,
        })
    }
}

impl Drop for InboxWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
