//! The AWS CLI the deploy tests drive moto with, as docs/DEPLOY.md does: v2 from `.awscli-v2/`
//! (`scripts/awscli-v2` installs it from npm; PyPI's `awscli` is v1), and v1 from the test venv
//! (`.venv-test/bin/aws`, scripts/requirements-test.txt) where a test needs what v1 does.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::moto::Moto;

/// The AWS CLI v2, `.awscli-v2/bin/aws` in the workspace.
pub fn aws_bin() -> PathBuf {
    let aws = workspace_root().join(".awscli-v2/bin/aws");
    assert!(
        aws.is_file(),
        "the AWS CLI v2 is missing at {}: run `./scripts/test` or `scripts/awscli-v2`, which install it",
        aws.display()
    );
    aws
}

/// The AWS CLI v1 of the test venv, next to its Python.
pub fn aws_v1_bin() -> PathBuf {
    let aws = crate::python().with_file_name("aws");
    assert!(
        aws.is_file(),
        "the AWS CLI v1 is missing at {}: run `./scripts/test`, which installs it (scripts/requirements-test.txt)",
        aws.display()
    );
    aws
}

/// The AWS CLI v2 pointed at one moto server (by `AWS_ENDPOINT_URL`, which v2 honours for every
/// service).
pub struct AwsCli {
    env: Vec<(String, String)>,
}

impl AwsCli {
    /// A CLI whose every call goes to `moto`.
    pub fn new(moto: &Moto) -> AwsCli {
        AwsCli { env: moto.env() }
    }

    /// Runs `aws ARGS --output json` and returns its JSON (`null` for no output); panics with
    /// the CLI's error when it fails.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args, &["--output", "json"]);
        if out.trim().is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("aws {args:?}: not JSON ({e}): {out}"))
    }

    /// Runs `aws ARGS` and returns its standard output; panics with the CLI's error when it fails.
    pub fn text(&self, args: &[&str]) -> String {
        self.run(args, &[])
    }

    fn run(&self, args: &[&str], extra: &[&str]) -> String {
        let out = Command::new(aws_bin())
            .args(args)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_PAGER", "")
            .output()
            .unwrap_or_else(|e| panic!("running aws {args:?}: {e}"));
        assert!(
            out.status.success(),
            "aws {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The Lambda functions `scripts/package` packages.
pub const FUNCTIONS: [&str; 5] = [
    "ingest",
    "worker",
    "token-service",
    "rotate-keys",
    "marketplace-events",
];

/// Writes a placeholder `NAME/bootstrap.zip` under `lambda_dir` for each function, for
/// `SKIP_BUILD=1 LAMBDA_DIR=... scripts/package`: moto stores a function's code and runs none.
pub fn placeholder_zips(lambda_dir: &Path) {
    for name in FUNCTIONS {
        let zip = lambda_dir.join(name).join("bootstrap.zip");
        std::fs::create_dir_all(zip.parent().unwrap()).unwrap();
        let code = format!(
            "import zipfile; z = zipfile.ZipFile({:?}, 'w'); z.writestr('bootstrap', 'placeholder {name}'); z.close()",
            zip.to_str().unwrap()
        );
        let status = Command::new(crate::python())
            .args(["-c", &code])
            .status()
            .unwrap();
        assert!(status.success(), "writing {}", zip.display());
    }
}

/// The workspace root, where `scripts/`, `infra/` and `docs/` are.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}
