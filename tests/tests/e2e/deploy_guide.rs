//! docs/DEPLOY.md followed step by step on moto, with the AWS CLI v2 the guide is written for:
//! every `sh` block of the guide, in order, in one bash shell, with the `sealbox` binary. The shell
//! gets only what the guide's `sh emulator-setup` block tells a person rehearsing to set (the test
//! starts moto and the model itself, on free ports); everything else, the region included, the
//! guide must set. Blocks fenced `sh skip-on-emulator` are left out (what moto cannot do); blocks
//! fenced `sh emulator` are the guide's stand-ins for them; `sh repeat A-B` runs the blocks of
//! steps A to B again (the second buyer).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use sealbox_tests::aws_cli::{AwsCli, aws_bin, aws_v1_bin, workspace_root};
use sealbox_tests::aws_stack::serve_model;
use sealbox_tests::moto::Moto;
use sealbox_tests::sealbox_bin;

/// One fenced shell block of the guide.
#[derive(Debug, Clone)]
struct Block {
    /// The words after `sh` in the fence (`emulator`, `skip-on-emulator`, `emulator-setup`,
    /// `repeat A-B`, or none).
    marks: Vec<String>,
    /// The numbered step (`### N.`) the block is in, if any.
    step: Option<u32>,
    /// The line the block starts on (1-based), for messages.
    line: usize,
    code: String,
}

/// The ```` ```sh ```` blocks of a Markdown text; other fences are not shell.
fn shell_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut step = None;
    for (i, line) in markdown.lines().enumerate() {
        if open.is_none() {
            if let Some(heading) = line.strip_prefix("### ") {
                step = heading
                    .split_once(". ")
                    .and_then(|(n, _)| n.parse::<u32>().ok());
            } else if line.starts_with("## ") {
                step = None;
            }
        }
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) if info == "sh" || info.starts_with("sh ") => {
                open = Some(Block {
                    marks: info.split_whitespace().skip(1).map(str::to_owned).collect(),
                    step,
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

/// Whether the emulator runs a block where it stands.
fn runs_on_emulator(b: &Block) -> bool {
    match b
        .marks
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["emulator"] => true,
        ["skip-on-emulator"] | ["emulator-setup"] | ["repeat", _] => false,
        other => panic!("DEPLOY.md line {}: unknown marks {other:?}", b.line),
    }
}

/// The guide's script: the blocks an emulator runs, each announced, with `repeat A-B` replaced
/// by the runnable blocks of steps A to B.
fn script(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        if let ["repeat", range] = b.marks.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            let (from, to) = range
                .split_once('-')
                .and_then(|(a, z)| Some((a.parse::<u32>().ok()?, z.parse::<u32>().ok()?)))
                .unwrap_or_else(|| panic!("DEPLOY.md line {}: repeat {range}", b.line));
            let again: Vec<&Block> = blocks
                .iter()
                .filter(|r| r.step.is_some_and(|s| (from..=to).contains(&s)) && runs_on_emulator(r))
                .collect();
            assert!(
                !again.is_empty(),
                "DEPLOY.md line {}: no steps {range}",
                b.line
            );
            for r in again {
                out.push_str(&format!(
                    "echo '## DEPLOY.md line {} (again, line {})'\n",
                    r.line, b.line
                ));
                out.push_str(&r.code);
            }
        } else if runs_on_emulator(b) {
            out.push_str(&format!("echo '## DEPLOY.md line {}'\n", b.line));
            out.push_str(&b.code);
        }
    }
    out
}

/// The names a block exports (`export A=1 B=2`, `export PATH=...`).
fn exported(code: &str) -> BTreeSet<String> {
    code.split(['\n', ';', '&'])
        .filter_map(|part| part.trim().strip_prefix("export "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .take_while(|w| !w.starts_with('#'))
                .filter_map(|w| w.split_once('=').map(|(name, _)| name.to_owned()))
        })
        .collect()
}

#[test]
fn shell_blocks_are_found_with_their_marks_and_steps() {
    let md = "text\n```sh\na\nb\n```\n### 4. Four\n```json\n{}\n```\n```sh emulator\nc\n```\n## Other\n```sh repeat 4-4\n# again\n```\n";
    let blocks = shell_blocks(md);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(blocks[0].code, "a\nb\n");
    assert!(blocks[0].marks.is_empty());
    assert_eq!(blocks[0].step, None);
    assert_eq!(blocks[1].marks, ["emulator"]);
    assert_eq!(blocks[1].step, Some(4));
    assert_eq!(blocks[1].line, 10);
    assert_eq!(blocks[2].step, None);
    let run = script(&blocks);
    assert_eq!(
        run.matches("\nc\n").count(),
        2,
        "step 4 runs where it stands and again: {run}"
    );
}

#[test]
fn exports_are_read_off_a_block() {
    let code = "x &\nexport A=1 B=\"2\"   # why\nscripts/x && export PATH=$PWD/bin:$PATH\n";
    assert_eq!(
        exported(code).into_iter().collect::<Vec<_>>(),
        ["A", "B", "PATH"]
    );
}

/// A shell with nothing of this process's environment but what a clean machine has.
fn clean_shell(home: &Path, path: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", path)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn the_deploy_guide_runs_step_by_step_on_the_emulator_with_aws_cli_v2() {
    let guide = std::fs::read_to_string(workspace_root().join("docs/DEPLOY.md")).unwrap();
    // Adding a buyer must need nothing of the seller's stack: the guide never updates a stack.
    assert!(
        !guide.contains("update-stack") && !guide.contains("cloudformation deploy"),
        "the guide updates a stack"
    );
    let blocks = shell_blocks(&guide);
    let run = script(&blocks);
    let count = |mark: &str| {
        blocks
            .iter()
            .filter(|b| b.marks.first().map(String::as_str) == Some(mark))
            .count()
    };
    assert!(
        blocks.len() >= 20,
        "the guide has {} shell blocks",
        blocks.len()
    );
    let setup: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.marks == ["emulator-setup"])
        .collect();
    assert_eq!(setup.len(), 1, "one `sh emulator-setup` block");

    let aws = aws_bin();
    let version = Command::new(&aws).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    assert!(version.starts_with("aws-cli/2."), "{version}");

    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // The guide runs from a clone: the scripts and templates of this one.
    std::fs::create_dir_all(work.join("target")).unwrap();
    for d in ["scripts", "infra"] {
        std::os::unix::fs::symlink(workspace_root().join(d), work.join(d)).unwrap();
    }
    let (_model, model_url) = serve_model(&dir.path().join("model"), &[]);

    // What the setup block tells a person to set, with the test's ports; nothing else.
    let path = format!(
        "{}:{}:{}",
        aws.parent().unwrap().display(),
        sealbox_bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path.as_str()),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", model_url.as_str()),
        ("SKIP_BUILD", "1"),
        ("LAMBDA_DIR", "target/rehearsal"),
    ];
    assert_eq!(
        exported(&setup[0].code),
        env.iter()
            .map(|(k, _)| (*k).to_owned())
            .collect::<BTreeSet<_>>(),
        "the test sets what DEPLOY.md's setup block exports:\n{}",
        setup[0].code
    );

    let full = format!("trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{run}");
    let out = clean_shell(&home, &path)
        .args(["-c", &full])
        .current_dir(&work)
        .envs(env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: String = ["up-111122223333.log", "up-444455556666.log"]
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}",
                std::fs::read_to_string(work.join(f)).unwrap_or_default()
            )
        })
        .collect();
    assert!(
        out.status.success(),
        "docs/DEPLOY.md failed on the emulator ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n{logs}",
        out.status,
    );

    // What the guide's own commands do not check themselves: both buyers, in their own accounts,
    // got their results with tokens for the seller's product (not the templates' old default),
    // the second without any change to the seller's stack.
    let handover = std::fs::read_to_string(work.join("buyer-handover.env")).unwrap();
    assert!(
        handover.contains("SELLER_PRODUCT='acme-churn-model'\n"),
        "{handover}"
    );
    for buyer in ["111122223333", "444455556666"] {
        let result = work.join(format!("answers-{buyer}/results/flowers.out"));
        let text = std::fs::read_to_string(&result)
            .unwrap_or_else(|e| panic!("{}: {e}\n{stdout}", result.display()));
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            !work.join(format!("answers-{buyer}/rejected")).exists(),
            "{buyer} had a request rejected\n{stdout}"
        );
    }
    assert!(
        stdout.matches("\"event\":\"InferenceCompleted\"").count() >= 2,
        "each buyer's consumer queue got its completed notification:\n{stdout}"
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
        "docs/DEPLOY.md with {version}: {} shell blocks; ran {} ({} emulator stand-ins, steps 4-7 twice), skipped {}, setup done by the test",
        blocks.len(),
        blocks.len() - count("skip-on-emulator") - count("emulator-setup") - count("repeat"),
        count("emulator"),
        count("skip-on-emulator"),
    );
    println!("{stdout}");
}

/// The AWS CLI v1 reads its region from AWS_DEFAULT_REGION only: the guide's first block must
/// set it, or `aws sts` (and `aws sqs`, `aws sns`) refuse with "You must specify a region".
#[test]
fn the_guide_sets_the_region_the_aws_cli_v1_reads() {
    let guide = std::fs::read_to_string(workspace_root().join("docs/DEPLOY.md")).unwrap();
    let blocks = shell_blocks(&guide);
    let first = blocks.iter().find(|b| b.marks.is_empty()).unwrap();
    assert!(first.code.contains("set -euo pipefail"), "{}", first.code);
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let v1 = aws_v1_bin();
    let path = format!(
        "{}:{}",
        v1.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let derive = "ACCOUNT=$(aws sts get-caller-identity --query Account --output text)\nneed ACCOUNT\naws sns list-topics --output text\necho \"account $ACCOUNT\"\n";
    let shell = |script: String| {
        clean_shell(dir.path(), &path)
            .args(["-c", &script])
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .output()
            .unwrap()
    };
    let version = shell("aws --version 2>&1".into());
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    assert!(version.starts_with("aws-cli/1."), "{version}");

    let with = shell(format!("{}{derive}", first.code));
    let stdout = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success() && stdout.contains("account 123456789012"),
        "{version} after the guide's first block: {stdout}{}",
        String::from_utf8_lossy(&with.stderr)
    );
    // Without AWS_DEFAULT_REGION, v1 has no region, and `need` stops the guide.
    let without = first
        .code
        .replace("export AWS_DEFAULT_REGION=$AWS_REGION", "");
    let failed = shell(format!("{without}{derive}"));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success() && stderr.contains("You must specify a region"),
        "{version} with AWS_REGION alone: {stderr}"
    );
    println!("{version}: the guide's first block gives it a region (account 123456789012)");
}
