//! Helpers for sealbox's end-to-end tests: locating and driving the `sealbox` binary.
// Test support: a panic is how a test reports a broken precondition.
#![allow(clippy::expect_used, clippy::unwrap_used)]

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

/// A `sealbox` command on `data_dir`.
pub fn sealbox(data_dir: &std::path::Path) -> Command {
    let mut c = Command::new(sealbox_bin());
    c.arg("--data-dir").arg(data_dir);
    c
}

/// Starts `sealbox up` with extra arguments and waits for its ready line.
pub fn start_up(data_dir: &std::path::Path, extra: &[&str]) -> Child {
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
    assert!(
        line.starts_with("sealbox ready"),
        "unexpected first line: {line:?}"
    );
    child
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
