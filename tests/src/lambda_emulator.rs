//! A small, real AWS Lambda Runtime API (2018-06-01) emulator: runs a function binary built with
//! `lambda_runtime` as a child process and invokes it one event at a time, like one Lambda instance.
//!
//! Behaviour follows Lambda where a test can see it: the deadline header is the dispatch time plus
//! the function timeout; a timed-out, crashed or init-failed instance is killed and the next
//! [`LambdaEmulator::invoke`] starts a fresh one (a new cold start); request and response payloads
//! are limited to 6 MiB; the child gets a clean environment with Lambda's standard variables.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Lambda's limit on a synchronous invocation's request and response payloads (6 MiB).
pub const PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

/// How long a new instance may take to make its first `/next` call (Lambda's init limit).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The account id in the emulated function's ARN.
const ACCOUNT_ID: &str = "123456789012";

/// Why an invocation produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeError {
    /// The function reported an error on `/invocation/{id}/error` (or its response was too large).
    Function {
        /// `errorType` as reported by the runtime.
        error_type: String,
        /// `errorMessage` as reported by the runtime.
        error_message: String,
    },
    /// The runtime reported an error on `/runtime/init/error`; the instance was discarded.
    Init {
        /// `errorType` as reported by the runtime.
        error_type: String,
        /// `errorMessage` as reported by the runtime.
        error_message: String,
    },
    /// No response before the deadline; the instance was killed, as Lambda does.
    TimedOut {
        /// The function timeout that ran out.
        after: Duration,
    },
    /// A new instance made no `/next` call within [`INIT_TIMEOUT`]; it was killed.
    InitTimedOut {
        /// The init limit that ran out.
        after: Duration,
    },
    /// The runtime process exited before it responded.
    Exited {
        /// `exit code N`, `signal N`, or `unknown`.
        status: String,
    },
    /// The response body is not JSON.
    InvalidResponse {
        /// The JSON parser's message.
        message: String,
    },
    /// The emulator could not run the invocation (spawn failure, request over 6 MiB, ...).
    Emulator(String),
}

impl fmt::Display for InvokeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Function {
                error_type,
                error_message,
            } => write!(f, "function error {error_type}: {error_message}"),
            Self::Init {
                error_type,
                error_message,
            } => write!(f, "init error {error_type}: {error_message}"),
            Self::TimedOut { after } => write!(f, "timed out after {after:?}"),
            Self::InitTimedOut { after } => {
                write!(f, "init timed out: no /next call within {after:?}")
            }
            Self::Exited { status } => write!(f, "runtime exited with status {status}"),
            Self::InvalidResponse { message } => write!(f, "response is not JSON: {message}"),
            Self::Emulator(message) => write!(f, "lambda emulator: {message}"),
        }
    }
}

impl std::error::Error for InvokeError {}

/// A Lambda function binary running under an emulated Runtime API, one invocation at a time.
pub struct LambdaEmulator {
    function: Arc<Function>,
    logs: Arc<Logs>,
    instance: Mutex<Option<Instance>>,
    /// Held for a whole invocation (and while starting an instance): one invocation at a time.
    invoke_lock: tokio::sync::Mutex<()>,
    instances_started: AtomicU64,
}

/// What every instance of the function is started with.
struct Function {
    binary: PathBuf,
    /// The child's whole environment, except `AWS_LAMBDA_RUNTIME_API`.
    env: Vec<(String, String)>,
    timeout: Duration,
    name: String,
    arn: String,
}

/// One running process of the function and the Runtime API server it talks to.
struct Instance {
    api: Arc<Api>,
    queue: mpsc::Sender<Pending>,
    pid: Option<u32>,
    exit: watch::Receiver<Option<String>>,
    /// Dropping it kills the child (the waiter task selects on it).
    _kill: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The Runtime API state of one instance.
struct Api {
    queue: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    inflight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    ready: watch::Sender<Option<Duration>>,
    init_error: watch::Sender<Option<(String, String)>>,
    spawned_at: Instant,
    arn: String,
}

impl Api {
    fn take(&self, id: &str) -> Option<oneshot::Sender<Outcome>> {
        lock(&self.inflight).remove(id)
    }
}

/// An invocation queued for the next `/next` call.
struct Pending {
    id: String,
    body: Bytes,
    timeout: Duration,
    /// Receives the invocation's deadline when the runtime takes it.
    dispatched: oneshot::Sender<Instant>,
    done: oneshot::Sender<Outcome>,
}

type Outcome = Result<Bytes, InvokeError>;

/// The child's output lines, stdout and stderr interleaved as read.
#[derive(Default)]
struct Logs {
    lines: Mutex<Vec<String>>,
    added: Notify,
}

impl LambdaEmulator {
    /// Starts `binary` as a Lambda instance with Lambda's standard variables overlaid by `env`.
    ///
    /// The child's environment is cleared first (only `LLVM_PROFILE_FILE` and `RUST_BACKTRACE`
    /// pass through), its working directory is the binary's folder (Lambda's task root), and
    /// `AWS_LAMBDA_RUNTIME_API` always points at this emulator. `timeout` is the function timeout.
    pub async fn start(
        binary: &Path,
        env: &[(String, String)],
        timeout: Duration,
    ) -> anyhow::Result<LambdaEmulator> {
        let binary = std::path::absolute(binary)
            .with_context(|| format!("resolving {}", binary.display()))?;
        anyhow::ensure!(
            binary.is_file(),
            "the Lambda binary is missing at {}",
            binary.display()
        );
        let function = Arc::new(Function::new(binary, env, timeout));
        let emulator = LambdaEmulator {
            function,
            logs: Arc::new(Logs::default()),
            instance: Mutex::new(None),
            invoke_lock: tokio::sync::Mutex::new(()),
            instances_started: AtomicU64::new(0),
        };
        let instance = emulator.spawn_instance().await?;
        *lock(&emulator.instance) = Some(instance);
        Ok(emulator)
    }

    /// Invokes the function with `event` and waits for its response, error, timeout or exit.
    pub async fn invoke(&self, event: Value) -> Result<Value, InvokeError> {
        let _one_at_a_time = self.invoke_lock.lock().await;
        let body = serde_json::to_vec(&event)
            .map_err(|err| InvokeError::Emulator(format!("serializing the event: {err}")))?;
        if body.len() > PAYLOAD_LIMIT {
            return Err(InvokeError::Emulator(format!(
                "request payload of {} bytes exceeds Lambda's limit of {PAYLOAD_LIMIT} bytes",
                body.len()
            )));
        }
        let (queue, api, mut exit) = self.live_instance().await?;
        let mut init_error = api.init_error.subscribe();
        let (dispatched, dispatched_rx) = oneshot::channel();
        let (done, done_rx) = oneshot::channel();
        let pending = Pending {
            id: request_id(),
            body: Bytes::from(body),
            timeout: self.function.timeout,
            dispatched,
            done,
        };
        queue
            .try_send(pending)
            .map_err(|err| InvokeError::Emulator(format!("queueing the invocation: {err}")))?;

        // Until the runtime takes the event: init (or the previous invocation's tail) runs.
        let mut exited = exit.clone();
        let deadline = tokio::select! {
            biased;
            taken = dispatched_rx => match taken {
                Ok(deadline) => deadline,
                // The /next exchange broke off: the runtime is going away.
                Err(_) => return Err(self.fail_exited(&mut exit).await),
            },
            Some((error_type, error_message)) = wait_some(&mut init_error) => {
                self.discard_instance();
                return Err(InvokeError::Init { error_type, error_message });
            }
            Some(_) = wait_some(&mut exited) => return Err(self.fail_exited(&mut exit).await),
            () = tokio::time::sleep(INIT_TIMEOUT) => {
                self.discard_instance();
                return Err(InvokeError::InitTimedOut { after: INIT_TIMEOUT });
            }
        };

        // Until the runtime answers on /response or /error.
        let outcome = tokio::select! {
            biased;
            outcome = done_rx => outcome
                .unwrap_or_else(|_| Err(InvokeError::Emulator("invocation dropped".into()))),
            Some(_) = wait_some(&mut exited) => return Err(self.fail_exited(&mut exit).await),
            () = tokio::time::sleep_until(deadline.into()) => {
                self.discard_instance();
                return Err(InvokeError::TimedOut { after: self.function.timeout });
            }
        };
        let body = outcome?;
        serde_json::from_slice(&body).map_err(|err| InvokeError::InvalidResponse {
            message: err.to_string(),
        })
    }

    /// Waits until the current instance has made its first `/next` call and returns its init time.
    pub async fn ready(&self) -> Result<Duration, InvokeError> {
        let _one_at_a_time = self.invoke_lock.lock().await;
        let (_queue, api, mut exit) = self.live_instance().await?;
        let mut ready = api.ready.subscribe();
        let mut init_error = api.init_error.subscribe();
        let mut exited = exit.clone();
        tokio::select! {
            biased;
            Some(init) = wait_some(&mut ready) => Ok(init),
            Some((error_type, error_message)) = wait_some(&mut init_error) => {
                self.discard_instance();
                Err(InvokeError::Init { error_type, error_message })
            }
            Some(_) = wait_some(&mut exited) => Err(self.fail_exited(&mut exit).await),
            () = tokio::time::sleep(INIT_TIMEOUT) => {
                self.discard_instance();
                Err(InvokeError::InitTimedOut { after: INIT_TIMEOUT })
            }
        }
    }

    /// Init time of the current instance: from spawn to its first `/next` call (None before it).
    pub fn init_duration(&self) -> Option<Duration> {
        lock(&self.instance)
            .as_ref()
            .and_then(|instance| *instance.api.ready.borrow())
    }

    /// The current instance's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.instance)
            .as_ref()
            .filter(|instance| instance.exit.borrow().is_none())
            .and_then(|instance| instance.pid)
    }

    /// Peak resident set size of the current instance in KiB (`VmHWM` of `/proc/PID/status`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// How many instances (cold starts) this emulator has started so far.
    pub fn instances_started(&self) -> u64 {
        self.instances_started.load(Ordering::Relaxed)
    }

    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub fn function_name(&self) -> &str {
        &self.function.name
    }

    /// All lines the function's instances wrote to stdout and stderr so far, in arrival order.
    pub fn logs(&self) -> Vec<String> {
        lock(&self.logs.lines).clone()
    }

    /// Waits up to `within` for a log line containing `needle` and returns the first such line.
    pub async fn wait_for_log(&self, needle: &str, within: Duration) -> Option<String> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let added = self.logs.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(line) = lock(&self.logs.lines)
                .iter()
                .find(|line| line.contains(needle))
            {
                return Some(line.clone());
            }
            tokio::select! {
                () = added => {}
                () = tokio::time::sleep_until(until) => return None,
            }
        }
    }

    /// The current instance's Runtime API, starting a new instance if there is none or it exited.
    async fn live_instance(
        &self,
    ) -> Result<
        (
            mpsc::Sender<Pending>,
            Arc<Api>,
            watch::Receiver<Option<String>>,
        ),
        InvokeError,
    > {
        {
            let mut current = lock(&self.instance);
            if let Some(instance) = current.as_ref()
                && instance.exit.borrow().is_none()
            {
                return Ok((
                    instance.queue.clone(),
                    instance.api.clone(),
                    instance.exit.clone(),
                ));
            }
            *current = None;
        }
        let instance = self
            .spawn_instance()
            .await
            .map_err(|err| InvokeError::Emulator(format!("{err:#}")))?;
        let parts = (
            instance.queue.clone(),
            instance.api.clone(),
            instance.exit.clone(),
        );
        *lock(&self.instance) = Some(instance);
        Ok(parts)
    }

    /// Kills and forgets the current instance; the next invocation starts a new one.
    fn discard_instance(&self) {
        let instance = lock(&self.instance).take();
        drop(instance);
    }

    /// The `Exited` error for the current instance, once its exit status is known (or 2 s passed).
    async fn fail_exited(&self, exit: &mut watch::Receiver<Option<String>>) -> InvokeError {
        let status = tokio::time::timeout(Duration::from_secs(2), wait_some(exit))
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "unknown".into());
        self.discard_instance();
        InvokeError::Exited { status }
    }

    /// Binds a Runtime API server on 127.0.0.1:0 and spawns the binary against it.
    async fn spawn_instance(&self) -> anyhow::Result<Instance> {
        let function = &self.function;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Runtime API listener")?;
        let addr: SocketAddr = listener.local_addr()?;

        let mut command = tokio::process::Command::new(&function.binary);
        command
            .env_clear()
            .envs(
                ["LLVM_PROFILE_FILE", "RUST_BACKTRACE"]
                    .into_iter()
                    .filter_map(|name| std::env::var_os(name).map(|value| (name, value))),
            )
            .envs(function.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .current_dir(function.binary.parent().unwrap_or(Path::new("/")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);

        let (queue, queue_rx) = mpsc::channel(1);
        let api = Arc::new(Api {
            queue: tokio::sync::Mutex::new(queue_rx),
            inflight: Mutex::new(HashMap::new()),
            ready: watch::Sender::new(None),
            init_error: watch::Sender::new(None),
            spawned_at: Instant::now(),
            arn: function.arn.clone(),
        });
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", function.binary.display()))?;
        self.instances_started.fetch_add(1, Ordering::Relaxed);
        let server = tokio::spawn(serve(listener, api.clone()));
        let pid = child.id();

        let prefix = format!("[{}:{}]", function.name, pid.unwrap_or_default());
        let readers = [
            child
                .stdout
                .take()
                .map(|out| tokio::spawn(read_lines(out, self.logs.clone(), prefix.clone()))),
            child
                .stderr
                .take()
                .map(|err| tokio::spawn(read_lines(err, self.logs.clone(), prefix))),
        ];
        let (exit_tx, exit) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = kill_rx => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            // Let the readers drain the pipes so the logs are complete once the exit is seen.
            for reader in readers.into_iter().flatten() {
                let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
            }
            let status = status.map_or_else(|_| "unknown".into(), describe);
            exit_tx.send_replace(Some(status));
        });

        Ok(Instance {
            api,
            queue,
            pid,
            exit,
            _kill: kill,
            server,
        })
    }
}

impl fmt::Debug for LambdaEmulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaEmulator")
            .field("binary", &self.function.binary)
            .field("pid", &self.pid())
            .field("instances_started", &self.instances_started())
            .finish_non_exhaustive()
    }
}

impl Function {
    fn new(binary: PathBuf, env: &[(String, String)], timeout: Duration) -> Function {
        let given = |name: &str| {
            env.iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let name = given("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| {
            binary
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| "function".into())
        });
        let region = given("AWS_REGION")
            .or_else(|| given("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let task_root = binary
            .parent()
            .map(|dir| dir.display().to_string())
            .unwrap_or_else(|| "/".into());
        let mut merged: Vec<(String, String)> = [
            ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("emulator/[$LATEST]{}", request_id().replace('-', "")),
            ),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
            ("AWS_REGION", region.clone()),
            ("AWS_DEFAULT_REGION", region.clone()),
            ("_HANDLER", "bootstrap".into()),
            ("LAMBDA_TASK_ROOT", task_root.clone()),
            ("LAMBDA_RUNTIME_DIR", task_root),
            ("TZ", ":UTC".into()),
            ("LANG", "en_US.UTF-8".into()),
            ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        // Lambda always hands the function role credentials; moto accepts any.
        if given("AWS_ACCESS_KEY_ID").is_none() {
            for key in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
            ] {
                merged.push((key.into(), "testing".into()));
            }
        }
        merged.retain(|(key, _)| given(key).is_none());
        merged.extend(
            env.iter()
                .filter(|(key, _)| key != "AWS_LAMBDA_RUNTIME_API")
                .cloned(),
        );
        Function {
            arn: format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"),
            binary,
            env: merged,
            timeout,
            name,
        }
    }
}

/// Serves the Runtime API for one instance until aborted.
async fn serve(listener: tokio::net::TcpListener, api: Arc<Api>) {
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(not_found)
        // Size limits are Lambda's, checked in the handlers.
        .layer(DefaultBodyLimit::disable())
        .with_state(api);
    let _ = axum::serve(listener, app).await;
}

/// `GET /runtime/invocation/next`: blocks until an invocation is queued, then hands it over.
async fn next(State(api): State<Arc<Api>>) -> Response {
    api.ready.send_if_modified(|ready| {
        ready.is_none() && {
            *ready = Some(api.spawned_at.elapsed());
            true
        }
    });
    let mut queue = api.queue.lock().await;
    while let Some(pending) = queue.recv().await {
        let deadline = Instant::now() + pending.timeout;
        let deadline_ms = (SystemTime::now() + pending.timeout)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        lock(&api.inflight).insert(pending.id.clone(), pending.done);
        if pending.dispatched.send(deadline).is_err() {
            // The caller gave up on this invocation before the runtime took it.
            lock(&api.inflight).remove(&pending.id);
            continue;
        }
        let built = axum::http::Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header("Lambda-Runtime-Aws-Request-Id", &pending.id)
            .header("Lambda-Runtime-Deadline-Ms", deadline_ms.to_string())
            .header("Lambda-Runtime-Invoked-Function-Arn", &api.arn)
            .header("Lambda-Runtime-Trace-Id", trace_id())
            .body(Body::from(pending.body));
        return match built {
            Ok(response) => response,
            Err(err) => {
                if let Some(done) = api.take(&pending.id) {
                    let _ = done.send(Err(InvokeError::Emulator(format!(
                        "building the /next response: {err}"
                    ))));
                }
                api_error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", &err)
            }
        };
    }
    api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ServiceException",
        "the emulator is shutting down",
    )
}

/// `POST /runtime/invocation/{id}/response`: the function's result.
async fn invocation_response(
    State(api): State<Arc<Api>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let Some(done) = api.take(&id) else {
        return unknown_request(&id);
    };
    if body.len() > PAYLOAD_LIMIT {
        let message = format!(
            "Response payload size ({} bytes) exceeded maximum allowed payload size ({PAYLOAD_LIMIT} bytes).",
            body.len()
        );
        let _ = done.send(Err(InvokeError::Function {
            error_type: "Function.ResponseSizeTooLarge".into(),
            error_message: message.clone(),
        }));
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            message,
        );
    }
    let _ = done.send(Ok(body));
    accepted()
}

/// `POST /runtime/invocation/{id}/error`: the function failed this invocation.
async fn invocation_error(
    State(api): State<Arc<Api>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(done) = api.take(&id) else {
        return unknown_request(&id);
    };
    let (error_type, error_message) = diagnostic(&headers, &body);
    let _ = done.send(Err(InvokeError::Function {
        error_type,
        error_message,
    }));
    accepted()
}

/// `POST /runtime/init/error`: the runtime failed to initialize.
async fn init_error(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let reported = diagnostic(&headers, &body);
    api.init_error.send_replace(Some(reported));
    accepted()
}

async fn not_found() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "no such Runtime API route",
    )
}

/// `errorType`/`errorMessage` from the body, else the error-type header and the raw body.
fn diagnostic(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|value| value.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let error_type = field("errorType")
        .or_else(|| {
            headers
                .get("Lambda-Runtime-Function-Error-Type")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Unhandled".into());
    let error_message =
        field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    (error_type, error_message)
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

fn unknown_request(id: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        format!("no invocation in flight with id {id}"),
    )
}

fn api_error(status: StatusCode, error_type: &str, message: impl fmt::Display) -> Response {
    let body = json!({"errorType": error_type, "errorMessage": message.to_string()});
    (status, axum::Json(body)).into_response()
}

/// Appends each line of `pipe` to `logs` (and echoes it to the test's captured stderr).
async fn read_lines(pipe: impl AsyncRead + Unpin, logs: Arc<Logs>, prefix: String) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']).to_owned();
                eprintln!("{prefix} {text}");
                lock(&logs.lines).push(text);
                logs.added.notify_waiters();
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".into(),
    }
}

/// The watched value once it is `Some` (None if the sender went away without setting it).
async fn wait_some<T: Clone>(watched: &mut watch::Receiver<Option<T>>) -> Option<T> {
    let value = watched.wait_for(Option::is_some).await.ok()?;
    value.clone()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// 128 pseudo-random bits, unique within this process.
fn unique_bits() -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let seed = nanos ^ u64::from(std::process::id()).rotate_left(32);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let high = splitmix64(seed ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let low = splitmix64(high ^ count);
    (u128::from(high) << 64) | u128::from(low)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A UUID-shaped (version 4) request id.
fn request_id() -> String {
    let bits = unique_bits();
    let hex = format!(
        "{:032x}",
        (bits & !(0xF000 << 64) & !(0xC << 60)) | (0x4000 << 64) | (0x8 << 60)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// An X-Ray trace header like Lambda's: `Root=1-<epoch hex>-<96 bits>;Parent=<64 bits>;Sampled=0`.
fn trace_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let bits = unique_bits();
    format!(
        "Root=1-{secs:08x}-{:024x};Parent={:016x};Sampled=0",
        bits >> 32,
        bits as u64
    )
}

/// One SQS message as an event source mapping hands it to Lambda (see [`sqs_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsRecordInput {
    /// `messageId`: the SQS message id, which `batchItemFailures` refer to.
    pub message_id: String,
    /// `receiptHandle` from ReceiveMessage.
    pub receipt_handle: String,
    /// `body`: the message body.
    pub body: String,
    /// `md5OfBody`; computed from `body` when None.
    pub md5_of_body: Option<String>,
    /// `attributes.ApproximateReceiveCount`.
    pub approximate_receive_count: u32,
    /// `attributes.SentTimestamp`, epoch milliseconds.
    pub sent_timestamp_ms: u64,
    /// `attributes.ApproximateFirstReceiveTimestamp`, epoch milliseconds.
    pub approximate_first_receive_timestamp_ms: u64,
    /// `attributes.SenderId`.
    pub sender_id: String,
    /// Further `attributes` (FIFO queues: `MessageGroupId`, `SequenceNumber`, ...).
    pub extra_attributes: Vec<(String, String)>,
    /// `messageAttributes`, already in Lambda's shape (`{"name":{"stringValue":..,"dataType":..}}`).
    pub message_attributes: serde_json::Map<String, Value>,
    /// `md5OfMessageAttributes`; the field is left out when None.
    pub md5_of_message_attributes: Option<String>,
    /// `eventSourceARN`: the queue's ARN.
    pub event_source_arn: String,
    /// `awsRegion`.
    pub aws_region: String,
}

impl SqsRecordInput {
    /// A first delivery of `body` as message `message_id` from the queue `queue_arn`, sent now.
    pub fn new(message_id: &str, body: &str, queue_arn: &str) -> SqsRecordInput {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let aws_region = queue_arn
            .split(':')
            .nth(3)
            .unwrap_or("us-east-1")
            .to_owned();
        SqsRecordInput {
            message_id: message_id.to_owned(),
            receipt_handle: format!("{message_id}#{}", request_id()),
            body: body.to_owned(),
            md5_of_body: None,
            approximate_receive_count: 1,
            sent_timestamp_ms: now_ms,
            approximate_first_receive_timestamp_ms: now_ms,
            sender_id: "AIDAIENQZJOLO23YVJ4VO".into(),
            extra_attributes: Vec::new(),
            message_attributes: serde_json::Map::new(),
            md5_of_message_attributes: None,
            event_source_arn: queue_arn.to_owned(),
            aws_region,
        }
    }
}

/// The SQS event Lambda's event source mapping sends for `records` (`{"Records":[...]}`).
pub fn sqs_event(records: Vec<SqsRecordInput>) -> Value {
    let records: Vec<Value> = records
        .into_iter()
        .map(|record| {
            let mut attributes = serde_json::Map::new();
            attributes.insert(
                "ApproximateReceiveCount".into(),
                record.approximate_receive_count.to_string().into(),
            );
            attributes.insert(
                "SentTimestamp".into(),
                record.sent_timestamp_ms.to_string().into(),
            );
            attributes.insert("SenderId".into(), record.sender_id.into());
            attributes.insert(
                "ApproximateFirstReceiveTimestamp".into(),
                record
                    .approximate_first_receive_timestamp_ms
                    .to_string()
                    .into(),
            );
            for (key, value) in record.extra_attributes {
                attributes.insert(key, value.into());
            }
            let md5_of_body = record
                .md5_of_body
                .unwrap_or_else(|| md5_hex(record.body.as_bytes()));
            let mut message = json!({
                "messageId": record.message_id,
                "receiptHandle": record.receipt_handle,
                "body": record.body,
                "attributes": attributes,
                "messageAttributes": record.message_attributes,
                "md5OfBody": md5_of_body,
                "eventSource": "aws:sqs",
                "eventSourceARN": record.event_source_arn,
                "awsRegion": record.aws_region,
            });
            if let (Some(md5), Some(fields)) =
                (record.md5_of_message_attributes, message.as_object_mut())
            {
                fields.insert("md5OfMessageAttributes".into(), md5.into());
            }
            message
        })
        .collect();
    json!({ "Records": records })
}

/// The `itemIdentifier`s of an SQS batch response (`{"batchItemFailures":[{"itemIdentifier":..}]}`).
///
/// A missing or null `batchItemFailures` means no failures. An entry without a string
/// `itemIdentifier` yields `""`, which Lambda (matching ids against the batch) treats as a
/// failure of the whole batch.
pub fn batch_item_failures(response: &Value) -> Vec<String> {
    response
        .get("batchItemFailures")
        .and_then(Value::as_array)
        .map(|failures| {
            failures
                .iter()
                .map(|failure| {
                    failure
                        .get("itemIdentifier")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// MD5 of `data` as lowercase hex (RFC 1321), as SQS reports `MD5OfBody`.
pub fn md5_hex(data: &[u8]) -> String {
    const SHIFTS: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    #[rustfmt::skip]
    const K: [u32; 64] = [
        0xd76a_a478, 0xe8c7_b756, 0x2420_70db, 0xc1bd_ceee, 0xf57c_0faf, 0x4787_c62a,
        0xa830_4613, 0xfd46_9501, 0x6980_98d8, 0x8b44_f7af, 0xffff_5bb1, 0x895c_d7be,
        0x6b90_1122, 0xfd98_7193, 0xa679_438e, 0x49b4_0821, 0xf61e_2562, 0xc040_b340,
        0x265e_5a51, 0xe9b6_c7aa, 0xd62f_105d, 0x0244_1453, 0xd8a1_e681, 0xe7d3_fbc8,
        0x21e1_cde6, 0xc337_07d6, 0xf4d5_0d87, 0x455a_14ed, 0xa9e3_e905, 0xfcef_a3f8,
        0x676f_02d9, 0x8d2a_4c8a, 0xfffa_3942, 0x8771_f681, 0x6d9d_6122, 0xfde5_380c,
        0xa4be_ea44, 0x4bde_cfa9, 0xf6bb_4b60, 0xbebf_bc70, 0x289b_7ec6, 0xeaa1_27fa,
        0xd4ef_3085, 0x0488_1d05, 0xd9d4_d039, 0xe6db_99e5, 0x1fa2_7cf8, 0xc4ac_5665,
        0xf429_2244, 0x432a_ff97, 0xab94_23a7, 0xfc93_a039, 0x655b_59c3, 0x8f0c_cc92,
        0xffef_f47d, 0x8584_5dd1, 0x6fa8_7e4f, 0xfe2c_e6e0, 0xa301_4314, 0x4e08_11a1,
        0xf753_7e82, 0xbd3a_f235, 0x2ad7_d2bb, 0xeb86_d391,
    ];
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut message = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_le_bytes());
    for block in message.chunks_exact(64) {
        let mut words = [0u32; 16];
        for (word, bytes) in words.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a
                .wrapping_add(f)
                .wrapping_add(K[i])
                .wrapping_add(words[g])
                .rotate_left(SHIFTS[i]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(rotated);
        }
        for (word, add) in state.iter_mut().zip([a, b, c, d]) {
            *word = word.wrapping_add(add);
        }
    }
    state
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The records an event source mapping hands the function for `messages` received from
/// `queue_url` (their ids, handles, bodies and receive counts).
pub fn records_of(
    messages: &[aws_sdk_sqs::types::Message],
    queue_url: &str,
) -> Vec<SqsRecordInput> {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let name = queue_url.rsplit('/').next().unwrap_or_default();
    let arn = format!("arn:aws:sqs:us-east-1:123456789012:{name}");
    messages
        .iter()
        .map(|m| {
            let id = m.message_id().unwrap_or_default();
            let mut r = SqsRecordInput::new(id, m.body().unwrap_or_default(), &arn);
            r.receipt_handle = m.receipt_handle().unwrap_or_default().to_owned();
            r.approximate_receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            r
        })
        .collect()
}

/// One round of the event source mapping: receives up to 10 messages, invokes the function
/// with them, deletes the successes. Returns (messages, the ids reported as failures).
pub async fn pump(
    sqs: &aws_sdk_sqs::Client,
    f: &LambdaEmulator,
    queue_url: &str,
) -> (Vec<String>, Vec<String>) {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let got = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .visibility_timeout(30)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receiving for the event source mapping")
        .messages
        .unwrap_or_default();
    if got.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let handles: std::collections::BTreeMap<String, String> = got
        .iter()
        .map(|m| {
            let id = m.message_id().expect("SQS answers a message id");
            let handle = m.receipt_handle().expect("SQS answers a receipt handle");
            (id.to_owned(), handle.to_owned())
        })
        .collect();
    let records = records_of(&got, queue_url);
    let answer = f
        .invoke(sqs_event(records))
        .await
        .expect("the function answers its invocation");
    let failures = batch_item_failures(&answer);
    for (id, handle) in &handles {
        if !failures.contains(id) {
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(handle)
                .send()
                .await
                .expect("deleting a handled message");
        }
    }
    (handles.into_keys().collect(), failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_rfc_1321() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5_hex(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn request_ids_are_uuid_v4_shaped_and_unique() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn batch_item_failures_reads_ids() {
        let response = json!({"batchItemFailures": [{"itemIdentifier": "m2"}, {"x": 1}]});
        assert_eq!(batch_item_failures(&response), ["m2", ""]);
        assert!(batch_item_failures(&json!({"batchItemFailures": null})).is_empty());
        assert!(batch_item_failures(&Value::Null).is_empty());
    }
}
