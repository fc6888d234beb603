//! A moto server (fake S3, SQS, SNS, DynamoDB and KMS) for the end-to-end tests, from the test venv.
//!
//! ```text
//! let moto = sealbox_tests::moto::Moto::start();
//! let out = std::process::Command::new(sealbox_tests::python())
//!     .args(["-c", "import boto3; boto3.client('s3').create_bucket(Bucket='inbox')"])
//!     .envs(moto.env())
//!     .output()
//!     .unwrap();
//! ```

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};

/// How long the server gets to start and answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many of the server's last log lines a failure message shows.
const LOG_TAIL: usize = 40;

/// A running `moto_server` on a free loopback port; dropping it kills the server.
pub struct Moto {
    /// The server's base URL, `http://127.0.0.1:PORT`: the endpoint of every service.
    pub endpoint: String,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
    counters: Counters,
}

/// Log lines counted by what they contain (see [`Moto::count_requests`]).
type Counters = Arc<Mutex<Vec<(String, Arc<AtomicUsize>)>>>;

impl Moto {
    /// Starts moto from the test venv and waits until it answers; panics if it cannot.
    pub fn start() -> Moto {
        let python = crate::python();
        let server = moto_server(&python);
        // Port 0: the server binds a free port itself and logs it, so no other process can take it
        // between choosing and binding.
        let mut child = Command::new(&python)
            .arg(&server)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {}: {e}", python.display(), server.display()));

        // Werkzeug logs to stderr: first " * Running on http://127.0.0.1:PORT", then a line per
        // request. A thread reads it to the end, so the pipe never fills, and keeps the last lines.
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("moto's piped stderr");
        let tail = Arc::clone(&log);
        let counters: Counters = Arc::default();
        let counting = Arc::clone(&counters);
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = listening_port(&line)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(port);
                }
                for (needle, n) in counting.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    if line.contains(needle.as_str()) {
                        n.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == LOG_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let mut moto = Moto {
            endpoint: String::new(),
            child,
            log,
            counters,
        };
        let port = loop {
            match port_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    moto.fail("moto_server exited before it listened")
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = moto.child.try_wait() {
                        moto.fail(&format!("moto_server exited ({status}) before it listened"));
                    }
                    if Instant::now() > deadline {
                        moto.fail(&format!(
                            "moto_server did not listen within {START_TIMEOUT:?}"
                        ));
                    }
                }
            }
        };
        moto.endpoint = format!("http://127.0.0.1:{port}");
        // It listens before it logs, but ask it once to be sure it serves.
        loop {
            match moto.request("GET", "/moto-api/") {
                Ok(200) => return moto,
                result => {
                    if Instant::now() > deadline {
                        moto.fail(&format!(
                            "moto_server at {} did not answer GET /moto-api/ with 200 within {START_TIMEOUT:?} (last: {result:?})",
                            moto.endpoint
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Counts, from now on, the requests whose log line contains `needle` (moto logs one line
    /// per request: `"GET /bucket/key HTTP/1.1" 200 -`).
    pub fn count_requests(&self, needle: &str) -> Arc<AtomicUsize> {
        let n = Arc::new(AtomicUsize::new(0));
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((needle.to_owned(), Arc::clone(&n)));
        n
    }

    /// The SDK configuration that reaches this server, for a test's own clients.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint).await
    }

    /// The variables a child process needs to use this server with the AWS SDKs and boto3.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            // boto3 reads this one, not AWS_REGION.
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Forgets every bucket, queue, topic, table and key (`POST /moto-api/reset`).
    pub fn reset(&self) {
        match self.request("POST", "/moto-api/reset") {
            Ok(200) => {}
            result => panic!(
                "POST {}/moto-api/reset answered {result:?}; moto's log ends:\n{}",
                self.endpoint,
                self.log_tail()
            ),
        }
    }

    /// One HTTP/1.1 request without a body to the server; returns the response's status code.
    fn request(&self, method: &str, path: &str) -> std::io::Result<u16> {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        // "HTTP/1.1 200 OK\r\n..."
        String::from_utf8_lossy(&response)
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "not an HTTP response: {:?}",
                        String::from_utf8_lossy(&response[..response.len().min(200)])
                    ),
                )
            })
    }

    /// The server's last log lines, for failure messages.
    fn log_tail(&self) -> String {
        let tail = self.log.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Kills the server and panics with `what` and its last log lines.
    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Give the reader thread a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "{what}; its output ends:\n{}\n(if moto is broken or stale, run ./scripts/test, which installs moto into .venv-test from scripts/requirements-test.txt)",
            self.log_tail()
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moto_server` beside the test venv's `python`; panics, saying how to install it, if it is missing.
fn moto_server(python: &std::path::Path) -> PathBuf {
    let server = python.with_file_name("moto_server");
    assert!(
        server.is_file(),
        "moto_server is missing at {}: run ./scripts/test, which installs moto into .venv-test (scripts/requirements-test.txt)",
        server.display()
    );
    server
}

/// The port in Werkzeug's " * Running on http://127.0.0.1:PORT" line.
fn listening_port(line: &str) -> Option<u16> {
    let rest = line.split("Running on http://127.0.0.1:").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&port| port != 0)
}

/// The moto server of this test process, shared by the tests running at once, so a suite of
/// many small tests starts one server rather than one each. The last test to let go of it
/// stops it (a static would outlive the tests and leave the server running), after a short
/// linger in which a test starting meanwhile takes it over instead of starting another.
/// Tests on it make names of their own and never [`Moto::reset`] it.
pub fn shared() -> MotoLease {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(moto) = shared.upgrade() {
        return MotoLease(moto);
    }
    let moto = Arc::new(Moto::start());
    *shared = Arc::downgrade(&moto);
    MotoLease(moto)
}

static SHARED: Mutex<Weak<Moto>> = Mutex::new(Weak::new());

/// How long the last user of the shared server waits for another test to take it over.
const SHARED_LINGER: Duration = Duration::from_millis(500);

/// A test's hold on the shared moto server (see [`shared`]).
pub struct MotoLease(Arc<Moto>);

impl std::ops::Deref for MotoLease {
    type Target = Moto;
    fn deref(&self) -> &Moto {
        &self.0
    }
}

impl Drop for MotoLease {
    fn drop(&mut self) {
        let end = Instant::now() + SHARED_LINGER;
        while Arc::strong_count(&self.0) == 1 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The SDK configuration for an emulator at `endpoint` (test credentials, us-east-1).
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn reads_the_port_from_werkzeugs_banner() {
        assert_eq!(
            listening_port(" * Running on http://127.0.0.1:43001"),
            Some(43001)
        );
        assert_eq!(
            listening_port(" * Running on http://127.0.0.1:43001\u{1b}[0m"),
            Some(43001)
        );
        assert_eq!(listening_port("Press CTRL+C to quit"), None);
    }
}
