//! docs/DEPLOY.md followed step by step on moto: every `sh` block of the guide, in order, in one
//! bash shell, with the AWS CLI of the test venv and the `sealbox` binary. Blocks fenced
//! `sh skip-on-emulator` are left out (what moto cannot do); blocks fenced `sh emulator` are the
//! guide's stand-ins for them. The zips are placeholders (`SKIP_BUILD=1`): moto runs no function,
//! and `sealbox up --backend aws` runs the same handlers in their place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use sealbox_tests::aws_cli::{AwsCli, aws_bin, placeholder_zips, workspace_root};
use sealbox_tests::aws_stack::serve_model;
use sealbox_tests::moto::Moto;
use sealbox_tests::{python, sealbox_bin};

/// One fenced shell block of the guide.
#[derive(Debug)]
struct Block {
    /// The words after `sh` in the fence (`emulator`, `skip-on-emulator`, or none).
    marks: Vec<String>,
    /// The line the block starts on (1-based), for messages.
    line: usize,
    code: String,
}

/// The ```` ```sh ```` blocks of a Markdown text; other fences are not shell.
fn shell_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) if info == "sh" || info.starts_with("sh ") => {
                open = Some(Block {
                    marks: info.split_whitespace().skip(1).map(str::to_owned).collect(),
                    line: i + 1,
                    code: String::new(),
                });
            }
            (None, Some(info)) if !info.is_empty() => {
                assert!(
                    !info.starts_with("bash"),
                    "line {}: fence shell blocks as `sh`",
                    i + 1
                );
            }
            (Some(_), Some("")) => blocks.push(open.take().unwrap()),
            (Some(block), _) => {
                block.code.push_str(line);
                block.code.push('\n');
            }
            _ => {}
        }
    }
    assert!(open.is_none(), "an unclosed fence");
    blocks
}

#[test]
fn shell_blocks_are_found_with_their_marks() {
    let md = "text\n```sh\na\nb\n```\n```json\n{}\n```\n```sh emulator\nc\n```\n";
    let blocks = shell_blocks(md);
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert_eq!(blocks[0].code, "a\nb\n");
    assert!(blocks[0].marks.is_empty());
    assert_eq!(blocks[1].marks, ["emulator"]);
    assert_eq!(blocks[1].line, 9);
}

/// The guide's script: the blocks an emulator runs, each announced.
fn script(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        let marks: Vec<&str> = b.marks.iter().map(String::as_str).collect();
        match marks.as_slice() {
            [] | ["emulator"] => {
                out.push_str(&format!("echo '## DEPLOY.md line {}'\n", b.line));
                out.push_str(&b.code);
            }
            ["skip-on-emulator"] => {}
            other => panic!("DEPLOY.md line {}: unknown marks {other:?}", b.line),
        }
    }
    out
}

#[test]
fn the_deploy_guide_runs_step_by_step_on_the_emulator() {
    let guide = std::fs::read_to_string(workspace_root().join("docs/DEPLOY.md")).unwrap();
    let blocks = shell_blocks(&guide);
    let run = script(&blocks);
    let skipped = blocks
        .iter()
        .filter(|b| b.marks == ["skip-on-emulator"])
        .count();
    let stand_ins = blocks.iter().filter(|b| b.marks == ["emulator"]).count();
    assert!(
        blocks.len() >= 15,
        "the guide has {} shell blocks",
        blocks.len()
    );

    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    // The guide runs from a clone: the scripts and templates of this one, placeholder zips where
    // `scripts/package` would build them.
    std::fs::create_dir_all(work.join("target/lambda")).unwrap();
    for d in ["scripts", "infra"] {
        std::os::unix::fs::symlink(workspace_root().join(d), work.join(d)).unwrap();
    }
    placeholder_zips(&work.join("target/lambda"));
    let (_model, model_url) = serve_model(&dir.path().join("model"), &[]);

    // `aws` is the venv's CLI with moto's endpoint as a flag: the CLI v1 ignores
    // AWS_ENDPOINT_URL for SQS. `python3` is the venv's (the guide's one-liners need no more).
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("aws");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {:?} --endpoint-url {:?} \"$@\"\n",
            aws_bin(),
            moto.endpoint
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    let path = format!(
        "{}:{}:{}:{}",
        bin.display(),
        sealbox_bin().parent().unwrap().display(),
        python().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let full = format!(
        "set -euo pipefail\n\
         trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n\
         {run}"
    );
    let out = Command::new("bash")
        .args(["-c", &full])
        .current_dir(&work)
        .envs(moto.env())
        .env("PATH", path)
        .env("SKIP_BUILD", "1")
        .env("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", &model_url)
        .env("SEALBOX_LOG", "warn")
        .env_remove("SEALBOX_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "docs/DEPLOY.md failed on the emulator ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- sealbox up\n{}",
        out.status,
        std::fs::read_to_string(work.join("up.log")).unwrap_or_default()
    );

    // What the guide's own commands do not check themselves.
    let results = std::fs::read_dir(work.join("answers/results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<Vec<_>>();
    assert!(
        results.iter().any(|f| f.starts_with("flowers")),
        "fetched results: {results:?}"
    );
    assert!(
        stdout.contains("InferenceCompleted"),
        "the consumer queue got the completed notification:\n{stdout}"
    );
    // The signing keys (made by `keys init`, outside the stack) are all scheduled for deletion.
    let cli = AwsCli::new(&moto);
    let tagged = cli.json(&[
        "resourcegroupstaggingapi",
        "get-resources",
        "--resource-type-filters",
        "kms:key",
        "--tag-filters",
        "Key=sealbox:keys-table,Values=sealbox-seller-keys",
    ]);
    let keys = tagged["ResourceTagMappingList"].as_array().unwrap();
    assert_eq!(
        keys.len(),
        2,
        "keys init made a current and a next key: {tagged:#}"
    );
    for k in keys {
        let arn = k["ResourceARN"].as_str().unwrap();
        let meta = cli.json(&["kms", "describe-key", "--key-id", arn]);
        assert_eq!(
            meta["KeyMetadata"]["KeyState"], "PendingDeletion",
            "{meta:#}\n{stderr}"
        );
    }
    println!(
        "docs/DEPLOY.md: {} shell blocks; ran {} ({stand_ins} emulator stand-ins), skipped {skipped}",
        blocks.len(),
        blocks.len() - skipped
    );
    println!("{stdout}");
}
