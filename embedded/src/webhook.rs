//! Webhook delivery of notifications, at least once: an HTTP POST of each line of the event log.
//!
//! The event log (`events.ndjson`) is the durable record; the webhook follows it. Its cursor
//! file (`DATA/webhook.cursor`) holds the byte offset of the first line not known to be
//! delivered. The cursor moves only past a contiguous run of delivered lines and is replaced
//! atomically (temporary file, fsync, rename) a few times a second, so after a crash the next
//! webhook resumes from it: a line is delivered at least once, and a few may be delivered twice
//! (receivers deduplicate by the `X-Sealbox-Event-Id` header, stable per outcome).
//!
//! Up to [`WebhookConfig::max_in_flight`] lines are in flight at once, each POST bounded by
//! [`WebhookConfig::timeout`] and retried with jittered exponential backoff: one slow or hung
//! request holds one slot while the others keep delivering. The lines read past the cursor are
//! bounded by [`WebhookConfig::max_window`]; past that the webhook waits, and reads the rest
//! from the file later. So a receiver that keeps failing never blocks the pipeline (publishing
//! only appends to the file) and never grows memory: the webhook just falls behind the log.
//!
//! Like SNS over HTTP: a 2xx answer delivers; a 4xx other than 408 and 429 refuses this very
//! notification for good, so it is logged and skipped (it stays in the event log); anything else
//! (no connection, timeout, 408, 429, 5xx) is retried until the receiver takes it.
//!
//! Without a cursor file (the first start with a webhook) delivery starts at the current end of
//! the log, and the cursor is written at once. A cursor that cannot be trusted (unreadable, past
//! the end of the log, not at a line boundary) restarts delivery from the start of the log: a
//! duplicate is harmless, a lost notification is not.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::event_log::EventLog;
use sealbox_core::{Error, Result};

/// How often the cursor file is brought up to date while lines are being delivered.
const SAVE_EVERY: Duration = Duration::from_millis(250);

/// Header carrying the notification's event id.
pub const EVENT_ID_HEADER: &str = "X-Sealbox-Event-Id";

/// Settings of a webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where notifications are POSTed (http or https).
    pub url: String,
    /// The cursor file.
    pub cursor: PathBuf,
    /// POSTs in flight at once.
    pub max_in_flight: usize,
    /// Lines read past the cursor at most (delivered or not): bounds memory while one line is
    /// stuck.
    pub max_window: usize,
    /// Longest one POST may take, connection included.
    pub timeout: Duration,
    /// First delay before retrying a POST.
    pub retry_min: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
}

impl WebhookConfig {
    /// Defaults: 8 in flight, 4096 lines of window, 10 s per POST, retries from 200 ms to 30 s.
    pub fn new(url: impl Into<String>, cursor: impl Into<PathBuf>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            cursor: cursor.into(),
            max_in_flight: 8,
            max_window: 4096,
            timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// A running webhook; dropping it stops delivery (the cursor is saved on the way out).
pub struct Webhook {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    delivered: watch::Receiver<u64>,
}

impl Webhook {
    /// Starts delivering the lines of `log` from the cursor to `config.url`. Fails at once on a
    /// URL that is not http(s) with a host, an HTTP client that cannot be built, or a cursor
    /// file that cannot be read or created.
    pub fn start(config: WebhookConfig, log: &EventLog) -> Result<Webhook> {
        let url = parse_url(&config.url)?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| Error::Notify(format!("building the webhook HTTP client: {e}")))?;
        let committed = log.committed();
        let start = load_cursor(&config.cursor, log.path(), *committed.borrow())?;
        let mut file = File::open(log.path())
            .map_err(|e| Error::io(format!("opening {}", log.path().display()), e))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))
            .map_err(|e| Error::io(format!("reading {}", log.path().display()), e))?;
        let (delivered_tx, delivered) = watch::channel(start);
        let (stop, stopped) = oneshot::channel();
        let follower = Follower {
            client,
            url,
            retry: ExponentialBuilder::default()
                .with_min_delay(config.retry_min)
                .with_max_delay(config.retry_max)
                .with_jitter()
                .without_max_times(),
            reader: BufReader::with_capacity(64 * 1024, tokio::fs::File::from_std(file)),
            line: Vec::new(),
            read_pos: start,
            cursor: start,
            saved: start,
            window: VecDeque::new(),
            first_seq: 0,
            delivered: delivered_tx,
            config,
        };
        let task = tokio::spawn(follower.run(committed, stopped));
        Ok(Webhook {
            stop: Some(stop),
            task: Some(task),
            delivered,
        })
    }

    /// The cursor: every line before this offset of the log is delivered (or refused for good).
    pub fn delivered(&self) -> watch::Receiver<u64> {
        self.delivered.clone()
    }

    /// Stops delivering, saves the cursor and waits for that.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops the way a crash would: no last save of the cursor.
    #[cfg(test)]
    async fn crash(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn parse_url(url: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::Notify(format!("webhook URL {url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::Notify(format!(
            "webhook URL {url:?} is not an http:// or https:// URL with a host"
        )));
    }
    Ok(parsed)
}

/// Where delivery starts: the saved cursor, the end of the log without one (saved at once), or
/// the start of the log if the cursor cannot be trusted.
fn load_cursor(cursor: &Path, log: &Path, end: u64) -> Result<u64> {
    let text = match std::fs::read_to_string(cursor) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            save_cursor(cursor, end)?;
            return Ok(end);
        }
        Err(e) => return Err(Error::io(format!("reading {}", cursor.display()), e)),
    };
    let offset = match text.trim().parse::<u64>() {
        Ok(o) => o,
        Err(_) => {
            tracing::error!(cursor = %cursor.display(), "unreadable webhook cursor; delivering the event log from its start");
            return Ok(0);
        }
    };
    if offset == 0 {
        return Ok(0);
    }
    let file = File::open(log).map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
    let mut before = [0u8; 1];
    let at_line_start =
        offset <= end && file.read_exact_at(&mut before, offset - 1).is_ok() && before[0] == b'\n';
    if !at_line_start {
        tracing::error!(cursor = %cursor.display(), offset, end, "the webhook cursor is not at a line of the event log; delivering it from its start");
        return Ok(0);
    }
    Ok(offset)
}

/// Names of temporary cursor files: unique in this process, and the process id sets processes
/// apart.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Replaces the cursor file atomically: a crash leaves the old cursor or the new one.
fn save_cursor(cursor: &Path, offset: u64) -> Result<()> {
    let name = cursor
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("webhook.cursor");
    let temp = cursor.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = File::create(&temp)
        .and_then(|mut f| {
            f.write_all(format!("{offset}\n").as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, cursor));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::io(format!("saving {}", cursor.display()), e)
    })
}

/// One line read past the cursor.
struct Slot {
    /// Offset just past the line.
    end: u64,
    /// Delivered, refused for good, or not a notification.
    done: bool,
}

/// Why one POST did not deliver.
#[derive(Debug)]
enum Failure {
    Transport(reqwest::Error),
    Status(reqwest::StatusCode),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            // A request that cannot even be built will not be built next time either.
            Failure::Transport(e) => !e.is_builder(),
            Failure::Status(s) => {
                !s.is_client_error()
                    || *s == reqwest::StatusCode::REQUEST_TIMEOUT
                    || *s == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(e) => write!(f, "{e}"),
            Failure::Status(s) => write!(f, "answered {s}"),
        }
    }
}

/// The delivery task's state.
struct Follower {
    config: WebhookConfig,
    client: reqwest::Client,
    url: reqwest::Url,
    retry: ExponentialBuilder,
    reader: BufReader<tokio::fs::File>,
    /// The line being read (a part, until its newline is read).
    line: Vec<u8>,
    /// Offset just past the last whole line read.
    read_pos: u64,
    /// Offset of the first line not done.
    cursor: u64,
    /// The cursor as last saved.
    saved: u64,
    /// Lines from the cursor to `read_pos`, in order.
    window: VecDeque<Slot>,
    /// Sequence number of the window's first line.
    first_seq: u64,
    delivered: watch::Sender<u64>,
}

impl Follower {
    async fn run(mut self, mut committed: watch::Receiver<u64>, mut stop: oneshot::Receiver<()>) {
        let mut in_flight: JoinSet<u64> = JoinSet::new();
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut log_open = true;
        loop {
            let limit = *committed.borrow_and_update();
            self.read_and_send(&mut in_flight, limit).await;
            self.advance();
            tokio::select! {
                _ = &mut stop => break,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => match done {
                    Ok(seq) => self.finish(seq),
                    Err(e) => {
                        // A delivery task panicked: its line is left undone, so the cursor stays
                        // behind it and the next start delivers it again.
                        tracing::error!(error = %e, "a webhook delivery failed unexpectedly");
                    }
                },
                changed = committed.changed(), if log_open => {
                    if changed.is_err() {
                        log_open = false;
                    }
                }
                _ = tick.tick() => self.save().await,
            }
        }
        // In-flight deliveries stop here; their lines lie past the cursor and go again next time.
        in_flight.abort_all();
        self.advance();
        self.save().await;
    }

    /// Reads whole lines below `limit` and sends them while slots and window allow.
    async fn read_and_send(&mut self, in_flight: &mut JoinSet<u64>, limit: u64) {
        while in_flight.len() < self.config.max_in_flight.max(1)
            && self.window.len() < self.config.max_window.max(1)
            && self.read_pos < limit
        {
            match self.reader.read_until(b'\n', &mut self.line).await {
                Ok(_) if self.line.last() == Some(&b'\n') => {}
                // End of the file before `limit` (the log was cut short): look again later.
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(error = %e, "reading the event log for the webhook failed");
                    // Read again from a known place next time.
                    self.line.clear();
                    if let Err(e) = self
                        .reader
                        .seek(std::io::SeekFrom::Start(self.read_pos))
                        .await
                    {
                        tracing::error!(error = %e, "seeking in the event log failed");
                    }
                    return;
                }
            }
            let line = Bytes::from(std::mem::take(&mut self.line));
            let start = self.read_pos;
            self.read_pos += line.len() as u64;
            let seq = self.first_seq + self.window.len() as u64;
            let body = line.slice(..line.len() - 1);
            let event_id = match event_id_of(&body) {
                Ok(id) => id,
                Err(skip) => {
                    if let Some(why) = skip {
                        tracing::warn!(
                            offset = start,
                            error = why,
                            "skipping a line of the event log that is not a notification"
                        );
                    }
                    self.window.push_back(Slot {
                        end: self.read_pos,
                        done: true,
                    });
                    continue;
                }
            };
            self.window.push_back(Slot {
                end: self.read_pos,
                done: false,
            });
            let (client, url, retry) = (self.client.clone(), self.url.clone(), self.retry);
            in_flight.spawn(async move {
                deliver(client, url, retry, body, event_id, start).await;
                seq
            });
        }
    }

    fn finish(&mut self, seq: u64) {
        let Some(i) = seq.checked_sub(self.first_seq) else {
            return;
        };
        if let Some(slot) = self.window.get_mut(i as usize) {
            slot.done = true;
        }
    }

    /// Moves the cursor past the done lines at the front of the window.
    fn advance(&mut self) {
        while let Some(slot) = self.window.front()
            && slot.done
        {
            self.cursor = slot.end;
            self.window.pop_front();
            self.first_seq += 1;
        }
        self.delivered.send_if_modified(|c| {
            let moved = *c != self.cursor;
            *c = self.cursor;
            moved
        });
    }

    async fn save(&mut self) {
        if self.cursor == self.saved {
            return;
        }
        let (path, offset) = (self.config.cursor.clone(), self.cursor);
        match tokio::task::spawn_blocking(move || save_cursor(&path, offset)).await {
            Ok(Ok(())) => self.saved = offset,
            Ok(Err(e)) => tracing::warn!(error = %e, "saving the webhook cursor failed"),
            Err(e) => tracing::warn!(error = %e, "saving the webhook cursor failed"),
        }
    }
}

/// The event id of a line, `Err(None)` for a blank line, `Err(Some(why))` for one that is not a
/// notification.
fn event_id_of(body: &[u8]) -> std::result::Result<Option<HeaderValue>, Option<String>> {
    #[derive(serde::Deserialize)]
    struct Head {
        event_id: String,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(None);
    }
    let head: Head = serde_json::from_slice(body).map_err(|e| Some(e.to_string()))?;
    // An id that cannot be a header value still deserves its delivery, without the header.
    Ok(HeaderValue::from_str(&head.event_id).ok())
}

/// POSTs one line until it is delivered or refused for good.
async fn deliver(
    client: reqwest::Client,
    url: reqwest::Url,
    retry: ExponentialBuilder,
    body: Bytes,
    event_id: Option<HeaderValue>,
    offset: u64,
) {
    let post = || async {
        let mut request = client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(id) = &event_id {
            request = request.header(EVENT_ID_HEADER, id.clone());
        }
        let response = request.send().await.map_err(Failure::Transport)?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(Failure::Status(s)),
        }
    };
    let result = post
        .retry(retry)
        .when(Failure::retryable)
        .notify(|e, wait| {
            tracing::warn!(offset, event_id = ?event_id, error = %e, retry_in = ?wait, "webhook delivery failed; retrying");
        })
        .await;
    if let Err(e) = result {
        // Refused for good: the event log still holds it.
        tracing::error!(offset, event_id = ?event_id, error = %e, "webhook refused a notification; skipping it");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use axum::http::{HeaderMap, StatusCode};
    use tokio::sync::{Mutex, Notify, mpsc};

    use super::*;
    use sealbox_core::contract::Notification;
    use sealbox_core::ports::notifier::Notifier;

    /// A watchdog so a broken build fails instead of hanging; passing runs never get near it.
    const WATCHDOG: Duration = Duration::from_secs(30);

    fn note(request_id: &str) -> Notification {
        sealbox_core::conformance::test_notification(request_id)
    }

    type Answered = std::pin::Pin<Box<dyn std::future::Future<Output = StatusCode> + Send>>;
    /// What a test receiver does with one notification.
    type Answer = Arc<dyn Fn(Notification) -> Answered + Send + Sync>;

    fn answer<F, Fut>(f: F) -> Answer
    where
        F: Fn(Notification) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = StatusCode> + Send + 'static,
    {
        Arc::new(move |n| Box::pin(f(n)) as Answered)
    }

    /// Serves `respond` on 127.0.0.1; every notification it answers 2xx is sent to the channel
    /// with its event-id header.
    async fn receiver(
        respond: Answer,
    ) -> (String, mpsc::UnboundedReceiver<(String, Notification)>) {
        let (got_tx, got) = mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: HeaderMap, axum::Json(n): axum::Json<Notification>| {
                    let (respond, got_tx) = (respond.clone(), got_tx.clone());
                    async move {
                        let status = respond(n.clone()).await;
                        if status.is_success() {
                            let id = headers
                                .get(EVENT_ID_HEADER)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let _ = got_tx.send((id, n));
                        }
                        status
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/hook"), got)
    }

    fn fast(url: &str, cursor: &Path) -> WebhookConfig {
        WebhookConfig {
            retry_min: Duration::from_millis(5),
            retry_max: Duration::from_millis(20),
            ..WebhookConfig::new(url, cursor)
        }
    }

    async fn wait_cursor(hook: &Webhook, at: u64) {
        let mut delivered = hook.delivered();
        tokio::time::timeout(WATCHDOG, delivered.wait_for(|c| *c == at))
            .await
            .unwrap()
            .unwrap();
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[tokio::test]
    async fn a_failing_receiver_is_retried_until_it_accepts_the_notification() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let (url, mut got) = receiver(answer(move |_| {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }))
        .await;
        let d = tempfile::tempdir().unwrap();
        let log = EventLog::open(&d.path().join("events.ndjson"), false).unwrap();
        let hook = Webhook::start(fast(&url, &d.path().join("webhook.cursor")), &log).unwrap();
        let log = log.with_webhook(hook);
        let n = note("r");
        log.publish(&n).await.unwrap();
        let (id, delivered) = tokio::time::timeout(WATCHDOG, got.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(id, n.event_id);
        assert_eq!(delivered, n);
    }

    #[tokio::test]
    async fn a_hung_receiver_holds_one_slot_while_the_other_notifications_are_delivered() {
        let arrived = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (a, r) = (arrived.clone(), release.clone());
        let (url, mut got) = receiver(answer(move |n: Notification| {
            let (a, r) = (a.clone(), r.clone());
            async move {
                if n.request_id == "r0" {
                    a.notify_one();
                    r.notified().await;
                }
                StatusCode::OK
            }
        }))
        .await;
        let d = tempfile::tempdir().unwrap();
        let events = d.path().join("events.ndjson");
        let log = EventLog::open(&events, false).unwrap();
        let mut config = fast(&url, &d.path().join("webhook.cursor"));
        config.max_in_flight = 2;
        // Long enough that no timeout frees the hung slot during the test.
        config.timeout = Duration::from_secs(600);
        let hook = Webhook::start(config, &log).unwrap();
        for i in 0..12 {
            log.publish(&note(&format!("r{i}"))).await.unwrap();
        }
        tokio::time::timeout(WATCHDOG, arrived.notified())
            .await
            .unwrap();
        let mut others = BTreeSet::new();
        while others.len() < 11 {
            let (_, n) = tokio::time::timeout(WATCHDOG, got.recv())
                .await
                .unwrap()
                .unwrap();
            assert_ne!(n.request_id, "r0", "the hung request answered early");
            others.insert(n.request_id);
        }
        // Eleven delivered past a bound of two in flight, while r0 still hangs; the cursor
        // cannot pass r0.
        assert_eq!(*hook.delivered().borrow(), 0);
        release.notify_one();
        wait_cursor(&hook, file_len(&events)).await;
        hook.stop().await;
        let saved = std::fs::read_to_string(d.path().join("webhook.cursor")).unwrap();
        assert_eq!(saved.trim(), file_len(&events).to_string());
    }

    #[tokio::test]
    async fn after_a_crash_the_next_webhook_delivers_the_lines_the_first_did_not() {
        // The first receiver takes r0..r2 and hangs on everything else.
        let (url1, mut got1) = receiver(answer(|n: Notification| async move {
            if !["r0", "r1", "r2"].contains(&n.request_id.as_str()) {
                std::future::pending::<()>().await;
            }
            StatusCode::OK
        }))
        .await;
        let (url2, mut got2) = receiver(answer(|_| async { StatusCode::ACCEPTED })).await;
        let d = tempfile::tempdir().unwrap();
        let events = d.path().join("events.ndjson");
        let cursor = d.path().join("webhook.cursor");
        let log = EventLog::open(&events, true).unwrap();
        let hook = Webhook::start(fast(&url1, &cursor), &log).unwrap();
        let mut ends = Vec::new();
        for i in 0..10 {
            log.publish(&note(&format!("r{i}"))).await.unwrap();
            ends.push(file_len(&events));
        }
        for _ in 0..3 {
            tokio::time::timeout(WATCHDOG, got1.recv())
                .await
                .unwrap()
                .unwrap();
        }
        wait_cursor(&hook, ends[2]).await;
        hook.crash().await;
        drop(log);

        // Restart: a new log and webhook on the same files.
        let log = EventLog::open(&events, true).unwrap();
        let hook = Webhook::start(fast(&url2, &cursor), &log).unwrap();
        let mut seen = BTreeSet::new();
        let want: BTreeSet<String> = (3..10).map(|i| format!("r{i}")).collect();
        while !want.is_subset(&seen) {
            let (id, n) = tokio::time::timeout(WATCHDOG, got2.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(id, n.event_id);
            seen.insert(n.request_id);
        }
        wait_cursor(&hook, file_len(&events)).await;
        hook.stop().await;
    }

    #[tokio::test]
    async fn a_notification_refused_with_4xx_is_skipped_and_the_rest_are_delivered() {
        let calls = Arc::new(Mutex::new(Vec::<String>::new()));
        let c = calls.clone();
        let (url, mut got) = receiver(answer(move |n: Notification| {
            let c = c.clone();
            async move {
                c.lock().await.push(n.request_id.clone());
                if n.request_id == "bad" {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::OK
                }
            }
        }))
        .await;
        let d = tempfile::tempdir().unwrap();
        let events = d.path().join("events.ndjson");
        let log = EventLog::open(&events, false).unwrap();
        let hook = Webhook::start(fast(&url, &d.path().join("webhook.cursor")), &log).unwrap();
        for id in ["bad", "good"] {
            log.publish(&note(id)).await.unwrap();
        }
        let (_, n) = tokio::time::timeout(WATCHDOG, got.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n.request_id, "good");
        wait_cursor(&hook, file_len(&events)).await;
        assert_eq!(
            calls
                .lock()
                .await
                .iter()
                .filter(|id| id.as_str() == "bad")
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn a_first_webhook_starts_at_the_end_of_the_log_and_records_its_cursor_at_once() {
        let (url, mut got) = receiver(answer(|_| async { StatusCode::OK })).await;
        let d = tempfile::tempdir().unwrap();
        let events = d.path().join("events.ndjson");
        let cursor = d.path().join("webhook.cursor");
        let log = EventLog::open(&events, false).unwrap();
        log.publish(&note("before")).await.unwrap();
        let hook = Webhook::start(fast(&url, &cursor), &log).unwrap();
        let start = file_len(&events);
        assert_eq!(
            std::fs::read_to_string(&cursor).unwrap().trim(),
            start.to_string()
        );
        log.publish(&note("after")).await.unwrap();
        let (_, n) = tokio::time::timeout(WATCHDOG, got.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n.request_id, "after");
        wait_cursor(&hook, file_len(&events)).await;
    }

    #[tokio::test]
    async fn a_cursor_that_cannot_be_trusted_redelivers_from_the_start_of_the_log() {
        let (url, mut got) = receiver(answer(|_| async { StatusCode::OK })).await;
        let d = tempfile::tempdir().unwrap();
        let events = d.path().join("events.ndjson");
        let cursor = d.path().join("webhook.cursor");
        let log = EventLog::open(&events, false).unwrap();
        log.publish(&note("r0")).await.unwrap();
        log.publish(&note("r1")).await.unwrap();
        for bad in ["5\n", "999999\n", "garbage"] {
            std::fs::write(&cursor, bad).unwrap();
            let hook = Webhook::start(fast(&url, &cursor), &log).unwrap();
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (_, n) = tokio::time::timeout(WATCHDOG, got.recv())
                    .await
                    .unwrap()
                    .unwrap();
                seen.push(n.request_id);
            }
            seen.sort();
            assert_eq!(seen, ["r0", "r1"], "cursor {bad:?}");
            wait_cursor(&hook, file_len(&events)).await;
            hook.stop().await;
        }
    }

    #[test]
    fn webhook_urls_must_be_http_or_https_with_a_host() {
        for bad in [
            "notaurl",
            "ftp://host/x",
            "http://",
            "file:///tmp/x",
            "mailto:a@b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        for good in ["http://127.0.0.1:9/hook", "https://example.com/"] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
    }
}
