//! The `sealbox` binary as a newcomer runs it.

use std::process::Command;

#[test]
fn sealbox_demo_passes_on_a_fresh_machine() {
    let out = Command::new(sealbox_tests::sealbox_bin())
        .args(["demo", "--requests", "300"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("every request got the outcome it should"),
        "{stdout}"
    );
    assert!(stdout.contains("rejected: token_alg_none"), "{stdout}");
}

#[test]
fn seller_token_prints_the_token_alone_and_bad_arguments_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        sealbox_tests::sealbox(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let missing = run(&["seller", "token", "--buyer", "b1"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("seller keys init"));
    assert!(run(&["seller", "keys", "init"]).status.success());
    let again = run(&["seller", "keys", "init"]);
    assert!(
        !again.status.success(),
        "a second init must not replace the keyset"
    );
    assert!(run(&["seller", "grant", "b1"]).status.success());
    let token = run(&["seller", "token", "--buyer", "b1", "--ttl", "30m"]);
    assert!(token.status.success());
    let text = String::from_utf8_lossy(&token.stdout);
    assert_eq!(text.trim().split('.').count(), 3, "{text}");
    assert_eq!(text.lines().count(), 1);
    let list = String::from_utf8_lossy(&run(&["seller", "keys", "list"]).stdout).into_owned();
    assert!(list.contains("current") && list.contains("next"), "{list}");
    assert!(run(&["seller", "keys", "rotate"]).status.success());
    let list = String::from_utf8_lossy(&run(&["seller", "keys", "list"]).stdout).into_owned();
    assert!(list.contains("previous"), "{list}");
    let jwks: serde_json::Value =
        serde_json::from_slice(&run(&["seller", "keys", "jwks"]).stdout).unwrap();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(3));
    let unknown = run(&["seller", "keys", "revoke", "no-such-kid"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no key"));
    let too_long = run(&["seller", "token", "--buyer", "b1", "--ttl", "13h"]);
    assert!(!too_long.status.success());
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("12 h"));
}

#[test]
fn a_buyer_submits_files_to_a_running_daemon_and_reads_each_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up = sealbox_tests::start_up(&data, &[]);
    let run = |args: &[&str]| sealbox_tests::sealbox(&data).args(args).output().unwrap();
    let token = sealbox_tests::granted_token(&data, "111122223333");
    let good = dir.path().join("flowers.csv");
    std::fs::write(&good, "5.1,3.5,1.4,0.2\n6.3,3.3,6.0,2.5\n").unwrap();
    let bad = dir.path().join("garbage.csv");
    std::fs::write(&bad, "not,a,number,row\n").unwrap();
    let lines = dir.path().join("many lines.csv");
    std::fs::write(&lines, "5.1,3.5,1.4,0.2\n".repeat(1000)).unwrap();
    let mut args = vec![
        "buyer",
        "submit",
        "--buyer",
        "111122223333",
        "--token",
        &token,
    ];
    let files: Vec<String> = [&good, &bad, &lines]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    args.extend(files.iter().map(String::as_str));
    let submitted = run(&args);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );

    let mut outcomes = Vec::new();
    let done = sealbox_tests::wait_until(std::time::Duration::from_secs(30), || {
        let out = run(&["buyer", "results", "--buyer", "111122223333", "--json"]);
        outcomes = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect();
        // Requests still waiting are listed too, as pending.
        outcomes.len() == 3 && outcomes.iter().all(|o| o["outcome"] != "pending")
    });
    assert!(done, "{outcomes:?}");
    let find = |id: &str| {
        outcomes
            .iter()
            .find(|o| o["request_id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(find("flowers")["outcome"], "completed");
    assert_eq!(find("garbage")["outcome"], "failed");
    assert_eq!(find("garbage")["reason"], "model_rejected_input");
    assert_eq!(find("many_lines")["outcome"], "completed");

    let fetched = dir.path().join("out");
    let out = run(&[
        "buyer",
        "results",
        "--buyer",
        "111122223333",
        "--fetch",
        &fetched.display().to_string(),
    ]);
    assert!(out.status.success());
    let result = std::fs::read_to_string(fetched.join("results/flowers.out")).unwrap();
    assert_eq!(result.lines().count(), 2, "{result}");
    assert!(result.starts_with("setosa"), "{result}");

    let status = run(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(rows[1]["queue"], "jobs");
    assert_eq!(rows[1]["backlog"], 0);
    assert_eq!(rows[1]["dead_letters"], 0);
    sealbox_tests::terminate(&up);
    assert!(
        up.wait().unwrap().success(),
        "sealbox up exits cleanly on SIGTERM"
    );
}
