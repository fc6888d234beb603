//! The AWS CLI of the test venv (`.venv-test/bin/aws`, pinned in scripts/requirements-test.txt),
//! run against moto: the deploy tests drive CloudFormation with it, as docs/DEPLOY.md does.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::moto::Moto;

/// `aws` from the test venv, next to its Python.
pub fn aws_bin() -> PathBuf {
    let python = crate::python();
    let aws = python.with_file_name("aws");
    assert!(
        aws.is_file(),
        "the AWS CLI is missing at {}: run `./scripts/test`, which installs it (scripts/requirements-test.txt)",
        aws.display()
    );
    aws
}

/// The AWS CLI pointed at one moto server.
pub struct AwsCli {
    env: Vec<(String, String)>,
    endpoint: String,
}

impl AwsCli {
    /// A CLI whose every call goes to `moto`.
    pub fn new(moto: &Moto) -> AwsCli {
        AwsCli {
            env: moto.env(),
            endpoint: moto.endpoint.clone(),
        }
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
            // Also as a flag: the CLI v1 sends SQS calls to queue.amazonaws.com despite
            // AWS_ENDPOINT_URL.
            .args(["--endpoint-url", &self.endpoint])
            .args(args)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
pub const FUNCTIONS: [&str; 4] = ["ingest", "worker", "token-service", "rotate-keys"];

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
