//! Notifier for the embedded stack: one JSON line per notification in an append-only file,
//! optionally forwarded to a webhook.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::webhook::Webhook;
use crate::contract::Notification;
use crate::error::{Error, Result};
use crate::ports::notifier::Notifier;

/// Appends notifications to `events.ndjson`.
#[derive(Clone)]
pub struct EventLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    durable: bool,
    webhook: Option<Webhook>,
    observer: Option<mpsc::UnboundedSender<Notification>>,
}

impl EventLog {
    /// Opens (creating) the log at `path`; with `durable`, each line is fsynced.
    pub fn open(path: &Path, durable: bool) -> Result<EventLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        // O_APPEND: each line lands whole at the end, even with several writers.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(EventLog {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
            durable,
            webhook: None,
            observer: None,
        })
    }

    /// Also forwards each notification to a webhook.
    pub fn with_webhook(mut self, webhook: Webhook) -> Self {
        self.webhook = Some(webhook);
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
}

#[async_trait]
impl Notifier for EventLog {
    async fn publish(&self, n: &Notification) -> Result<()> {
        let mut line =
            serde_json::to_vec(n).map_err(|e| Error::json("encoding a notification", e))?;
        line.push(b'\n');
        {
            let mut f = self
                .file
                .lock()
                .map_err(|_| Error::Notify("event log lock poisoned".into()))?;
            // One write(2) per line, so a crash never leaves half a line behind a whole one.
            f.write_all(&line)
                .map_err(|e| Error::io(format!("appending to {}", self.path.display()), e))?;
            if self.durable {
                f.sync_data()
                    .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))?;
            }
        }
        if let Some(w) = &self.webhook {
            w.enqueue(n.clone());
        }
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
