//! Token issue latency, signing through KMS (on the moto emulator) against signing locally:
//! `cargo bench -p sealbox-tests --bench token_issue [-- --json]`.
//!
//! Every path issues ES256 tokens (and the local ones EdDSA too, for reference) for one buyer,
//! product and grant, one call at a time, and times each call (p50, p90, p99, mean, and
//! tokens/s over the whole run):
//!
//! - **local**: `TokenIssuer::issue` (jsonwebtoken) on a generated keyset, the issuer made once;
//! - **file store**: `token::issue_through` with a `FileKeyStore` in a temporary folder (aws-lc-rs
//!   signs), the signing path of `sealbox seller token` on the local backend, with the keyset
//!   loaded once;
//! - **KMS**: `token::issue_through` with a `KmsKeyStore` on moto (`create_table`, then
//!   `init(issuer, ES256)`: moto signs only with ECC_NIST_P256 keys), the keyset loaded once, as
//!   a token service signing through KMS would keep it. Run once by one caller and once by 16
//!   concurrent callers (tokens/s over the wall time). The SDK clients count their calls: one
//!   KMS `Sign` per token and nothing else, or the run fails;
//! - **KMS `Sign` alone**: the SDK's `Sign` of a token-sized message, the round trip without
//!   sealbox around it.
//!
//! The local paths take turns (10 in a full run), so that a change of background load weighs on
//! all of them alike. For the KMS rows the CPU time of this process and of moto per token is
//! printed too (from `/proc`), to show which side the time went to.
//!
//! One token of each path is checked with `Verifier::from_keyset`, so a path that made broken
//! tokens fails the run rather than being timed.
//!
//! moto is a local Python process: the KMS rows measure sealbox, the AWS SDK and HTTP on
//! loopback plus moto's own Python, not the latency of AWS KMS.
//!
//! `cargo bench` passes `--bench`: a full run of `SEALBOX_BENCH_TOKENS` tokens a local path
//! (default 2,000) and a quarter of that through KMS (default 500). Without it (`cargo test
//! --all-targets`) this is a smoke run of a handful of tokens a path whose numbers mean nothing,
//! but it still starts moto and takes every path. moto comes from the test Python
//! (`$SEALBOX_TEST_PYTHON`, else `.venv-test/bin/python`); without it the run panics, saying how
//! to install it, in CI and out of it. `--json` (or `SEALBOX_BENCH_JSON=1`) prints one JSON
//! object instead of the table.

use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use sealbox_authz::key_store::file::FileKeyStore;
use sealbox_authz::token::issue_through;
use sealbox_authz::{KeyAlg, KeyStore as _, Keyset, TokenIssuer, Verifier, VerifierConfig};
use sealbox_aws::sdk::CallCounter;
use sealbox_aws::seller::SellerClients;
use sealbox_aws::seller::kms_keys::{KmsKeyStore, create_table};
use sealbox_tests::moto::Moto;
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ISSUER: &str = "bench-seller";
const PRODUCT: &str = "bench-product";
const BUYER: &str = "111122223333";
const GRANT: &str = "g-bench";
const TTL: Duration = Duration::from_secs(3600);
const TABLE: &str = "bench-keys";
/// Concurrent callers of the KMS path's second run.
const CALLERS: usize = 16;
/// Tokens a local path issues in a full run; the KMS paths issue a quarter of it.
const DEFAULT_TOKENS: usize = 2000;
const SMOKE_LOCAL: usize = 8;
const SMOKE_KMS: usize = 4;
/// Turns the local paths take in a full run (see [`local_paths`]).
const ROUNDS: usize = 10;

struct Opts {
    full: bool,
    json: bool,
    local: usize,
    kms: usize,
}

impl Opts {
    fn from_env() -> Result<Opts, BoxError> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--bench");
        let json = args.iter().any(|a| a == "--json")
            || std::env::var("SEALBOX_BENCH_JSON").is_ok_and(|v| !v.is_empty() && v != "0");
        let (local, kms) = if full {
            let n = match std::env::var("SEALBOX_BENCH_TOKENS") {
                Ok(s) => match s.parse::<usize>() {
                    Ok(n) if n >= 4 => n,
                    _ => {
                        return Err(
                            format!("SEALBOX_BENCH_TOKENS={s:?} is not a number ≥ 4").into()
                        );
                    }
                },
                Err(_) => DEFAULT_TOKENS,
            };
            (n, n / 4)
        } else {
            (SMOKE_LOCAL, SMOKE_KMS)
        };
        Ok(Opts {
            full,
            json,
            local,
            kms,
        })
    }

    /// Calls before a timed run: the first calls set up connections and caches.
    fn warm_up(&self, kms: bool) -> usize {
        match (self.full, kms) {
            (false, _) => 1,
            (true, false) => 100,
            (true, true) => 20,
        }
    }
}

/// One timed run: each call's latency, the run's wall time, and its last token.
struct Run {
    latencies: Vec<Duration>,
    wall: Duration,
    token: String,
}

impl Run {
    /// Adds a later turn of the same path.
    fn append(&mut self, turn: Run) {
        self.latencies.extend(turn.latencies);
        self.wall += turn.wall;
        self.token = turn.token;
    }

    fn stats(&self) -> Value {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        // Nearest rank: the smallest latency at least `p` of the calls did not exceed.
        let pct = |p: f64| {
            let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted.get(rank - 1).copied().map_or(f64::NAN, us)
        };
        let sum: Duration = sorted.iter().sum();
        json!({
            "tokens": sorted.len(),
            "p50_us": pct(0.50),
            "p90_us": pct(0.90),
            "p99_us": pct(0.99),
            "mean_us": us(sum) / sorted.len() as f64,
            "tokens_per_second": sorted.len() as f64 / self.wall.as_secs_f64(),
        })
    }
}

/// Calls `issue` `warm_up` times untimed, then `n` times, timing each call.
async fn sequential<F, Fut>(n: usize, warm_up: usize, mut issue: F) -> Result<Run, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<String, BoxError>>,
{
    for _ in 0..warm_up {
        black_box(issue().await?);
    }
    let mut latencies = Vec::with_capacity(n);
    let mut token = String::new();
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        token = issue().await?;
        latencies.push(t.elapsed());
        black_box(&token);
    }
    Ok(Run {
        latencies,
        wall: start.elapsed(),
        token,
    })
}

/// `n` tokens through KMS, taken by [`CALLERS`] tasks at once, each timing its own calls.
async fn concurrent(
    store: Arc<KmsKeyStore>,
    keyset: Arc<Keyset>,
    n: usize,
) -> Result<Run, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut callers = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..CALLERS {
        let (store, keyset, next) = (store.clone(), keyset.clone(), next.clone());
        callers.spawn(async move {
            let mut latencies = Vec::new();
            let mut token = String::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                token = issue_through(store.as_ref(), &keyset, BUYER, PRODUCT, GRANT, TTL).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, BoxError>((latencies, token))
        });
    }
    let mut run = Run {
        latencies: Vec::with_capacity(n),
        wall: Duration::ZERO,
        token: String::new(),
    };
    while let Some(joined) = callers.join_next().await {
        let (latencies, token) = joined??;
        run.latencies.extend(latencies);
        if !token.is_empty() {
            run.token = token;
        }
    }
    run.wall = start.elapsed();
    Ok(run)
}

/// Fails unless `token` verifies against `keyset` for the bench's buyer, product and grant.
fn check(path: &str, keyset: &Keyset, token: &str) -> Result<(), BoxError> {
    let verifier = Verifier::from_keyset(VerifierConfig::new(ISSUER, PRODUCT), keyset)?;
    let claims = verifier
        .verify(token, BUYER)
        .map_err(|e| format!("{path}: a token it issued was refused: {e}"))?;
    if claims.sub != BUYER || claims.aud != PRODUCT || claims.grant != GRANT {
        return Err(format!(
            "{path}: the token verified with sub {:?}, aud {:?}, grant {:?}",
            claims.sub, claims.aud, claims.grant
        )
        .into());
    }
    Ok(())
}

fn row(path: &str, alg: KeyAlg, callers: usize, run: &Run) -> Value {
    let mut r = run.stats();
    r["path"] = json!(path);
    r["alg"] = json!(alg.as_str());
    r["callers"] = json!(callers);
    r
}

/// The calls the counter saw since `before`, by operation.
fn calls_since(counter: &CallCounter, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    counter
        .snapshot()
        .into_iter()
        .map(|(op, n)| (op.clone(), n - before.get(&op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Adds the AWS calls a KMS run made to its row; fails unless they are one `Sign` a token.
fn with_calls(
    mut r: Value,
    calls: &BTreeMap<String, u64>,
    tokens: usize,
) -> Result<Value, BoxError> {
    let signs: u64 = calls
        .iter()
        .filter(|(op, _)| op.ends_with(".Sign"))
        .map(|(_, n)| n)
        .sum();
    let all: u64 = calls.values().sum();
    if signs != tokens as u64 || all != signs {
        return Err(format!("{tokens} tokens made these AWS calls: {calls:?}").into());
    }
    r["kms_sign_calls_per_token"] = json!(signs as f64 / tokens as f64);
    r["aws_calls"] = json!(calls);
    Ok(r)
}

/// A local way to sign, with the keyset it signs for.
enum Local {
    /// `TokenIssuer::issue`, the issuer made once.
    Issuer(TokenIssuer, Keyset),
    /// `issue_through` a keyset file.
    Store(FileKeyStore, Keyset),
}

impl Local {
    async fn issue(&self) -> Result<String, BoxError> {
        match self {
            Local::Issuer(issuer, _) => Ok(issuer.issue(BUYER, PRODUCT, GRANT, TTL)?),
            Local::Store(store, keyset) => {
                Ok(issue_through(store, keyset, BUYER, PRODUCT, GRANT, TTL).await?)
            }
        }
    }

    fn keyset(&self) -> &Keyset {
        match self {
            Local::Issuer(_, keyset) | Local::Store(_, keyset) => keyset,
        }
    }
}

/// The local paths, run in turns ([`ROUNDS`] in a full run, each path a tenth of its tokens a
/// turn), so that a burst of background load weighs on all of them alike.
async fn local_paths(opts: &Opts) -> Result<Vec<Value>, BoxError> {
    let mut paths = Vec::new();
    // The keyset files' folders, removed at the end.
    let mut dirs = Vec::new();
    for alg in [KeyAlg::ES256, KeyAlg::EdDSA] {
        let keyset = Keyset::generate(ISSUER, alg)?;
        let issuer = TokenIssuer::new(&keyset)?;
        paths.push((
            "local: TokenIssuer::issue",
            alg,
            Local::Issuer(issuer, keyset),
        ));
        let dir = tempfile::tempdir()?;
        let store = FileKeyStore::new(dir.path().join("keyset.json"));
        let keyset = store.init(ISSUER, alg).await?;
        dirs.push(dir);
        paths.push((
            "local: issue_through(FileKeyStore)",
            alg,
            Local::Store(store, keyset),
        ));
    }
    let rounds = if opts.full { ROUNDS } else { 1 };
    let mut runs: Vec<Option<Run>> = paths.iter().map(|_| None).collect();
    for round in 0..rounds {
        // The last turn takes what the division left over.
        let n = opts.local / rounds
            + if round + 1 == rounds {
                opts.local % rounds
            } else {
                0
            };
        for ((_, _, path), run) in paths.iter().zip(&mut runs) {
            let warm_up = if round == 0 {
                opts.warm_up(false)
            } else {
                opts.warm_up(false) / 10
            };
            let turn = sequential(n, warm_up, || path.issue()).await?;
            match run {
                Some(run) => run.append(turn),
                None => *run = Some(turn),
            }
        }
    }
    let mut rows = Vec::new();
    for ((name, alg, path), run) in paths.iter().zip(runs) {
        let run = run.ok_or("a local path was not run")?;
        check(name, path.keyset(), &run.token)?;
        rows.push(row(name, *alg, 1, &run));
    }
    Ok(rows)
}

async fn kms_paths(moto: &Moto, opts: &Opts) -> Result<Vec<Value>, BoxError> {
    let config = moto.sdk_config().await;
    let seller = SellerClients::new(&config);
    let counter = CallCounter::default();
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(&config)
            .interceptor(counter.clone())
            .build(),
    );
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(counter.clone())
            .build(),
    );
    create_table(&seller.dynamodb, TABLE).await?;
    let store = Arc::new(KmsKeyStore::new(kms.clone(), dynamodb, TABLE));
    store.init(ISSUER, KeyAlg::ES256).await?;
    // Loaded once, as a token service would keep it: no DynamoDB read per token.
    let keyset = Arc::new(store.load().await?);
    let alg = KeyAlg::ES256;
    let mut rows = Vec::new();
    let cpu = Cpu::new();

    let (s, k) = (store.as_ref(), keyset.as_ref());
    let issue = move || async move { Ok(issue_through(s, k, BUYER, PRODUCT, GRANT, TTL).await?) };
    for _ in 0..opts.warm_up(true) {
        black_box(issue().await?);
    }
    let before = counter.snapshot();
    let cpu_before = cpu.now();
    let run = sequential(opts.kms, 0, issue).await?;
    let r = cpu.since(
        cpu_before,
        row("KMS on moto: issue_through(KmsKeyStore)", alg, 1, &run),
    );
    check("issue_through KmsKeyStore", &keyset, &run.token)?;
    let calls = calls_since(&counter, &before);
    rows.push(with_calls(r, &calls, opts.kms)?);

    let n = opts.kms.max(CALLERS);
    // Warm-up: the pool opens a connection for each caller.
    concurrent(
        store.clone(),
        keyset.clone(),
        CALLERS * opts.warm_up(true).min(2),
    )
    .await?;
    let before = counter.snapshot();
    let cpu_before = cpu.now();
    let run = concurrent(store.clone(), keyset.clone(), n).await?;
    let r = cpu.since(
        cpu_before,
        row(
            "KMS on moto: issue_through(KmsKeyStore)",
            alg,
            CALLERS,
            &run,
        ),
    );
    check("issue_through KmsKeyStore, concurrent", &keyset, &run.token)?;
    let calls = calls_since(&counter, &before);
    rows.push(with_calls(r, &calls, n)?);

    // The round trip alone: the SDK's Sign of a message the size of a token's signing input.
    let key = keyset.current()?;
    let key_id = key
        .kms_key_id
        .clone()
        .ok_or("the current key has no KMS key id")?;
    let input = run
        .token
        .rsplit_once('.')
        .map(|(input, _)| input.as_bytes().to_vec())
        .ok_or("a token without a signature")?;
    let (kms, key_id, input) = (&kms, key_id.as_str(), input.as_slice());
    let sign = move || async move {
        let signed = kms
            .sign()
            .key_id(key_id)
            .message(Blob::new(input))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await?;
        let der = signed.signature.ok_or("KMS Sign answered no signature")?;
        Ok::<_, BoxError>(format!("{} bytes", der.as_ref().len()))
    };
    for _ in 0..opts.warm_up(true) {
        black_box(sign().await?);
    }
    let cpu_before = cpu.now();
    let run = sequential(opts.kms, 0, sign).await?;
    rows.push(cpu.since(cpu_before, row("KMS on moto: SDK Sign alone", alg, 1, &run)));
    Ok(rows)
}

/// CPU time of this process and of its moto server, from `/proc` (Linux), to show which side a
/// KMS run spent its time on.
struct Cpu {
    moto_pid: Option<u32>,
    tick: Duration,
}

impl Cpu {
    fn new() -> Cpu {
        let ticks_per_sec = output_of("getconf", &["CLK_TCK"])
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100);
        Cpu {
            moto_pid: moto_pid(),
            tick: Duration::from_secs(1) / ticks_per_sec,
        }
    }

    /// (this process, moto) CPU time now.
    fn now(&self) -> (Option<Duration>, Option<Duration>) {
        let moto = self.moto_pid.map(|p| p.to_string());
        (
            cpu_ticks("self").map(|t| self.tick * t),
            moto.as_deref().and_then(cpu_ticks).map(|t| self.tick * t),
        )
    }

    /// `row` with the CPU time each side used per token since `before`.
    fn since(&self, before: (Option<Duration>, Option<Duration>), mut row: Value) -> Value {
        let after = self.now();
        let tokens = row["tokens"].as_f64().unwrap_or(f64::NAN);
        let per_token = |b: Option<Duration>, a: Option<Duration>| match (b, a) {
            (Some(b), Some(a)) => json!(a.saturating_sub(b).as_secs_f64() * 1e6 / tokens),
            _ => Value::Null,
        };
        row["bench_cpu_us_per_token"] = per_token(before.0, after.0);
        row["moto_cpu_us_per_token"] = per_token(before.1, after.1);
        row
    }
}

/// User and system clock ticks of process `pid` (`self` for this one).
fn cpu_ticks(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, ppid, ..., utime (14th), stime (15th).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u32 = fields.get(11)?.parse().ok()?;
    let stime: u32 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The `moto_server` this process started: a child of it whose command line names moto_server.
fn moto_pid() -> Option<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (ppid == me && String::from_utf8_lossy(&cmdline).contains("moto_server")).then_some(pid)
    })
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The first line a command prints, or `None` if it cannot run.
fn output_of(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim().to_owned();
    (out.status.success() && !line.is_empty()).then_some(line)
}

fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "nproc": output_of("nproc", &[]).unwrap_or_else(|| "?".into()),
        "uname_m": output_of("uname", &["-m"]).unwrap_or_else(|| std::env::consts::ARCH.into()),
        "cpu_model": model,
        "kernel": kernel.trim(),
    })
}

/// `version` of package `name` in the workspace's Cargo.lock.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == format!("name = \"{name}\"") {
            let v = lines
                .next()?
                .strip_prefix("version = \"")?
                .strip_suffix('"')?;
            return Some(v.to_owned());
        }
    }
    None
}

fn versions() -> Value {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap_or_default();
    let mut v = json!({});
    for name in ["aws-sdk-kms", "aws-lc-rs", "jsonwebtoken"] {
        v[name] = json!(locked_version(&lock, name).unwrap_or_else(|| "unknown".into()));
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    v["rustc"] = json!(output_of(rustc, &["--version"]));
    v["moto"] = json!(output_of(
        sealbox_tests::python(),
        &["-c", "import moto; print(moto.__version__)"]
    ));
    v["python"] = json!(output_of(sealbox_tests::python(), &["--version"]));
    v
}

const MOTO_NOTE: &str = "moto's KMS is a local Python process: the KMS rows are sealbox + AWS SDK + HTTP on \
     loopback + moto's Python, not AWS KMS latency. Each token is one KMS Sign call (counted \
     above); on AWS add the round trip to the regional KMS endpoint, KMS's own signing time, \
     and the account's per-region request quota for ECC Sign (docs/BENCHMARKS.md).";

fn print_table(report: &Value) {
    let m = &report["machine"];
    let v = &report["versions"];
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    println!(
        "command: {} (run by `{}`)",
        s(&report["command"]),
        s(&report["cargo_command"])
    );
    println!(
        "machine: nproc {}, {} ({}), Linux {}; load average {} before, {} after",
        s(&m["nproc"]),
        s(&m["uname_m"]),
        s(&m["cpu_model"]),
        s(&m["kernel"]),
        s(&m["loadavg_before"]),
        s(&m["loadavg_after"]),
    );
    println!(
        "versions: aws-sdk-kms {}, aws-lc-rs {}, jsonwebtoken {}, {}; moto {}, {}",
        s(&v["aws-sdk-kms"]),
        s(&v["aws-lc-rs"]),
        s(&v["jsonwebtoken"]),
        s(&v["rustc"]),
        s(&v["moto"]),
        s(&v["python"]),
    );
    if report["smoke"] == true {
        println!(
            "smoke run without --bench: these numbers mean nothing; use `cargo bench -p sealbox-tests --bench token_issue`"
        );
    }
    println!();
    println!(
        "| path | alg | callers | tokens | p50 µs | p90 µs | p99 µs | mean µs | tokens/s | KMS Sign calls/token |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let num = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    for r in report["results"].as_array().into_iter().flatten() {
        let signs = r["kms_sign_calls_per_token"]
            .as_f64()
            .map_or_else(|| "-".into(), |x| format!("{x:.2}"));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s(&r["path"]),
            s(&r["alg"]),
            r["callers"],
            r["tokens"],
            micros(num(r, "p50_us")),
            micros(num(r, "p90_us")),
            micros(num(r, "p99_us")),
            micros(num(r, "mean_us")),
            thousands(num(r, "tokens_per_second")),
            signs,
        );
    }
    println!();
    for r in report["results"].as_array().into_iter().flatten() {
        if r.get("moto_cpu_us_per_token").is_some() {
            println!(
                "{}, {} caller(s): CPU a token: moto {} µs, this process {} µs",
                s(&r["path"]),
                r["callers"],
                micros(num(r, "moto_cpu_us_per_token")),
                micros(num(r, "bench_cpu_us_per_token")),
            );
        }
    }
    println!();
    println!("{MOTO_NOTE}");
}

/// Microseconds: one decimal below 1,000, whole and grouped above.
fn micros(x: f64) -> String {
    if x.is_finite() && x < 1000.0 {
        format!("{x:.1}")
    } else {
        thousands(x)
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", x.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() -> Result<(), BoxError> {
    let opts = Opts::from_env()?;
    let load_before = loadavg();
    // Panics, saying how to install it, if the test Python or moto is missing.
    let moto = Moto::start();
    let runtime = tokio::runtime::Runtime::new()?;
    let results = runtime.block_on(async {
        let mut results = Vec::new();
        results.extend(local_paths(&opts).await?);
        results.extend(kms_paths(&moto, &opts).await?);
        Ok::<_, BoxError>(results)
    })?;
    drop(runtime);
    drop(moto);
    let mut machine = machine();
    machine["loadavg_before"] = json!(load_before);
    machine["loadavg_after"] = json!(loadavg());
    let report = json!({
        "smoke": !opts.full,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "cargo_command": "cargo bench -p sealbox-tests --bench token_issue",
        "tokens_local": opts.local,
        "tokens_kms": opts.kms,
        "machine": machine,
        "versions": versions(),
        "results": results,
        "note": MOTO_NOTE,
    });
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}
