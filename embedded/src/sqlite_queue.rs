//! Queues over SQLite (bundled, WAL) with SQS semantics: batches, receipt handles, visibility
//! timeouts, receive counts, delays and a dead-letter queue after too many receives.
//!
//! Every operation is atomic (a savepoint in a transaction), and it is answered only once that
//! transaction has committed, so a `kill -9` loses nothing acknowledged and duplicates nothing:
//! a message is either in the table or deleted. The database's own thread ([`batch`]) runs the
//! operations that arrive together in one transaction, which begins `IMMEDIATE` when one of them
//! writes: it takes the write lock first, so another writer (another process on the same file)
//! makes it wait up to the busy timeout instead of failing with `SQLITE_BUSY`, as a read
//! transaction upgraded to a write would.
//!
//! `send_if_new` remembers each dedup key it is given (the inbox watcher's (key, ETag)) with
//! the time it last saw it, and sends only keys it has never seen. The inbox watcher forgets
//! the keys a complete scan of the inbox did not see again ([`SqliteQueue::forget_unseen_since`]):
//! their request objects are gone or replaced, so the table stays as large as the inbox, and a
//! request object still in the inbox is never announced twice, however long it stays.

mod batch;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use batch::{Access, DbThread};
use tokio::sync::Notify;

use sealbox_core::Error;

/// Results inside this adapter: SQLite's errors convert with `?`; at the port they become
/// [`Error::Storage`].
type Result<T, E = DbError> = std::result::Result<T, E>;

/// A failure inside the adapter: SQLite's own, or one the port already names.
#[derive(Debug)]
enum DbError {
    Sqlite(rusqlite::Error),
    Port(Error),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl From<Error> for DbError {
    fn from(e: Error) -> Self {
        DbError::Port(e)
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sqlite(e) => Error::storage("queue database", e),
            DbError::Port(e) => e,
        }
    }
}
use sealbox_core::ports::queue::{
    DeadLetter, OutgoingMessage, QueueAdmin, QueueConsumer, QueueSender, QueueStats,
    ReceiveOptions, ReceivedMessage,
};

/// One SQLite database holding any number of queues.
#[derive(Debug, Clone)]
pub struct QueueDb {
    thread: Arc<DbThread>,
    // Wakes long polls of one queue in this process; other processes are seen by polling.
    notifiers: Arc<Mutex<std::collections::HashMap<String, Arc<Notify>>>>,
    // Per queue, the group the last receive in this process took from last (fair share).
    cursors: Arc<Mutex<std::collections::HashMap<String, Arc<Mutex<String>>>>>,
}

/// Poll interval of a long poll, for messages sent by other processes or becoming visible.
const POLL: Duration = Duration::from_millis(50);

/// Dedup keys forgotten per transaction.
const PRUNE_BATCH: usize = 500;
/// How long a busy database is waited for.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn to_system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl QueueDb {
    /// Opens (creating if needed) the queue database at `path`.
    pub fn open(path: &Path) -> sealbox_core::Result<QueueDb> {
        Ok(Self::open_db(path)?)
    }

    fn open_db(path: &Path) -> Result<QueueDb> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL + NORMAL: a committed transaction survives a crash of the process (the WAL is
        // written before commit returns); only a power loss may roll back the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -32_000)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "mmap_size", 256 * 1024 * 1024)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS messages (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 queue TEXT NOT NULL,
                 body TEXT NOT NULL,
                 sent_at INTEGER NOT NULL,
                 visible_at INTEGER NOT NULL,
                 receive_count INTEGER NOT NULL DEFAULT 0,
                 receipt TEXT
             );
             CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_at, id);
             CREATE TABLE IF NOT EXISTS dedup (
                 queue TEXT NOT NULL,
                 key TEXT NOT NULL,
                 sent_at INTEGER NOT NULL DEFAULT 0,
                 PRIMARY KEY (queue, key)
             ) WITHOUT ROWID;",
        )?;
        add_dedup_sent_at(&mut conn)?;
        add_message_groups(&mut conn)?;
        conn.execute_batch("CREATE INDEX IF NOT EXISTS dedup_age ON dedup (sent_at);")?;
        // Checkpoints fsync the database: run them off the request path, from their own
        // connection, so no send or receive ever waits for one.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // The queues' statements and the batches' savepoints, all kept prepared.
        conn.set_prepared_statement_cache_capacity(32);
        // One plan per statement, whatever its values: otherwise a receive's `LIMIT ?` makes
        // SQLite prepare its statement again each time the number it asks for changes.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        let thread = Arc::new(
            DbThread::start(conn)
                .map_err(|e| Error::io("starting the queue database's thread", e))?,
        );
        spawn_checkpointer(path, Arc::downgrade(&thread))?;
        Ok(QueueDb {
            thread,
            notifiers: Arc::default(),
            cursors: Arc::default(),
        })
    }

    /// A queue in this database. With `dead_letter`, a message received more than
    /// `max_receives` times moves to the named queue instead of being delivered again.
    pub fn queue(&self, name: &str, dead_letter: Option<RedrivePolicy>) -> SqliteQueue {
        SqliteQueue {
            db: self.clone(),
            name: Arc::from(name),
            redrive: dead_letter,
            notify: self.notifier(name),
            cursor: self.cursor(name),
            found: Arc::default(),
        }
    }

    fn cursor(&self, name: &str) -> Arc<Mutex<String>> {
        match self.cursors.lock() {
            Ok(mut map) => map.entry(name.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    fn notifier(&self, name: &str) -> Arc<Notify> {
        match self.notifiers.lock() {
            Ok(mut map) => map.entry(name.to_owned()).or_default().clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// Runs `f` atomically on the database's thread; answers once it is committed.
    async fn run<T: Send + 'static>(
        &self,
        access: Access,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> sealbox_core::Result<T> {
        Ok(self.thread.call(access, f).await?)
    }
}

/// Adds `sent_at` (when a key was last seen) to a dedup table of an earlier build. The keys
/// already there count as seen now.
fn add_dedup_sent_at(conn: &mut Connection) -> Result<()> {
    let has = |conn: &Connection| -> Result<bool> {
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('dedup') WHERE name = 'sent_at'",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    };
    if has(conn)? {
        return Ok(());
    }
    // Immediate, and look again: another process may be adding it too.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !has(&tx)? {
        tx.execute_batch("ALTER TABLE dedup ADD COLUMN sent_at INTEGER NOT NULL DEFAULT 0")?;
        tx.execute("UPDATE dedup SET sent_at = ?1", params![now_ms()])?;
    }
    tx.commit()?;
    Ok(())
}

/// Checkpoints the WAL every half second while the database is open.
/// Databases made before message groups get the column (every old message in group "") and
/// the index the fair receive walks.
fn add_message_groups(conn: &mut Connection) -> Result<()> {
    let has: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('messages') WHERE name = 'grp'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE messages ADD COLUMN grp TEXT NOT NULL DEFAULT '';")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS messages_group_ready ON messages (queue, grp, visible_at, id);",
    )?;
    Ok(())
}

fn spawn_checkpointer(path: &Path, alive: std::sync::Weak<DbThread>) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while alive.strong_count() > 0 {
                std::thread::sleep(Duration::from_millis(500));
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "queue database checkpoint failed");
                }
            }
        })
        .map_err(|e| Error::io("starting the checkpoint thread", e))?;
    Ok(())
}

/// Where and when messages that keep failing go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedrivePolicy {
    /// Name of the dead-letter queue.
    pub dead_letter_queue: String,
    /// Receives after which a message is moved instead of delivered.
    pub max_receives: u32,
}

/// One queue in a [`QueueDb`].
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    db: QueueDb,
    name: Arc<str>,
    redrive: Option<RedrivePolicy>,
    notify: Arc<Notify>,
    cursor: Arc<Mutex<String>>,
    // Whether this handle's last receive found messages: under load the next one most likely
    // will too, and skips asking first.
    found: Arc<AtomicBool>,
}

fn insert(
    tx: &Connection,
    queue: &str,
    body: &str,
    delay: Duration,
    group: Option<&str>,
) -> Result<i64> {
    let now = now_ms();
    tx.prepare_cached(
        "INSERT INTO messages (queue, body, sent_at, visible_at, grp) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        queue,
        body,
        now,
        now + ms(delay),
        group.unwrap_or("")
    ])?;
    Ok(tx.last_insert_rowid())
}

fn parse_handle(handle: &str) -> Option<(i64, &str)> {
    let (id, _) = handle.split_once('.')?;
    Some((id.parse().ok()?, handle))
}

fn new_receipt(id: i64) -> String {
    let mut r = [0u8; 12];
    // A receipt only needs to be unguessable enough not to collide with an older one.
    let _ = aws_lc_rs::rand::fill(&mut r);
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("{id}.{hex}")
}

impl SqliteQueue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends each message whose dedup key this queue has never seen; returns how many were sent.
    /// The key is recorded in the same transaction, so a crash cannot send twice or lose one.
    pub async fn send_if_new(
        &self,
        messages: Vec<(String, OutgoingMessage)>,
    ) -> sealbox_core::Result<usize> {
        let name = self.name.clone();
        let sent = self
            .db
            .run(Access::Write, move |tx| {
                let now = now_ms();
                let mut sent = 0;
                for (key, message) in &messages {
                    // Seen again: remember when, so a complete scan knows it is still there.
                    let seen = tx
                        .prepare_cached(
                            "UPDATE dedup SET sent_at = ?3 WHERE queue = ?1 AND key = ?2",
                        )?
                        .execute(params![&*name, key, now])?;
                    if seen > 0 {
                        continue;
                    }
                    let fresh = tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO dedup (queue, key, sent_at) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![&*name, key, now])?;
                    if fresh == 1 {
                        insert(
                            tx,
                            &name,
                            &message.body,
                            message.delay,
                            message.group.as_deref(),
                        )?;
                        sent += 1;
                    }
                }
                Ok(sent)
            })
            .await?;
        if sent > 0 {
            self.notify.notify_waiters();
        }
        Ok(sent)
    }

    /// Forgets the dedup keys of this queue last seen before `since` (a complete scan of the
    /// inbox that began then saw every key still there), a small transaction at a time;
    /// returns how many.
    pub async fn forget_unseen_since(&self, since: SystemTime) -> sealbox_core::Result<u64> {
        let cutoff = since.duration_since(UNIX_EPOCH).map(ms).unwrap_or(0);
        let mut forgotten = 0;
        loop {
            let name = self.name.clone();
            let n = self
                .db
                .run(Access::Write, move |conn| {
                    Ok(conn
                        .prepare_cached(
                            "DELETE FROM dedup WHERE (queue, key) IN
                               (SELECT queue, key FROM dedup
                                WHERE queue = ?1 AND sent_at < ?2 LIMIT ?3)",
                        )?
                        .execute(params![&*name, cutoff, PRUNE_BATCH as i64])?)
                })
                .await?;
            forgotten += n as u64;
            if n < PRUNE_BATCH {
                return Ok(forgotten);
            }
        }
    }

    /// Makes every received-but-not-deleted message visible at once. Called at start-up by the
    /// only consumer, whose previous run died holding them.
    pub async fn release_in_flight(&self) -> sealbox_core::Result<usize> {
        let name = self.name.clone();
        self.db
            .run(Access::Write, move |conn| {
                let now = now_ms();
                Ok(conn.execute(
                    "UPDATE messages SET visible_at = ?2, receipt = NULL
                     WHERE queue = ?1 AND receive_count > 0 AND visible_at > ?2",
                    params![&*name, now],
                )?)
            })
            .await
    }

    /// Up to `want` visible messages, shared out between the groups that have some: one of
    /// each group in turn, starting after the group `cursor` names (SQS fair queues share a
    /// standard queue between tenants so; a queue of one group is plain oldest first).
    fn fair_candidates(
        tx: &Connection,
        name: &str,
        now: i64,
        want: usize,
        cursor: &str,
    ) -> Result<Vec<Candidate>> {
        // The groups with any message, one index step each (a skip scan of the group index).
        let groups: Vec<String> = tx
            .prepare_cached(
                "WITH RECURSIVE g(grp) AS (
                     SELECT (SELECT grp FROM messages WHERE queue = ?1 ORDER BY grp LIMIT 1)
                     UNION ALL
                     SELECT (SELECT grp FROM messages WHERE queue = ?1 AND grp > g.grp
                             ORDER BY grp LIMIT 1)
                     FROM g WHERE g.grp IS NOT NULL)
                 SELECT grp FROM g WHERE grp IS NOT NULL",
            )?
            .query_map(params![name], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let oldest = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<Vec<Candidate>> {
            Ok(tx
                .prepare_cached(sql)?
                .query_map(args, |r| {
                    Ok(Candidate {
                        id: r.get(0)?,
                        body: r.get(1)?,
                        receive_count: r.get(2)?,
                        sent_at: r.get(3)?,
                        group: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?)
        };
        if groups.len() <= 1 {
            return oldest(
                "SELECT id, body, receive_count, sent_at, grp FROM messages
                 WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, id LIMIT ?3",
                &[&name, &now, &(want as i64)],
            );
        }
        let start = groups.partition_point(|g| g.as_str() <= cursor);
        let mut per_group: Vec<std::collections::VecDeque<Candidate>> = Vec::new();
        for group in groups[start..].iter().chain(&groups[..start]) {
            let rows = oldest(
                "SELECT id, body, receive_count, sent_at, grp FROM messages
                 WHERE queue = ?1 AND grp = ?2 AND visible_at <= ?3
                 ORDER BY visible_at, id LIMIT ?4",
                &[&name, group, &now, &(want as i64)],
            )?;
            if !rows.is_empty() {
                per_group.push(rows.into());
            }
            // Each group met so far gives one at least: enough to fill the receive.
            if per_group.len() >= want {
                break;
            }
        }
        let mut out = Vec::with_capacity(want);
        while out.len() < want && per_group.iter().any(|g| !g.is_empty()) {
            for g in &mut per_group {
                if out.len() < want
                    && let Some(c) = g.pop_front()
                {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// Whether the queue has a message a receive could take now.
    fn any_visible(conn: &Connection, name: &str) -> Result<bool> {
        Ok(conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ?1 AND visible_at <= ?2)",
            )?
            .query_row(params![name, now_ms()], |r| r.get(0))?)
    }

    fn try_receive(
        tx: &Connection,
        name: &str,
        redrive: Option<&RedrivePolicy>,
        opts: ReceiveOptions,
        cursor: &Mutex<String>,
    ) -> Result<Vec<ReceivedMessage>> {
        let now = now_ms();
        let mut out = Vec::new();
        let mut last_group = cursor.lock().map(|c| c.clone()).unwrap_or_default();
        // Rows already handled in this receive (a zero visibility timeout leaves them visible).
        let mut seen = std::collections::HashSet::new();
        loop {
            let want = opts.max_messages.saturating_sub(out.len());
            if want == 0 {
                break;
            }
            let rows: Vec<Candidate> = Self::fair_candidates(tx, name, now, want, &last_group)?
                .into_iter()
                .filter(|r| seen.insert(r.id))
                .collect();
            if rows.is_empty() {
                break;
            }
            for c in rows {
                last_group.clone_from(&c.group);
                if let Some(policy) = redrive
                    && c.receive_count >= policy.max_receives
                {
                    tx.prepare_cached(
                        "UPDATE messages SET queue = ?2, visible_at = ?3, receipt = NULL WHERE id = ?1",
                    )?
                    .execute(params![c.id, policy.dead_letter_queue, now])?;
                    tracing::warn!(
                        queue = name,
                        message_id = c.id,
                        receives = c.receive_count,
                        "moved to dead-letter queue"
                    );
                    continue;
                }
                let receipt = new_receipt(c.id);
                tx.prepare_cached(
                    "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?2, receipt = ?3
                     WHERE id = ?1",
                )?
                .execute(params![c.id, now + ms(opts.visibility_timeout), receipt])?;
                out.push(ReceivedMessage {
                    message_id: c.id.to_string(),
                    body: c.body,
                    receipt_handle: receipt,
                    receive_count: c.receive_count + 1,
                    sent_at: to_system_time(c.sent_at),
                });
            }
        }
        if let Ok(mut c) = cursor.lock() {
            *c = last_group;
        }
        Ok(out)
    }
}

/// A visible message a receive may take.
struct Candidate {
    id: i64,
    body: String,
    receive_count: u32,
    sent_at: i64,
    group: String,
}

#[async_trait]
impl QueueSender for SqliteQueue {
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> sealbox_core::Result<Vec<String>> {
        let name = self.name.clone();
        let messages = messages.to_vec();
        let ids = self
            .db
            .run(Access::Write, move |tx| {
                let mut ids = Vec::with_capacity(messages.len());
                for m in &messages {
                    ids.push(insert(tx, &name, &m.body, m.delay, m.group.as_deref())?.to_string());
                }
                Ok(ids)
            })
            .await?;
        self.notify.notify_waiters();
        Ok(ids)
    }
}

#[async_trait]
impl QueueConsumer for SqliteQueue {
    async fn receive(&self, opts: ReceiveOptions) -> sealbox_core::Result<Vec<ReceivedMessage>> {
        let deadline = tokio::time::Instant::now() + opts.wait;
        loop {
            // Register interest before looking, so a send in between is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (name, redrive) = (self.name.clone(), self.redrive.clone());
            let cursor = self.cursor.clone();
            // An empty poll stays a read: it takes no write lock, so it waits for no writer of
            // another process and holds up none. Right after a receive that found messages,
            // the next one goes straight to the write (one operation, not two, under load).
            let any = self.found.load(Ordering::Relaxed) || {
                let name = name.clone();
                self.db
                    .run(Access::Read, move |conn| Self::any_visible(conn, &name))
                    .await?
            };
            let got = if any {
                self.db
                    .run(Access::Write, move |conn| {
                        Self::try_receive(conn, &name, redrive.as_ref(), opts, &cursor)
                    })
                    .await?
            } else {
                Vec::new()
            };
            self.found.store(!got.is_empty(), Ordering::Relaxed);
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let nap = POLL.min(deadline - now);
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> sealbox_core::Result<()> {
        let handles: Vec<(i64, String)> = receipt_handles
            .iter()
            .filter_map(|h| parse_handle(h).map(|(id, h)| (id, h.to_owned())))
            .collect();
        if handles.is_empty() {
            return Ok(());
        }
        self.db
            .run(Access::Write, move |tx| {
                {
                    let mut stmt =
                        tx.prepare_cached("DELETE FROM messages WHERE id = ?1 AND receipt = ?2")?;
                    for (id, h) in &handles {
                        stmt.execute(params![id, h])?;
                    }
                }
                Ok(())
            })
            .await
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> sealbox_core::Result<()> {
        let Some((id, h)) = parse_handle(receipt_handle) else {
            return Ok(());
        };
        let h = h.to_owned();
        self.db
            .run(Access::Write, move |conn| {
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?3 WHERE id = ?1 AND receipt = ?2",
                )?
                .execute(params![id, h, now_ms() + ms(timeout)])?;
                Ok(())
            })
            .await?;
        if timeout.is_zero() {
            self.notify.notify_waiters();
        }
        Ok(())
    }
}

#[async_trait]
impl QueueAdmin for SqliteQueue {
    async fn stats(&self) -> sealbox_core::Result<QueueStats> {
        let name = self.name.clone();
        self.db
            .run(Access::Read, move |conn| {
                let now = now_ms();
                let (visible, in_flight, delayed, oldest): (i64, i64, i64, Option<i64>) = conn
                    .query_row(
                        "SELECT
                           COALESCE(SUM(visible_at <= ?2), 0),
                           COALESCE(SUM(visible_at > ?2 AND receive_count > 0), 0),
                           COALESCE(SUM(visible_at > ?2 AND receive_count = 0), 0),
                           MIN(sent_at)
                         FROM messages WHERE queue = ?1",
                        params![&*name, now],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )?;
                Ok(QueueStats {
                    visible: visible as u64,
                    in_flight: in_flight as u64,
                    delayed: delayed as u64,
                    oldest_age: oldest.map(|t| Duration::from_millis((now - t).max(0) as u64)),
                })
            })
            .await
    }

    async fn list_dead(&self, max: usize) -> sealbox_core::Result<Vec<DeadLetter>> {
        let Some(policy) = self.redrive.clone() else {
            return Ok(Vec::new());
        };
        self.db
            .run(Access::Read, move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, body, receive_count, sent_at FROM messages
                     WHERE queue = ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = stmt
                    .query_map(params![policy.dead_letter_queue, max as i64], |r| {
                        Ok(DeadLetter {
                            message_id: r.get::<_, i64>(0)?.to_string(),
                            body: r.get(1)?,
                            receive_count: r.get(2)?,
                            sent_at: to_system_time(r.get(3)?),
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(rows)
            })
            .await
    }

    async fn redrive(&self, max: usize) -> sealbox_core::Result<u64> {
        let Some(policy) = self.redrive.clone() else {
            return Ok(0);
        };
        let name = self.name.clone();
        let moved = self
            .db
            .run(Access::Write, move |conn| {
                Ok(conn.execute(
                    "UPDATE messages SET queue = ?1, visible_at = ?3, receive_count = 0, receipt = NULL
                     WHERE id IN (SELECT id FROM messages WHERE queue = ?2 ORDER BY id LIMIT ?4)",
                    params![&*name, policy.dead_letter_queue, now_ms(), max as i64],
                )? as u64)
            })
            .await?;
        self.notify.notify_waiters();
        Ok(moved)
    }

    async fn dead_count(&self) -> sealbox_core::Result<u64> {
        let Some(policy) = self.redrive.clone() else {
            return Ok(0);
        };
        self.db
            .run(Access::Read, move |conn| {
                let n: Option<i64> = conn
                    .query_row(
                        "SELECT COUNT(*) FROM messages WHERE queue = ?1",
                        params![policy.dead_letter_queue],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(n.unwrap_or(0) as u64)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(max: usize, vis_ms: u64) -> ReceiveOptions {
        ReceiveOptions {
            max_messages: max,
            wait: Duration::ZERO,
            visibility_timeout: Duration::from_millis(vis_ms),
        }
    }

    fn db() -> (tempfile::TempDir, QueueDb) {
        let d = tempfile::tempdir().unwrap();
        let db = QueueDb::open(&d.path().join("q.db")).unwrap();
        (d, db)
    }

    #[tokio::test]
    async fn received_messages_are_invisible_until_the_timeout_then_come_back_counted() {
        let (_d, db) = db();
        let q = db.queue("jobs", None);
        q.send_batch(&[OutgoingMessage::new("a".into())])
            .await
            .unwrap();
        let first = q.receive(opts(10, 100)).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(q.receive(opts(10, 100)).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(150)).await;
        let again = q.receive(opts(10, 100)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].receive_count, 2);
        assert_ne!(again[0].receipt_handle, first[0].receipt_handle);
    }

    #[tokio::test]
    async fn a_stale_receipt_handle_deletes_nothing() {
        let (_d, db) = db();
        let q = db.queue("jobs", None);
        q.send_batch(&[OutgoingMessage::new("a".into())])
            .await
            .unwrap();
        let first = q.receive(opts(1, 0)).await.unwrap();
        let second = q.receive(opts(1, 10_000)).await.unwrap();
        q.delete_batch(&[first[0].receipt_handle.clone()])
            .await
            .unwrap();
        assert_eq!(q.stats().await.unwrap().in_flight, 1);
        q.delete_batch(&[second[0].receipt_handle.clone()])
            .await
            .unwrap();
        assert_eq!(q.stats().await.unwrap(), QueueStats::default());
    }

    #[tokio::test]
    async fn a_message_received_too_often_moves_to_the_dead_letter_queue_and_can_be_redriven() {
        let (_d, db) = db();
        let policy = RedrivePolicy {
            dead_letter_queue: "jobs-dlq".into(),
            max_receives: 2,
        };
        let q = db.queue("jobs", Some(policy));
        q.send_batch(&[OutgoingMessage::new("poison".into())])
            .await
            .unwrap();
        for _ in 0..2 {
            assert_eq!(q.receive(opts(1, 0)).await.unwrap().len(), 1);
        }
        assert!(q.receive(opts(1, 0)).await.unwrap().is_empty());
        assert_eq!(q.dead_count().await.unwrap(), 1);
        assert_eq!(q.list_dead(10).await.unwrap()[0].body, "poison");
        assert_eq!(q.redrive(10).await.unwrap(), 1);
        let back = q.receive(opts(1, 0)).await.unwrap();
        assert_eq!(back[0].receive_count, 1);
    }

    #[tokio::test]
    async fn delayed_messages_and_changed_visibility_are_honoured() {
        let (_d, db) = db();
        let q = db.queue("jobs", None);
        q.send_batch(&[OutgoingMessage {
            body: "later".into(),
            delay: Duration::from_secs(60),
            group: None,
        }])
        .await
        .unwrap();
        assert_eq!(q.stats().await.unwrap().delayed, 1);
        assert!(q.receive(opts(1, 0)).await.unwrap().is_empty());
        q.send_batch(&[OutgoingMessage::new("now".into())])
            .await
            .unwrap();
        let m = q.receive(opts(1, 60_000)).await.unwrap();
        q.change_visibility(&m[0].receipt_handle, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(q.receive(opts(1, 60_000)).await.unwrap()[0].body, "now");
    }

    #[tokio::test]
    async fn long_polling_wakes_when_a_message_is_sent() {
        let (_d, db) = db();
        let q = db.queue("jobs", None);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move {
            q2.receive(ReceiveOptions {
                max_messages: 1,
                wait: Duration::from_secs(10),
                visibility_timeout: Duration::from_secs(30),
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.send_batch(&[OutgoingMessage::new("x".into())])
            .await
            .unwrap();
        assert_eq!(waiter.await.unwrap().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn dedup_keys_send_once_across_reopen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("q.db");
        {
            let q = QueueDb::open(&path).unwrap().queue("events", None);
            assert_eq!(
                q.send_if_new(vec![("k".into(), OutgoingMessage::new("1".into()))])
                    .await
                    .unwrap(),
                1
            );
        }
        let q = QueueDb::open(&path).unwrap().queue("events", None);
        assert_eq!(
            q.send_if_new(vec![
                ("k".into(), OutgoingMessage::new("1".into())),
                ("j".into(), OutgoingMessage::new("2".into())),
            ])
            .await
            .unwrap(),
            1
        );
        assert_eq!(q.stats().await.unwrap().visible, 2);
    }

    /// The other writer of the receive test, committed by the receive's own busy handler: the
    /// handler runs only if the receive waits for the lock, which a deferred transaction
    /// upgraded from a read never does.
    static OTHER_WRITER: Mutex<Option<Connection>> = Mutex::new(None);

    fn commit_the_other_writer(_attempts: i32) -> bool {
        if let Ok(mut other) = OTHER_WRITER.lock()
            && let Some(c) = other.take()
        {
            c.execute_batch("COMMIT").unwrap();
        }
        true
    }

    /// The `jobs` queue of a database whose waits for the write lock call `on_busy`.
    async fn queue_calling_on_busy(path: &Path, on_busy: fn(i32) -> bool) -> SqliteQueue {
        let db = QueueDb::open(path).unwrap();
        db.run(Access::Read, move |conn| {
            conn.busy_handler(Some(on_busy))?;
            Ok(())
        })
        .await
        .unwrap();
        db.queue("jobs", None)
    }

    /// A second connection (another process, say) holding the write lock, mid-transaction.
    fn another_writer(path: &Path) -> Connection {
        let other = Connection::open(path).unwrap();
        other
            .execute_batch(
                "BEGIN IMMEDIATE;
                 INSERT INTO messages (queue, body, sent_at, visible_at) VALUES ('other', 'x', 0, 0);",
            )
            .unwrap();
        other
    }

    #[tokio::test]
    async fn a_receive_waits_for_a_concurrent_writer_instead_of_failing_busy() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("q.db");
        let q = queue_calling_on_busy(&path, commit_the_other_writer).await;
        q.send_batch(&[OutgoingMessage::new("a".into())])
            .await
            .unwrap();
        *OTHER_WRITER.lock().unwrap() = Some(another_writer(&path));
        let got = q.receive(opts(10, 30_000)).await;
        if let Some(c) = OTHER_WRITER.lock().unwrap().take() {
            c.execute_batch("COMMIT").unwrap();
        }
        let got = got.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "a");
        assert_eq!(q.stats().await.unwrap().in_flight, 1);
    }

    static WAITED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    fn note_the_wait(_attempts: i32) -> bool {
        WAITED.store(true, std::sync::atomic::Ordering::SeqCst);
        false
    }

    #[tokio::test]
    async fn an_empty_poll_waits_for_no_writer_of_another_process() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("q.db");
        let q = queue_calling_on_busy(&path, note_the_wait).await;
        // A receive that found a message, then one that found none: polls are reads again.
        q.send_batch(&[OutgoingMessage::new("a".into())])
            .await
            .unwrap();
        assert_eq!(q.receive(opts(10, 30_000)).await.unwrap().len(), 1);
        assert!(q.receive(opts(10, 30_000)).await.unwrap().is_empty());
        let other = another_writer(&path);
        let got = q.receive(opts(10, 30_000)).await;
        other.execute_batch("COMMIT").unwrap();
        assert!(got.unwrap().is_empty());
        assert!(
            !WAITED.load(std::sync::atomic::Ordering::SeqCst),
            "an empty poll asked for the write lock"
        );
    }

    #[test]
    fn two_connections_on_one_file_share_the_messages_without_busy_errors() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("q.db");
        let first = QueueDb::open(&path).unwrap();
        let second = QueueDb::open(&path).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for db in [&first, &second] {
            let timeout: i64 = rt
                .block_on(db.run(Access::Read, |c| {
                    Ok(c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?)
                }))
                .unwrap();
            assert_eq!(timeout, BUSY_TIMEOUT.as_millis() as i64);
        }
        const EACH: usize = 200;
        let start = Arc::new(std::sync::Barrier::new(2));
        let workers: Vec<_> = [first, second]
            .into_iter()
            .enumerate()
            .map(|(w, db)| {
                let start = start.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        let q = db.queue("jobs", None);
                        start.wait();
                        let mut got = Vec::new();
                        for i in 0..EACH {
                            q.send_batch(&[OutgoingMessage::new(format!("{w}-{i}"))])
                                .await
                                .unwrap();
                            for m in q.receive(opts(10, 60_000)).await.unwrap() {
                                q.delete_batch(&[m.receipt_handle]).await.unwrap();
                                got.push(m.body);
                            }
                        }
                        got
                    })
                })
            })
            .collect();
        let mut all: Vec<String> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        let reopened = QueueDb::open(&path).unwrap().queue("jobs", None);
        rt.block_on(async {
            loop {
                let rest = reopened.receive(opts(10, 60_000)).await.unwrap();
                if rest.is_empty() {
                    break;
                }
                all.extend(rest.into_iter().map(|m| m.body));
            }
        });
        let received = all.len();
        all.sort();
        all.dedup();
        assert_eq!(received, 2 * EACH, "a message was received twice");
        assert_eq!(all.len(), 2 * EACH);
    }

    async fn age_dedup_keys(db: &QueueDb, keys: &[&str], age: Duration) {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        db.run(Access::Write, move |conn| {
            for k in &keys {
                conn.execute(
                    "UPDATE dedup SET sent_at = ?2 WHERE key = ?1",
                    params![k, now_ms() - ms(age)],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    fn batch(keys: &[&str]) -> Vec<(String, OutgoingMessage)> {
        keys.iter()
            .map(|k| (k.to_string(), OutgoingMessage::new(k.to_string())))
            .collect()
    }

    #[tokio::test]
    async fn dedup_keys_a_complete_scan_did_not_see_again_are_forgotten_and_only_those() {
        let (_d, db) = db();
        let q = db.queue("events", None);
        let other = db.queue("other", None);
        assert_eq!(q.send_if_new(batch(&["gone", "kept"])).await.unwrap(), 2);
        other.send_if_new(batch(&["gone"])).await.unwrap();
        age_dedup_keys(&db, &["gone", "kept"], Duration::from_secs(3600)).await;
        // A scan begins and sees only "kept" again: nothing is sent, but it is remembered.
        let scan_began = SystemTime::now() - Duration::from_secs(1);
        assert_eq!(q.send_if_new(batch(&["kept"])).await.unwrap(), 0);
        assert_eq!(q.forget_unseen_since(scan_began).await.unwrap(), 1);
        assert_eq!(q.forget_unseen_since(scan_began).await.unwrap(), 0);
        // A forgotten key is new again; a kept one is not; another queue's keys are its own.
        assert_eq!(q.send_if_new(batch(&["gone", "kept"])).await.unwrap(), 1);
        assert_eq!(other.send_if_new(batch(&["gone"])).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn dedup_keys_are_forgotten_a_small_batch_per_transaction() {
        let (_d, db) = db();
        let q = db.queue("events", None);
        let keys: Vec<String> = (0..PRUNE_BATCH * 2 + 7).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        q.send_if_new(batch(&refs)).await.unwrap();
        let later = SystemTime::now() + Duration::from_secs(1);
        assert_eq!(
            q.forget_unseen_since(later).await.unwrap(),
            keys.len() as u64
        );
    }

    #[tokio::test]
    async fn a_dedup_table_from_before_last_seen_times_keeps_its_keys() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("q.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE dedup (queue TEXT NOT NULL, key TEXT NOT NULL,
                     PRIMARY KEY (queue, key)) WITHOUT ROWID;
                 INSERT INTO dedup (queue, key) VALUES ('events', 'k');",
            )
            .unwrap();
        }
        let db = QueueDb::open(&path).unwrap();
        let q = db.queue("events", None);
        assert_eq!(q.send_if_new(batch(&["k"])).await.unwrap(), 0);
        // Opening again finds the column and changes nothing.
        drop(db);
        let db = QueueDb::open(&path).unwrap();
        let q = db.queue("events", None);
        assert_eq!(q.send_if_new(batch(&["k"])).await.unwrap(), 0);
    }

    fn grouped(group: &str, n: usize) -> Vec<OutgoingMessage> {
        (0..n)
            .map(|i| OutgoingMessage::new(format!("{group}{i}")).in_group(group))
            .collect()
    }

    #[tokio::test]
    async fn a_receive_shares_out_the_waiting_messages_between_groups() {
        let (_d, db) = db();
        let q = db.queue("jobs", None);
        // Buyer a's burst first, then buyer b's three.
        q.send_batch(&grouped("a", 30)).await.unwrap();
        q.send_batch(&grouped("b", 3)).await.unwrap();
        let got = q.receive(opts(10, 60_000)).await.unwrap();
        let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(got.len(), 10);
        for b in ["b0", "b1", "b2"] {
            assert!(
                bodies.contains(&b),
                "b's messages wait behind a's burst: {bodies:?}"
            );
        }
        // Each group's own messages keep their order.
        let a: Vec<&str> = bodies
            .iter()
            .copied()
            .filter(|b| b.starts_with('a'))
            .collect();
        assert_eq!(a, ["a0", "a1", "a2", "a3", "a4", "a5", "a6"]);
    }

    #[tokio::test]
    async fn successive_receives_take_from_each_group_in_turn() {
        let (_d, db) = db();
        let q = db.queue("jobs", None);
        q.send_batch(&grouped("c", 3)).await.unwrap();
        q.send_batch(&grouped("a", 3)).await.unwrap();
        q.send_batch(&grouped("b", 3)).await.unwrap();
        let mut order = Vec::new();
        for _ in 0..9 {
            let got = q.receive(opts(1, 60_000)).await.unwrap();
            order.push(got[0].body.clone());
        }
        assert_eq!(
            order,
            ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"],
            "one of each group with messages waiting, in turn"
        );
    }

    #[tokio::test]
    async fn a_group_whose_messages_are_all_in_flight_does_not_hold_up_a_receive() {
        let (_d, db) = db();
        let q = db.queue("jobs", None);
        q.send_batch(&grouped("a", 2)).await.unwrap();
        let held = q.receive(opts(10, 60_000)).await.unwrap();
        assert_eq!(held.len(), 2);
        q.send_batch(&grouped("b", 12)).await.unwrap();
        let got = q.receive(opts(10, 60_000)).await.unwrap();
        assert_eq!(
            got.len(),
            10,
            "b alone has messages waiting: a full batch of b's"
        );
        assert!(got.iter().all(|m| m.body.starts_with('b')));
    }

    #[tokio::test]
    async fn a_queue_database_from_before_groups_keeps_its_messages() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("q.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE messages (
                     id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
                     body TEXT NOT NULL, sent_at INTEGER NOT NULL, visible_at INTEGER NOT NULL,
                     receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT);
                 INSERT INTO messages (queue, body, sent_at, visible_at) VALUES ('jobs', 'old', 0, 0);",
            )
            .unwrap();
        }
        let db = QueueDb::open(&path).unwrap();
        let q = db.queue("jobs", None);
        q.send_batch(&grouped("b", 1)).await.unwrap();
        let got = q.receive(opts(10, 60_000)).await.unwrap();
        let mut bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        bodies.sort();
        assert_eq!(bodies, ["b0", "old"]);
    }
}
