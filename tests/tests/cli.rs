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
    let token = run(&["seller", "token", "--buyer", "b1", "--ttl", "30m"]);
    assert!(token.status.success());
    let text = String::from_utf8_lossy(&token.stdout);
    assert_eq!(text.trim().split('.').count(), 3, "{text}");
    assert_eq!(text.lines().count(), 1);
    let too_long = run(&["seller", "token", "--buyer", "b1", "--ttl", "13h"]);
    assert!(!too_long.status.success());
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("12 h"));
}
