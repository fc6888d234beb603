//! The README's first flow, typed the way a newcomer types it: in an empty folder, no flags,
//! the default data directory `./sealbox-data` (relative), `up` running in the background.
// Test support: a panic is how a test reports a broken precondition.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The README's first-run commands, in order; the test checks the README still shows them.
const README_COMMANDS: [&str; 5] = [
    "sealbox up",
    "sealbox seller grant 111122223333",
    "export SEALBOX_BUYER_SECRET=sbx_...",
    "sealbox buyer submit rows.csv --buyer 111122223333",
    "sealbox buyer results --buyer 111122223333",
];

/// `sealbox ARGS` in `cwd`, with no data directory from the environment.
fn sealbox(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(sealbox_tests::sealbox_bin());
    c.current_dir(cwd)
        .args(args)
        .env_remove("SEALBOX_DATA_DIR")
        .env_remove("SEALBOX_BUYER_SECRET_FILE");
    c
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_readme_first_flow_answers_at_once_in_a_fresh_folder_with_the_default_data_directory() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    for line in README_COMMANDS {
        assert!(readme.contains(line), "the README no longer shows {line:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let mut up = sealbox_tests::Daemon(
        sealbox(cwd, &["up", "--log", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = up.stdout.take().unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready).unwrap();
    assert!(ready.starts_with("sealbox ready"), "{ready:?}");
    assert!(
        cwd.join("sealbox-data/buckets/inbox").is_dir(),
        "the default data directory is ./sealbox-data"
    );

    let secret = ok(
        sealbox(cwd, &["seller", "grant", "111122223333"])
            .output()
            .unwrap(),
        "grant",
    );
    let secret = secret.trim().to_owned();
    assert!(secret.starts_with("sbx_"), "{secret:?}");
    std::fs::write(cwd.join("rows.csv"), "5.1,3.5,1.4,0.2\n6.3,3.3,6.0,2.5\n").unwrap();
    ok(
        sealbox(
            cwd,
            &["buyer", "submit", "rows.csv", "--buyer", "111122223333"],
        )
        .env("SEALBOX_BUYER_SECRET", &secret)
        .output()
        .unwrap(),
        "submit",
    );

    // Answered while `up` runs, without a restart: the live watcher saw the request.
    let result = cwd.join("sealbox-data/buckets/outbox/111122223333/results/rows.out");
    let answered = sealbox_tests::wait_until(Duration::from_secs(30), || result.is_file());
    let listed = ok(
        sealbox(cwd, &["buyer", "results", "--buyer", "111122223333"])
            .output()
            .unwrap(),
        "results",
    );
    sealbox_tests::terminate(&up);
    let stopped = up.wait().unwrap();
    assert!(answered, "no result while up ran; results: {listed}");
    assert!(
        listed.contains("rows") && listed.contains("completed"),
        "{listed}"
    );
    let events = std::fs::read_to_string(cwd.join("sealbox-data/events.ndjson")).unwrap();
    assert!(events.contains("InferenceCompleted"), "{events}");
    assert!(stopped.success(), "sealbox up exits cleanly on SIGTERM");
}
