//! A development stack on moto for the AWS end-to-end tests: moto server, the resources of
//! `sealbox aws bootstrap`, the seller's published keys in the outbox bucket, a granted buyer,
//! and the sample model answering the SageMaker Runtime API. Objects are written and read with
//! boto3 (scripts/boto_tool.py), a client sealbox did not write.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

use crate::moto::Moto;
use crate::{Daemon, granted_token, python, sealbox};

/// The buyer every AWS test submits as.
pub const BUYER: &str = "111122223333";
/// The endpoint name the stack's settings name (the sample model answers any).
pub const ENDPOINT: &str = "iris";

/// A running development stack on moto.
pub struct AwsStack {
    /// The emulator (killed on drop).
    pub moto: Moto,
    /// The seller's embedded data directory (keys and subscriptions).
    pub dir: tempfile::TempDir,
    /// Every variable a `sealbox` process or a Lambda function needs, AWS's and sealbox's.
    pub env: Vec<(String, String)>,
    /// The `SEALBOX_*` settings, by name.
    pub settings: BTreeMap<String, String>,
    /// A token of [`BUYER`].
    pub token: String,
    /// `sealbox model serve` (killed on drop).
    pub model: Daemon,
}

/// Where the seller's keys and subscriptions are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SellerSide {
    /// In the embedded data directory; the keys are published into the outbox bucket.
    Embedded,
    /// On AWS: ES256 keys in KMS, states and subscriptions in DynamoDB, the keys published by
    /// `sealbox seller … --backend aws` to the object of `aws bootstrap-seller`.
    Aws,
}

/// Runs `sealbox ARGS` in `dir` with `env`, asserting success; answers stdout.
fn ok(dir: &std::path::Path, env: &[(String, String)], args: &[&str]) -> String {
    let out = sealbox(dir)
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sealbox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl AwsStack {
    /// Starts moto, bootstraps stack `name`, publishes the keys, and serves the model with
    /// `model_args` (e.g. `--max-concurrency 1`).
    pub fn start(name: &str, model_args: &[&str]) -> AwsStack {
        AwsStack::start_with(name, model_args, SellerSide::Embedded)
    }

    /// [`AwsStack::start`] with the seller's side where `seller` says.
    pub fn start_with(name: &str, model_args: &[&str], seller: SellerSide) -> AwsStack {
        let moto = Moto::start();
        let dir = tempfile::tempdir().unwrap();
        let mut env = moto.env();
        let mut seller_settings: BTreeMap<String, String> = BTreeMap::new();
        let token = match seller {
            SellerSide::Embedded => {
                ok(dir.path(), &env, &["seller", "keys", "init"]);
                granted_token(dir.path(), BUYER)
            }
            SellerSide::Aws => {
                let made = ok(
                    dir.path(),
                    &env,
                    &[
                        "aws",
                        "bootstrap-seller",
                        "--name",
                        &format!("{name}-seller"),
                        "--json",
                    ],
                );
                seller_settings = serde_json::from_str(&made).unwrap();
                env.extend(seller_settings.iter().map(|(k, v)| (k.clone(), v.clone())));
                let aws = ["--backend", "aws"];
                let init = ["seller", "keys", "init", "--alg", "es256"];
                ok(dir.path(), &env, &[&init[..], &aws].concat());
                ok(
                    dir.path(),
                    &env,
                    &[&["seller", "grant", BUYER][..], &aws].concat(),
                );
                let token = ["seller", "token", "--buyer", BUYER];
                ok(dir.path(), &env, &[&token[..], &aws].concat())
                    .trim()
                    .to_owned()
            }
        };
        let out = sealbox(dir.path())
            .args(["aws", "bootstrap", "--name", name, "--json"])
            .envs(env.iter().cloned())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let made: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
        let outbox = made["SEALBOX_OUTBOX_BUCKET"].clone();
        let mut settings = made;
        settings.insert("SEALBOX_ENDPOINT_NAME".into(), ENDPOINT.into());
        // Embedded: the document is printed here and put into the outbox below.
        let jwks = match seller {
            SellerSide::Embedded => {
                settings.insert(
                    "SEALBOX_JWKS".into(),
                    format!("s3://{outbox}/seller/jwks.json"),
                );
                Some(ok(dir.path(), &env, &["seller", "keys", "jwks"]))
            }
            SellerSide::Aws => {
                let published = seller_settings["SEALBOX_JWKS_OBJECT"].clone();
                settings.insert("SEALBOX_JWKS".into(), published);
                settings.extend(seller_settings);
                None
            }
        };
        let (model, url) = serve_model(dir.path(), model_args);
        env.push(("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME".into(), url));
        env.extend(settings.iter().map(|(k, v)| (k.clone(), v.clone())));
        let stack = AwsStack {
            moto,
            dir,
            env,
            settings,
            token,
            model,
        };
        if let Some(doc) = jwks {
            stack.put(&outbox, &[("seller/jwks.json".into(), doc)]);
        }
        stack
    }

    /// Starts `sealbox up --backend aws` on the stack (with `extra` arguments) and waits for its
    /// ready line.
    pub fn up(&self, extra: &[&str]) -> Daemon {
        let args = [&["up", "--backend", "aws", "--log", "warn"][..], extra].concat();
        self.daemon(&args, "sealbox ready on AWS")
    }

    /// Starts `sealbox up` on the seller's data directory for its token service (the embedded
    /// pipeline beside it is unused), trusting moto as STS; answers it and the token URL.
    pub fn token_service(&self) -> (Daemon, String) {
        let daemon = self.daemon(&["up", "--log", "warn"], "sealbox ready");
        let url = std::fs::read_to_string(self.dir.path().join("token-service.url")).unwrap();
        (daemon, url.trim().to_owned())
    }

    /// Starts `sealbox ARGS` with the stack's environment and the seller's data directory, and
    /// waits for its first line, which must start with `ready`.
    pub fn daemon(&self, args: &[&str], ready: &str) -> Daemon {
        let mut child = self
            .sealbox()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let daemon = Daemon(child);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert!(line.starts_with(ready), "{line:?}");
        daemon
    }

    /// Credentials of a role session in `account` (`sts:AssumeRole` on moto, which needs no
    /// such role to exist): a caller whose `GetCallerIdentity` answers that account.
    pub fn assume_role(&self, account: &str) -> aws_credential_types::Credentials {
        let out = crate::aws_cli::AwsCli::new(&self.moto).json(&[
            "sts",
            "assume-role",
            "--role-arn",
            &format!("arn:aws:iam::{account}:role/buyer-app"),
            "--role-session-name",
            "buyer-app",
        ]);
        let c = &out["Credentials"];
        aws_credential_types::Credentials::new(
            c["AccessKeyId"].as_str().unwrap(),
            c["SecretAccessKey"].as_str().unwrap(),
            Some(c["SessionToken"].as_str().unwrap().to_owned()),
            None,
            "assume-role",
        )
    }

    /// The SDK configuration that reaches moto, for a test's own clients.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        self.moto.sdk_config().await
    }

    /// A setting, e.g. `SEALBOX_INBOX_BUCKET`.
    pub fn get(&self, name: &str) -> &str {
        &self.settings[name]
    }

    /// A `sealbox` command with the stack's environment and the seller's data directory.
    pub fn sealbox(&self) -> Command {
        let mut c = sealbox(self.dir.path());
        c.envs(self.env.iter().cloned());
        c
    }

    fn boto(&self, args: &[&str], stdin: Option<String>) -> Output {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/boto_tool.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .envs(self.moto.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "boto_tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Writes objects with boto3.
    pub fn put(&self, bucket: &str, objects: &[(String, String)]) {
        let lines: String = objects
            .iter()
            .map(|(k, b)| serde_json::json!({"key": k, "body": b}).to_string() + "\n")
            .collect();
        self.boto(&["put", bucket], Some(lines));
    }

    /// Writes objects with boto3 in a storage class (`GLACIER`: S3 then refuses GetObject with
    /// 403 `InvalidObjectState`, as for an object archived out of reach).
    pub fn put_in_class(&self, bucket: &str, class: &str, objects: &[(String, String)]) {
        let lines: String = objects
            .iter()
            .map(|(k, b)| {
                serde_json::json!({"key": k, "body": b, "storage_class": class}).to_string() + "\n"
            })
            .collect();
        self.boto(&["put", bucket], Some(lines));
    }

    /// Every object under `prefix` with its body (as text), read with boto3.
    pub fn bodies(&self, bucket: &str, prefix: &str) -> BTreeMap<String, String> {
        let out = self.boto(&["bodies", bucket, prefix], None);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["key"].as_str().unwrap().to_owned(),
                    v["body"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// An object's body, read with boto3.
    pub fn get_object(&self, bucket: &str, key: &str) -> String {
        let out = self.boto(&["get", bucket, key], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys under `prefix`, listed with boto3.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.boto(&["list", bucket, prefix], None);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A new queue subscribed to the topic (raw delivery, optional filter policy); its URL.
    pub fn subscribe(&self, queue: &str, filter: Option<&str>) -> String {
        let topic = self.get("SEALBOX_TOPIC_ARN").to_owned();
        let mut args = vec!["subscribe", topic.as_str(), queue];
        if let Some(f) = filter {
            args.push(f);
        }
        let out = self.boto(&args, None);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Every message of a queue, until it has been empty for `quiet_s` seconds.
    pub fn drain(&self, url: &str, quiet_s: u32) -> Vec<serde_json::Value> {
        let out = self.boto(&["drain", url, &quiet_s.to_string()], None);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A good request object of [`BUYER`] with id `id`.
    pub fn request(&self, id: &str) -> (String, String) {
        let body = serde_json::to_string(&sealbox::cases::text_request(
            id,
            Some(&self.token),
            sealbox::cases::SAMPLE_ROWS[0],
        ))
        .unwrap();
        (format!("{BUYER}/requests/{id}.json"), body)
    }

    /// `sealbox ARGS --backend aws` with the stack's environment, which must succeed; answers
    /// stdout.
    pub fn sealbox_aws(&self, args: &[&str]) -> String {
        ok(
            self.dir.path(),
            &self.env,
            &[args, &["--backend", "aws"]].concat(),
        )
    }

    /// The published keys document at `SEALBOX_JWKS` (an `s3://` location), read with boto3.
    pub fn published_keys(&self) -> String {
        let (bucket, key) = self
            .get("SEALBOX_JWKS")
            .strip_prefix("s3://")
            .and_then(|l| l.split_once('/'))
            .unwrap();
        self.get_object(bucket, key)
    }

    /// The ids of [`BUYER`]'s requests with an outcome of `kind` (`results`, `rejected`,
    /// `failed`) in the outbox.
    pub fn answered(&self, kind: &str) -> std::collections::BTreeSet<String> {
        self.list(
            self.get("SEALBOX_OUTBOX_BUCKET"),
            &format!("{BUYER}/{kind}/"),
        )
        .iter()
        // `<id>.json` for rejections and failures, `<id>.<extension of accept>` for results.
        .filter_map(|k| Some(k.rsplit('/').next()?.rsplit_once('.')?.0.to_owned()))
        .collect()
    }

    /// The request ids of `buyer` claimed in the stack's claims table, each with its owner.
    pub fn claims(&self, buyer: &str) -> BTreeMap<String, String> {
        let out = crate::aws_cli::AwsCli::new(&self.moto).json(&[
            "dynamodb",
            "scan",
            "--table-name",
            self.get("SEALBOX_CLAIMS_TABLE"),
        ]);
        out["Items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item["buyer"]["S"] == buyer)
            .map(|item| {
                (
                    item["request_id"]["S"].as_str().unwrap().to_owned(),
                    item["owner"]["S"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The kind of [`BUYER`]'s outcome of request `id` (`results`, `rejected` or `failed`),
    /// waiting up to a minute for it.
    pub fn outcome_of(&self, id: &str) -> String {
        let mut kind = None;
        let done = crate::wait_until(std::time::Duration::from_secs(60), || {
            kind = ["results", "rejected", "failed"]
                .into_iter()
                .find(|k| self.answered(k).contains(id));
            kind.is_some()
        });
        assert!(
            done,
            "no outcome for {id}; the outbox holds {:?}",
            self.list(self.get("SEALBOX_OUTBOX_BUCKET"), "")
        );
        kind.unwrap_or_default().to_owned()
    }

    /// The Lambda binary `name` (see [`crate::lambda_bin`]) under the Runtime API emulator,
    /// with the stack's environment and `extra`.
    pub async fn lambda(
        &self,
        name: &str,
        extra: &[(&str, &str)],
    ) -> crate::lambda_emulator::LambdaEmulator {
        let bin = crate::lambda_bin(name);
        let mut env = self.env.clone();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let f = crate::lambda_emulator::LambdaEmulator::start(
            &bin,
            &env,
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
        let init = f.ready().await.unwrap();
        eprintln!(
            "{name}: init {:.1} ms, peak RSS {:?} KiB",
            init.as_secs_f64() * 1e3,
            f.peak_rss_kib()
        );
        f
    }
}

/// Serves the sample model as the SageMaker Runtime API (`sealbox model serve --port 0` with
/// `args`); returns the server and its URL, for `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`.
pub fn serve_model(data_dir: &std::path::Path, args: &[&str]) -> (Daemon, String) {
    let mut child = sealbox(data_dir)
        .args(["model", "serve", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let model = Daemon(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (model, url)
}
