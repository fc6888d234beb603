//! A hostile buyer against a running `sealbox up`: everything it can place in its own inbox
//! prefix ends quickly in a rejection or failure naming the reason, or is ignored with a log
//! line where S3 could never produce it; nothing is dead-lettered, a good buyer's requests are
//! answered all the while, and `up` stops on SIGTERM within seconds.
//!
//! Run with `--nocapture` to see the table: case, expected, outcome, time to the outcome.
// Test support: a panic is how a test reports a broken precondition.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const HOSTILE: &str = "444455556666";
const GOOD: &str = "111122223333";
/// A third buyer whose whole `requests` folder is a symbolic link.
const LINKED: &str = "777788889999";

/// What a case must end in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Completed,
    Failed(&'static str),
    Rejected(&'static str),
    /// No outcome: S3 could not produce it, and `up` logs why.
    Ignored,
}

struct Case {
    name: &'static str,
    /// The request id whose outcome tells (None for ignored cases).
    id: Option<String>,
    expect: Expect,
    placed: Instant,
}

fn request(id: &str, token: &str, input: serde_json::Value) -> Vec<u8> {
    serde_json::json!({
        "version": 1, "request_id": id, "token": token, "input": input,
        "content_type": "text/csv", "accept": "text/csv"
    })
    .to_string()
    .into_bytes()
}

fn text(id: &str, token: &str) -> Vec<u8> {
    request(id, token, serde_json::json!({"text": "5.1,3.5,1.4,0.2"}))
}

fn s3(id: &str, token: &str, key: &str) -> Vec<u8> {
    request(id, token, serde_json::json!({"s3_key": key}))
}

/// Writes a file the way a buyer's tool would: whole, in place.
fn put(path: &Path, body: &[u8]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(path, body).unwrap();
}

fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::RUSR).unwrap();
}

/// An outcome of `buyer`/`id` in the outbox: ("completed" | "failed" | "rejected", reason).
fn outcome(outbox: &Path, buyer: &str, id: &str) -> Option<(String, String)> {
    if outbox.join(format!("{buyer}/results/{id}.out")).is_file() {
        return Some(("completed".into(), String::new()));
    }
    for kind in ["failed", "rejected"] {
        let path = outbox.join(format!("{buyer}/{kind}/{id}.json"));
        if let Ok(body) = fs::read(&path) {
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
            return Some((kind.into(), doc["reason"].as_str().unwrap_or("").to_owned()));
        }
    }
    None
}

fn matches(expect: Expect, got: &Option<(String, String)>) -> bool {
    match (expect, got) {
        (Expect::Completed, Some((k, _))) => k == "completed",
        (Expect::Failed(r), Some((k, reason))) => k == "failed" && reason == r,
        (Expect::Rejected(r), Some((k, reason))) => k == "rejected" && reason == r,
        (Expect::Ignored, None) => true,
        _ => false,
    }
}

#[test]
fn a_hostile_inbox_gets_reasons_quickly_while_another_buyer_is_served_and_up_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up = sealbox_tests::start_up(&data, &[]);
    let run = |args: &[&str]| sealbox_tests::sealbox(&data).args(args).output().unwrap();
    let mut tokens = Vec::new();
    for buyer in [HOSTILE, GOOD, LINKED] {
        tokens.push(sealbox_tests::granted_token(&data, buyer));
    }
    let (t, good_token) = (tokens[0].clone(), tokens[1].clone());
    let inbox = data.join("buckets/inbox");
    let outbox = data.join("buckets/outbox");
    let req = inbox.join(HOSTILE).join("requests");
    let inputs = inbox.join(HOSTILE).join("inputs");
    fs::create_dir_all(&req).unwrap();
    fs::create_dir_all(&inputs).unwrap();
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();

    // The good buyer's input and a few of its requests wait in its own prefix.
    let good_req = inbox.join(GOOD).join("requests");
    put(
        &inbox.join(GOOD).join("inputs/secret.csv"),
        b"5.1,3.5,1.4,0.2\n",
    );

    let mut cases: Vec<Case> = Vec::new();
    let mut case = |name: &'static str, id: Option<&str>, expect: Expect, place: &dyn Fn()| {
        place();
        cases.push(Case {
            name,
            id: id.map(str::to_owned),
            expect,
            placed: Instant::now(),
        });
    };

    // Inputs named by `s3_key`.
    case(
        "s3_key names a FIFO in the buyer's own inputs/",
        Some("fifo-input"),
        Expect::Rejected("input_not_a_file"),
        &|| {
            mkfifo(&inputs.join("pipe.csv"));
            put(
                &req.join("fifo-input.json"),
                &s3("fifo-input", &t, &format!("{HOSTILE}/inputs/pipe.csv")),
            );
        },
    );
    case(
        "a second FIFO input at once (as many as there are cores)",
        Some("fifo-input-2"),
        Expect::Rejected("input_not_a_file"),
        &|| {
            mkfifo(&inputs.join("pipe2.csv"));
            put(
                &req.join("fifo-input-2.json"),
                &s3("fifo-input-2", &t, &format!("{HOSTILE}/inputs/pipe2.csv")),
            );
        },
    );
    case(
        "s3_key is a symbolic link inside the buyer's own inputs/",
        Some("link-own"),
        Expect::Rejected("input_not_a_file"),
        &|| {
            put(&inputs.join("real.csv"), b"5.1,3.5,1.4,0.2\n");
            std::os::unix::fs::symlink(inputs.join("real.csv"), inputs.join("alias.csv")).unwrap();
            put(
                &req.join("link-own.json"),
                &s3("link-own", &t, &format!("{HOSTILE}/inputs/alias.csv")),
            );
        },
    );
    case(
        "s3_key is a symbolic link to another buyer's input",
        Some("link-other"),
        Expect::Rejected("input_not_a_file"),
        &|| {
            std::os::unix::fs::symlink(
                inbox.join(GOOD).join("inputs/secret.csv"),
                inputs.join("stolen.csv"),
            )
            .unwrap();
            put(
                &req.join("link-other.json"),
                &s3("link-other", &t, &format!("{HOSTILE}/inputs/stolen.csv")),
            );
        },
    );
    case(
        "s3_key passes through a linked folder",
        Some("link-dir"),
        Expect::Rejected("input_not_a_file"),
        &|| {
            std::os::unix::fs::symlink(inbox.join(GOOD).join("inputs"), inputs.join("theirs"))
                .unwrap();
            put(
                &req.join("link-dir.json"),
                &s3(
                    "link-dir",
                    &t,
                    &format!("{HOSTILE}/inputs/theirs/secret.csv"),
                ),
            );
        },
    );
    case(
        "s3_key is a symbolic link to /dev/zero",
        Some("link-dev"),
        Expect::Rejected("input_not_a_file"),
        &|| {
            std::os::unix::fs::symlink("/dev/zero", inputs.join("zero.csv")).unwrap();
            put(
                &req.join("link-dev.json"),
                &s3("link-dev", &t, &format!("{HOSTILE}/inputs/zero.csv")),
            );
        },
    );
    case(
        "s3_key names a folder",
        Some("folder-input"),
        Expect::Rejected("input_not_a_file"),
        &|| {
            fs::create_dir_all(inputs.join("a-folder")).unwrap();
            put(
                &req.join("folder-input.json"),
                &s3("folder-input", &t, &format!("{HOSTILE}/inputs/a-folder")),
            );
        },
    );
    case(
        "s3_key names nothing",
        Some("no-input"),
        Expect::Rejected("input_not_found"),
        &|| {
            put(
                &req.join("no-input.json"),
                &s3("no-input", &t, &format!("{HOSTILE}/inputs/missing.csv")),
            );
        },
    );
    case(
        "s3_key names another buyer's input",
        Some("other-prefix"),
        Expect::Rejected("input_outside_prefix"),
        &|| {
            put(
                &req.join("other-prefix.json"),
                &s3("other-prefix", &t, &format!("{GOOD}/inputs/secret.csv")),
            );
        },
    );
    case(
        "s3_key climbs out with ..",
        Some("dotdot"),
        Expect::Rejected("input_outside_prefix"),
        &|| {
            put(
                &req.join("dotdot.json"),
                &s3(
                    "dotdot",
                    &t,
                    &format!("{HOSTILE}/inputs/../../{GOOD}/inputs/secret.csv"),
                ),
            );
        },
    );
    case(
        "split: line over one 7 MB line",
        Some("long-line"),
        Expect::Failed("input_too_large"),
        &|| {
            put(&inputs.join("long.csv"), &vec![b'1'; 7_000_000]);
            let mut body: serde_json::Value =
                serde_json::from_slice(&s3("long-line", &t, &format!("{HOSTILE}/inputs/long.csv")))
                    .unwrap();
            body["split"] = "line".into();
            put(&req.join("long-line.json"), body.to_string().as_bytes());
        },
    );

    // Request objects that are not regular files.
    case(
        "request object is a symbolic link to a system file",
        Some("sys-link"),
        Expect::Rejected("request_not_a_file"),
        &|| {
            std::os::unix::fs::symlink("/etc/hostname", req.join("sys-link.json")).unwrap();
        },
    );
    case(
        "request object is a symbolic link to another buyer's request",
        Some("their-request"),
        Expect::Rejected("request_not_a_file"),
        &|| {
            put(
                &scratch.join("their.json"),
                &text("their-request", &good_token),
            );
            std::os::unix::fs::symlink(scratch.join("their.json"), req.join("their-request.json"))
                .unwrap();
        },
    );
    case(
        "request object is a FIFO",
        Some("fifo"),
        Expect::Rejected("request_not_a_file"),
        &|| {
            mkfifo(&req.join("fifo.json"));
        },
    );
    case(
        "request object is a folder named x.json",
        Some("folder"),
        Expect::Rejected("request_not_a_file"),
        &|| {
            fs::create_dir_all(req.join("folder.json")).unwrap();
        },
    );

    // Ways of placing a good request that are not a rename.
    case(
        "placed with ln (a hard link, only IN_CREATE)",
        Some("hard-link"),
        Expect::Completed,
        &|| {
            put(&scratch.join("hard-link.json"), &text("hard-link", &t));
            fs::hard_link(scratch.join("hard-link.json"), req.join("hard-link.json")).unwrap();
        },
    );
    case(
        "placed with O_TMPFILE + linkat",
        Some("tmpfile"),
        Expect::Completed,
        &|| {
            use std::io::Write;
            use std::os::fd::AsRawFd;
            let fd = rustix::fs::open(
                &req,
                rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::WRONLY,
                rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            )
            .unwrap();
            let mut file = fs::File::from(fd);
            file.write_all(&text("tmpfile", &t)).unwrap();
            let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
            rustix::fs::linkat(
                rustix::fs::CWD,
                proc_path.as_str(),
                rustix::fs::CWD,
                req.join("tmpfile.json"),
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            )
            .unwrap();
        },
    );
    case(
        "a save in two writes (write, close, append, close)",
        Some("two-writes"),
        Expect::Completed,
        &|| {
            use std::io::Write;
            let body = text("two-writes", &t);
            let (a, b) = body.split_at(body.len() / 2);
            fs::write(req.join("two-writes.json"), a).unwrap();
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(req.join("two-writes.json"))
                .unwrap();
            f.write_all(b).unwrap();
        },
    );
    case(
        "a request id starting with a dot",
        Some(".dotted"),
        Expect::Completed,
        &|| {
            put(&req.join(".dotted.json"), &text(".dotted", &t));
        },
    );

    // Request objects that break the contract.
    case(
        "empty request object",
        Some("empty"),
        Expect::Rejected("malformed_json"),
        &|| {
            put(&req.join("empty.json"), b"");
        },
    );
    case(
        "binary garbage",
        Some("garbage"),
        Expect::Rejected("malformed_json"),
        &|| {
            put(&req.join("garbage.json"), &[0xff, 0xfe, 0x00, 0x9c, 0x80]);
        },
    );
    case(
        "JSON nested 100,000 deep",
        Some("deep"),
        Expect::Rejected("malformed_json"),
        &|| {
            put(&req.join("deep.json"), "[".repeat(100_000).as_bytes());
        },
    );
    case(
        "a member given twice (two tokens)",
        Some("dup"),
        Expect::Rejected("malformed_json"),
        &|| {
            let body = format!(
                r#"{{"version":1,"request_id":"dup","token":"x","token":"{t}","input":{{"text":"1"}},"content_type":"text/csv","accept":"text/csv"}}"#
            );
            put(&req.join("dup.json"), body.as_bytes());
        },
    );
    case(
        "request object over 1 MiB",
        Some("huge"),
        Expect::Rejected("request_too_large"),
        &|| {
            put(&req.join("huge.json"), &vec![b' '; 1024 * 1024 + 1]);
        },
    );
    case(
        "a name with spaces",
        Some("my request"),
        Expect::Rejected("invalid_request_id"),
        &|| {
            put(&req.join("my request.json"), &text("my request", &t));
        },
    );
    case(
        "request_id differs from the file name",
        Some("named"),
        Expect::Rejected("request_id_mismatch"),
        &|| {
            put(&req.join("named.json"), &text("another", &t));
        },
    );
    case(
        "the good buyer's token in the hostile prefix",
        Some("borrowed"),
        Expect::Rejected("token_subject_mismatch"),
        &|| {
            put(&req.join("borrowed.json"), &text("borrowed", &good_token));
        },
    );

    // What S3 could never hold: ignored, with a log line.
    case(
        "a folder nested under requests/",
        None,
        Expect::Ignored,
        &|| {
            put(&req.join("nested/deep.json"), &text("deep-nested", &t));
        },
    );
    case("a name that is not UTF-8", None, Expect::Ignored, &|| {
        use std::os::unix::ffi::OsStrExt;
        put(
            &req.join(std::ffi::OsStr::from_bytes(b"bad\xff.json")),
            &text("x", &t),
        );
    });
    case(
        "a file not named .json under requests/",
        None,
        Expect::Ignored,
        &|| {
            put(&req.join("notes.txt"), b"hello");
        },
    );
    case(
        "a requests folder that is a symbolic link (to /)",
        None,
        Expect::Ignored,
        &|| {
            fs::create_dir_all(inbox.join(LINKED)).unwrap();
            std::os::unix::fs::symlink("/", inbox.join(LINKED).join("requests")).unwrap();
        },
    );

    // Meanwhile the good buyer sends twenty requests.
    let good_started = Instant::now();
    for i in 0..20 {
        let id = format!("good-{i:02}");
        put(
            &good_req.join(format!("{id}.json")),
            &text(&id, &good_token),
        );
    }
    let good_ids: Vec<String> = (0..20).map(|i| format!("good-{i:02}")).collect();

    // Wait for every expected outcome (ignored cases: until everything else is done).
    let mut times: Vec<Option<Duration>> = vec![None; cases.len()];
    let mut good_done = None;
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        for (c, t) in cases.iter().zip(times.iter_mut()) {
            if t.is_none()
                && let Some(id) = &c.id
                && outcome(&outbox, HOSTILE, id).is_some()
            {
                *t = Some(c.placed.elapsed());
            }
        }
        if good_done.is_none()
            && good_ids
                .iter()
                .all(|id| outcome(&outbox, GOOD, id).is_some())
        {
            good_done = Some(good_started.elapsed());
        }
        let waiting = cases
            .iter()
            .zip(&times)
            .any(|(c, t)| c.id.is_some() && t.is_none());
        if !waiting && good_done.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give anything that would wrongly answer an ignored case the settle time and more.
    std::thread::sleep(Duration::from_secs(2));

    println!("| case | expected | outcome | time to outcome |");
    println!("| --- | --- | --- | --- |");
    let mut wrong = Vec::new();
    for (c, t) in cases.iter().zip(&times) {
        let got = c.id.as_deref().and_then(|id| outcome(&outbox, HOSTILE, id));
        let shown = got.as_ref().map_or("none (logged)".to_owned(), |(k, r)| {
            format!("{k} {r}").trim().to_owned()
        });
        let took = t.map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()));
        println!("| {} | {:?} | {shown} | {took} |", c.name, c.expect);
        if !matches(c.expect, &got) {
            wrong.push(format!("{}: expected {:?}, got {got:?}", c.name, c.expect));
        }
    }
    let good: Vec<_> = good_ids
        .iter()
        .map(|id| outcome(&outbox, GOOD, id))
        .collect();
    println!(
        "good buyer: {} of 20 completed, all within {:?}",
        good.iter()
            .flatten()
            .filter(|(k, _)| k == "completed")
            .count(),
        good_done
    );
    // Nothing of the linked buyer's folder (which points at /) was read.
    assert!(!outbox.join(LINKED).exists());
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(
        good.iter()
            .all(|o| matches!(o, Some((k, _)) if k == "completed")),
        "{good:?}"
    );

    let status = run(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["dead_letters"], 0, "nothing dead-lettered: {row}");
    }

    let asked = Instant::now();
    sealbox_tests::terminate(&up);
    let stopped = sealbox_tests::wait_until(Duration::from_secs(20), || {
        matches!(up.try_wait(), Ok(Some(_)))
    });
    println!(
        "up stopped {} ms after SIGTERM",
        asked.elapsed().as_millis()
    );
    if !stopped {
        let _ = up.kill();
    }
    assert!(stopped, "sealbox up did not stop within 20 s of SIGTERM");
    assert!(up.wait().unwrap().success());
    let _: PathBuf = data;
}
