//! Helpers for sealbox's end-to-end tests: locating and driving the `sealbox` binary.
// Test support: a panic is how a test reports a broken precondition.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod aws_cli;
pub mod aws_stack;
pub mod lambda_emulator;
pub mod moto;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `sealbox` binary built beside the test executables (`cargo build --bins` builds it).
pub fn sealbox_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/sealbox
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("sealbox"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "the sealbox binary is missing at {}: run `cargo build --bins` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// The Lambda function `name`, built in the release profile as `scripts/package` builds it (for
/// the host): `target/release/NAME`, beside the tests' own `target/debug/`.
pub fn lambda_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/release/<name>
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .map(|target| target.join("release").join(name))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "the {name} Lambda binary is missing at {}: build the five functions in the release \
         profile, as scripts/test does (`cargo build --release -p sealbox-ingest-lambda -p …`)",
        bin.display()
    );
    bin
}

/// The test Python with PyJWT: `$SEALBOX_TEST_PYTHON`, else `.venv-test/bin/python` in the workspace.
pub fn python() -> PathBuf {
    let python = std::env::var_os("SEALBOX_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the workspace root above tests/")
                .join(".venv-test/bin/python")
        });
    assert!(
        python.is_file(),
        "the test Python is missing at {}: run `./scripts/test`, which installs it (.venv-test/, scripts/requirements-test.txt)",
        python.display()
    );
    python
}

/// A good request of `buyer` with id `id`, sending `token` and one row of inline CSV.
pub fn text_case(buyer: &str, id: &str, token: &str) -> sealbox::cases::Case {
    use sealbox::cases::{Case, Expect, SAMPLE_ROWS, text_request};
    Case {
        name: id.into(),
        buyer: buyer.into(),
        request_id: id.into(),
        body: serde_json::to_vec(&text_request(id, Some(token), SAMPLE_ROWS[0]))
            .unwrap_or_default(),
        inputs: Vec::new(),
        expect: Expect::Completed,
    }
}

/// A `sealbox` command on `data_dir`.
pub fn sealbox(data_dir: &std::path::Path) -> Command {
    let mut c = Command::new(sealbox_bin());
    c.arg("--data-dir").arg(data_dir);
    c
}

/// Subscribes `buyer` (`seller grant`) and returns a token the seller signs for it.
pub fn granted_token(data_dir: &std::path::Path, buyer: &str) -> String {
    let grant = sealbox(data_dir)
        .args(["seller", "grant", buyer])
        .output()
        .expect("running seller grant");
    assert!(
        grant.status.success(),
        "{}",
        String::from_utf8_lossy(&grant.stderr)
    );
    let token = sealbox(data_dir)
        .args(["seller", "token", "--buyer", buyer])
        .output()
        .expect("running seller token");
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    String::from_utf8_lossy(&token.stdout).trim().to_owned()
}

/// A running `sealbox up` that a test owns: killed if the test ends (or panics) without
/// stopping it, so a failed test leaves no daemon behind.
pub struct Daemon(pub Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `sealbox up` with extra arguments and waits for its ready line.
pub fn start_up(data_dir: &std::path::Path, extra: &[&str]) -> Daemon {
    let mut child = sealbox(data_dir)
        .arg("up")
        .args(extra)
        .arg("--log")
        .arg("warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting sealbox up");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("reading the ready line");
    let daemon = Daemon(child);
    assert!(
        line.starts_with("sealbox ready"),
        "unexpected first line: {line:?}"
    );
    daemon
}

/// Sends SIGTERM to a child (how a service manager stops `sealbox up`).
pub fn terminate(child: &Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A running embedded stack in a temporary folder, with its taps and a case context.
pub struct Embedded {
    /// The stack's options, as started.
    pub opts: sealbox::stack::StackOptions,
    /// The stack.
    pub stack: sealbox::stack::Stack,
    /// Every notification.
    pub notes: tokio::sync::mpsc::UnboundedReceiver<sealbox_core::contract::Notification>,
    /// What the worker measured of each job.
    pub jobs: tokio::sync::mpsc::UnboundedReceiver<sealbox_worker::JobReport>,
    /// Builds good and bad requests for the buyers `111122223333` and `444455556666`.
    pub ctx: sealbox::cases::CaseContext,
    /// The data directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Embedded {
    /// Starts a stack with default options changed by `configure`.
    pub async fn start(configure: impl FnOnce(&mut sealbox::stack::StackOptions)) -> Embedded {
        Embedded::start_in(tempfile::tempdir().unwrap(), configure).await
    }

    /// Starts a stack in `dir` (which may hold keys already) with options changed by `configure`.
    pub async fn start_in(
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut sealbox::stack::StackOptions),
    ) -> Embedded {
        use sealbox::stack::{Observers, Stack, StackOptions};
        let mut opts = StackOptions::new(dir.path());
        // Revocations show within a second, so tests need not wait a minute.
        opts.jwks_refresh = sealbox_authz::RefreshPolicy {
            interval: Duration::from_millis(500),
            unknown_kid_min_interval: Duration::from_millis(100),
        };
        configure(&mut opts);
        let (ntx, notes) = tokio::sync::mpsc::unbounded_channel();
        let (jtx, jobs) = tokio::sync::mpsc::unbounded_channel();
        let observers = Observers {
            notifications: Some(ntx),
            jobs: Some(jtx),
        };
        let stack = Stack::start(opts.clone(), observers).await.unwrap();
        let keyset = sealbox_authz::Keyset::load(&stack.paths.keyset).unwrap();
        let ctx = sealbox::cases::CaseContext::new(
            &keyset,
            "111122223333",
            "444455556666",
            &opts.product,
        )
        .unwrap();
        Embedded {
            opts,
            stack,
            notes,
            jobs,
            ctx,
            dir,
        }
    }

    /// Writes a case's request object into the inbox.
    pub async fn drop_request(&self, case: &sealbox::cases::Case) {
        case.put_request(&self.stack.store).await.unwrap();
    }

    /// The next notification, failing the test after `timeout`.
    pub async fn next_note(&mut self, timeout: Duration) -> sealbox_core::contract::Notification {
        tokio::time::timeout(timeout, self.notes.recv())
            .await
            .expect("no notification in time")
            .expect("notifier closed")
    }
}

/// What a command printed, and whether it succeeded.
#[derive(Debug)]
pub struct Ran {
    /// Exit status 0.
    pub ok: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `c` without the buyer's token and secret variables of the environment that runs the
/// tests (a token or a product only where a test gives one); a panic in it fails the test.
pub fn run(mut c: std::process::Command) -> Ran {
    let out = c
        .env_remove("SEALBOX_TOKEN")
        .env_remove("SEALBOX_TOKEN_URL")
        .env_remove("SEALBOX_BUYER_SECRET")
        .env_remove("SEALBOX_BUYER_SECRET_FILE")
        .env_remove("SEALBOX_PRODUCT")
        .output()
        .expect("running a command");
    let ran = Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    ran
}

/// Judges fair share by the order outcomes were announced in (`order`, the buyer of each):
/// `few`'s requests, written when `done_when_few_came` of `bursting`'s `burst` had finished,
/// must not wait for most of what was left of the burst. Queued behind it, all of that would
/// finish first; shared fairly, the few wait only for what was already in hand.
pub fn assert_not_behind_the_burst(
    order: &[String],
    bursting: &str,
    few: &str,
    burst: usize,
    done_when_few_came: usize,
) {
    let few_last = order
        .iter()
        .rposition(|b| b == few)
        .expect("the few were announced");
    let burst_before = order[..few_last].iter().filter(|b| *b == bursting).count();
    let left = burst - done_when_few_came;
    let ahead = burst_before.saturating_sub(done_when_few_came);
    eprintln!(
        "{done_when_few_came} of the burst's {burst} had finished when the other buyer's \
         requests were written; {ahead} of the {left} left finished before their last"
    );
    assert!(
        left > 100,
        "the burst was over before the test began: {left} left"
    );
    assert!(
        ahead < left / 2,
        "{ahead} of the {left} requests left of the burst finished before the other buyer's last"
    );
}
