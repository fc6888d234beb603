//! The queue database's own thread. Operations wait in a channel and run a batch at a time, in
//! one transaction, each writer inside a savepoint of its own: callers that arrive together share
//! one commit (one WAL write) and one hand-off to the thread, instead of a blocking-pool task and
//! a transaction each. Under load the thread rarely sleeps, so a hand-off is a channel push.
//!
//! An operation that fails rolls back to its savepoint (alone in its batch, the transaction) and
//! answers its own error; the others in the batch are unaffected. Nobody is answered before the
//! commit: if it fails, every operation of the batch answers that failure, and none of their
//! changes exist.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use sealbox_core::Error;

use super::{DbError, Result};

/// The most operations one transaction holds: bounds the time the first of them waits.
const MAX_BATCH: usize = 64;

/// The handle to the thread that owns the connection; the thread ends when the last handle goes.
#[derive(Debug)]
pub(super) struct DbThread {
    ops: mpsc::Sender<Box<dyn Op>>,
}

/// Whether an operation writes: a batch with a writer begins `IMMEDIATE`, taking the write lock
/// first (another process on the file makes it wait, up to the busy timeout, instead of failing
/// with `SQLITE_BUSY` as a read upgraded to a write would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

impl DbThread {
    /// Starts the thread that owns `conn`.
    pub(super) fn start(conn: Connection) -> std::io::Result<DbThread> {
        let (ops, inbox) = mpsc::channel::<Box<dyn Op>>();
        std::thread::Builder::new()
            .name("sqlite-queue".into())
            .spawn(move || serve(&conn, &inbox))?;
        Ok(DbThread { ops })
    }

    /// Runs `f` on the thread, in the transaction of the batch it joins, and answers once that
    /// batch has committed.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        access: Access,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let op = Box::new(Call {
            f: Some(f),
            result: None,
            reply,
            access,
        });
        self.ops.send(op).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> DbError {
    DbError::Port(Error::Task(
        "the queue database's thread has stopped".into(),
    ))
}

/// An operation waiting for the thread.
trait Op: Send {
    fn access(&self) -> Access;
    /// Runs the operation; false if it failed (its changes are then rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: its own result if the batch committed, else the commit's failure.
    fn answer(self: Box<Self>, commit: std::result::Result<(), &rusqlite::Error>);
}

struct Call<T, F> {
    f: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
    access: Access,
}

impl<T, F> Op for Call<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn access(&self) -> Access {
        self.access
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        // A panic fails this operation, not the thread that every queue of the file needs.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
            Err(DbError::Port(Error::Task(
                "a queue database operation panicked".into(),
            )))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit: std::result::Result<(), &rusqlite::Error>) {
        let result = match (self.result, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (Some(Ok(_)), Err(e)) => Err(DbError::Port(Error::storage(
                "queue database: committing",
                e.to_string(),
            ))),
            (None, Err(e)) => Err(DbError::Port(Error::storage(
                "queue database: the transaction was aborted",
                e.to_string(),
            ))),
            (None, Ok(())) => Err(stopped()),
        };
        // The caller may have gone (a cancelled receive): its answer has no one to read it.
        let _ = self.reply.send(result);
    }
}

fn serve(conn: &Connection, inbox: &mpsc::Receiver<Box<dyn Op>>) {
    let mut batch: Vec<Box<dyn Op>> = Vec::with_capacity(MAX_BATCH);
    let (mut ops, mut transactions) = (0u64, 0u64);
    while let Ok(first) = inbox.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        ops += batch.len() as u64;
        transactions += 1;
        let outcome = run_batch(conn, &mut batch);
        for op in batch.drain(..) {
            op.answer(outcome.as_ref().map(|_| ()));
        }
    }
    tracing::debug!(ops, transactions, "queue database closed");
}

/// Runs every operation of `batch` in one transaction and commits it.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn Op>]) -> rusqlite::Result<()> {
    let writes = batch.iter().any(|op| op.access() == Access::Write);
    if !conn.is_autocommit() {
        // A transaction an earlier batch could not roll back: every BEGIN would fail on it.
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "queue database: cannot roll back an earlier transaction");
        }
    }
    conn.prepare_cached(if writes { "BEGIN IMMEDIATE" } else { "BEGIN" })?
        .execute([])?;
    // A savepoint lets a writer that fails roll back alone. A reader has nothing to roll back,
    // and a writer alone in its batch rolls back the whole transaction instead: a savepoint
    // costs three statements and a copy of every page the operation changes.
    let alone = batch.len() == 1;
    let mut run = || -> rusqlite::Result<()> {
        let mut keep = true;
        for op in batch.iter_mut() {
            let savepoint = !alone && op.access() == Access::Write;
            if savepoint {
                conn.prepare_cached("SAVEPOINT op")?.execute([])?;
            }
            let ok = op.run(conn);
            if savepoint {
                if !ok {
                    conn.prepare_cached("ROLLBACK TO op")?.execute([])?;
                }
                conn.prepare_cached("RELEASE op")?.execute([])?;
            } else if !ok && op.access() == Access::Write {
                keep = false;
            }
        }
        conn.prepare_cached(if keep { "COMMIT" } else { "ROLLBACK" })?
            .execute([])?;
        Ok(())
    };
    let done = run();
    if done.is_err()
        && !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %e, "queue database: cannot roll back a failed transaction");
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, DbThread) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)")
            .unwrap();
        (dir, DbThread::start(conn).unwrap())
    }

    async fn count(db: &DbThread) -> i64 {
        db.call(Access::Read, |c| {
            Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_failing_operation_rolls_back_only_itself_in_a_shared_batch() {
        let (_d, db) = db();
        let db = std::sync::Arc::new(db);
        // The thread is held by a first operation until the others are all waiting, so they
        // run in full batches; every odd one inserts, then fails.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let db = db.clone();
            async move {
                db.call(Access::Read, move |_| Ok(held.recv().is_ok()))
                    .await
            }
        });
        tokio::task::yield_now().await;
        let calls: Vec<_> = (0..200i64)
            .map(|v| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.call(Access::Write, move |c| {
                        c.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                        if v % 2 == 1 {
                            c.execute("INSERT INTO t (v) VALUES (?1)", [v - 1])?;
                        }
                        Ok(v)
                    })
                    .await
                })
            })
            .collect();
        // A current-thread runtime polls every spawned call (each sends its operation) first.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        release.send(()).unwrap();
        assert!(blocker.await.unwrap().unwrap());
        for (v, call) in calls.into_iter().enumerate() {
            let r = call.await.unwrap();
            assert_eq!(r.is_ok(), v % 2 == 0, "operation {v}: {r:?}");
        }
        assert_eq!(count(&db).await, 100);
    }

    #[tokio::test]
    async fn a_panicking_operation_answers_an_error_and_the_thread_goes_on() {
        let (_d, db) = db();
        let panicked = db
            .call(Access::Write, |c| -> Result<()> {
                c.execute("INSERT INTO t (v) VALUES (1)", [])?;
                panic!("a bug in an operation")
            })
            .await;
        assert!(
            matches!(panicked, Err(DbError::Port(Error::Task(ref m))) if m.contains("panicked")),
            "{panicked:?}"
        );
        assert_eq!(count(&db).await, 0);
        db.call(Access::Write, |c| {
            Ok(c.execute("INSERT INTO t (v) VALUES (2)", [])?)
        })
        .await
        .unwrap();
        assert_eq!(count(&db).await, 1);
    }
}
