//! Token verification rates: `cargo bench -p sealbox-authz --bench verify [-- --json]`.
//!
//! For EdDSA (Ed25519) and ES256 (P-256) it measures, each for `SEALBOX_BENCH_SECS` seconds
//! (default 2) in all, taken in 10 interleaved turns so that a change of background load weighs
//! on every measurement alike:
//!
//! - **raw**: aws-lc-rs `UnparsedPublicKey::verify` of a token's signature over its signing
//!   input, with the key's public bytes: the signature alone, nothing of JWT around it;
//! - **uncached**: `Verifier::verify` of tokens that verifier has never seen (a pool of distinct
//!   tokens, and a fresh verifier, made outside the timed sections, whenever the pool is used up);
//! - **cached**: `Verifier::verify` of one token again and again, after a first verify;
//! - **PyJWT**: `scripts/pyjwt_tool.py bench` with the test Python (`$SEALBOX_TEST_PYTHON`, else
//!   `.venv-test/bin/python`): `jwt.decode` of the same token against the JWKS, and the raw
//!   `cryptography` verify of its signature.
//!
//! A breakdown follows the table, timed the same way (µs per call): raw over the pool's distinct
//! signatures in turn (what the uncached verifier meets), raw through `ParsedPublicKey` (key
//! parsed once), `jsonwebtoken::decode` alone with the verifier's validation, and pieces the
//! verifier adds around it, each on its own and hot in cache. Also printed: uncached over raw
//! turn by turn (median and range: how steady the machine was), and the load average before and
//! after (on a 2-core machine, anything else running shows).
//!
//! `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) this is a smoke run of
//! a few milliseconds per measurement whose numbers mean nothing. `--json` (or
//! `SEALBOX_BENCH_JSON=1`) prints one JSON object instead of the tables.

use std::collections::HashSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, UnparsedPublicKey, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sealbox_authz::{KeyAlg, Keyset, TokenClaims, TokenIssuer, Verifier, VerifierConfig};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error>;

const ISSUER: &str = "bench-seller";
const AUDIENCE: &str = "bench-product";
const BUYER: &str = "111122223333";
/// Distinct tokens per pool: well under the verifier's cache of 10,000, so no eviction is timed.
const POOL: usize = 4096;
const SMOKE_POOL: usize = 64;
const SMOKE_SECS: f64 = 0.01;
/// Calls between two looks at the clock.
const BATCH: usize = 64;
/// Turns each measurement gets (see [`interleaved`]).
const ROUNDS: u32 = 10;

struct Opts {
    full: bool,
    secs: f64,
    json: bool,
}

impl Opts {
    fn from_env() -> Result<Opts, BoxError> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--bench");
        let json = args.iter().any(|a| a == "--json")
            || std::env::var("SEALBOX_BENCH_JSON").is_ok_and(|v| !v.is_empty() && v != "0");
        let secs = match std::env::var("SEALBOX_BENCH_SECS") {
            Ok(s) if full => match s.parse::<f64>() {
                Ok(v) if v > 0.0 && v.is_finite() => v,
                _ => {
                    return Err(format!("SEALBOX_BENCH_SECS={s:?} is not a positive number").into());
                }
            },
            _ if full => 2.0,
            _ => SMOKE_SECS,
        };
        Ok(Opts { full, secs, json })
    }

    fn target(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

/// Calls and the time they took.
#[derive(Clone, Copy, Default)]
struct Rate {
    calls: u64,
    elapsed: Duration,
}

impl Rate {
    fn per_sec(self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn micros(self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.calls as f64
    }

    fn add(&mut self, other: Rate) {
        self.calls += other.calls;
        self.elapsed += other.elapsed;
    }
}

/// Calls `f` for about `target`, looking at the clock every [`BATCH`] calls.
fn timed(target: Duration, mut f: impl FnMut() -> Result<(), BoxError>) -> Result<Rate, BoxError> {
    f()?; // warm up, and a call that fails is an error, not a measurement
    let mut calls = 0u64;
    let start = Instant::now();
    loop {
        for _ in 0..BATCH {
            f()?;
        }
        calls += BATCH as u64;
        let elapsed = start.elapsed();
        if elapsed >= target {
            return Ok(Rate { calls, elapsed });
        }
    }
}

/// One measurement: runs for about the given time and says how many calls it timed.
type Measure<'a> = Box<dyn FnMut(Duration) -> Result<Rate, BoxError> + 'a>;

fn per_call<'a>(mut f: impl FnMut() -> Result<(), BoxError> + 'a) -> Measure<'a> {
    Box::new(move |target| timed(target, &mut f))
}

/// Runs the measurements in turn, `rounds` times, each for `total / rounds` a turn: a change of
/// background load over the run then weighs on all of them alike, and their ratios hold.
/// Returns each measurement's turns.
fn interleaved(
    total: Duration,
    rounds: u32,
    measures: &mut [Measure<'_>],
) -> Result<Vec<Vec<Rate>>, BoxError> {
    let mut turns = vec![Vec::new(); measures.len()];
    for _ in 0..rounds {
        for (m, t) in measures.iter_mut().zip(&mut turns) {
            t.push(m(total / rounds)?);
        }
    }
    Ok(turns)
}

fn sum(turns: &[Rate]) -> Rate {
    let mut total = Rate::default();
    for t in turns {
        total.add(*t);
    }
    total
}

/// The median and the range of `a`'s rate over `b`'s, turn by turn (each pair taken a moment
/// apart, so a load that comes and goes shows as spread rather than as a bias).
fn ratio_per_turn(a: &[Rate], b: &[Rate]) -> Value {
    let mut r: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| a.per_sec() / b.per_sec())
        .collect();
    r.sort_by(f64::total_cmp);
    let median = match r.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => r[n / 2],
        n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
    };
    json!({
        "median": median,
        "min": r.first().copied().unwrap_or(f64::NAN),
        "max": r.last().copied().unwrap_or(f64::NAN),
    })
}

fn verified(r: Result<TokenClaims, sealbox_authz::TokenRejection>) -> Result<(), BoxError> {
    match r {
        Ok(c) if c.sub == BUYER => {
            black_box(c);
            Ok(())
        }
        Ok(c) => Err(format!("verified for {:?}, not {BUYER}", c.sub).into()),
        Err(e) => Err(format!("a good token was refused: {e}").into()),
    }
}

/// `Verifier::verify` of tokens its verifier has not seen: the timed sections cover only the
/// verify calls; issuing the pool, and starting a fresh verifier whenever the pool has been
/// used up, are outside them.
fn uncached<'a>(config: &'a VerifierConfig, keyset: &'a Keyset, pool: &'a [String]) -> Measure<'a> {
    let mut verifier: Option<Verifier> = None;
    let mut next = pool.len();
    Box::new(move |target| {
        let mut rate = Rate::default();
        while rate.elapsed < target {
            if next >= pool.len() {
                verifier = None; // the old one and its cache are dropped untimed
                verifier = Some(Verifier::from_keyset(config.clone(), keyset)?);
                next = 0;
            }
            let v = verifier.as_ref().ok_or("no verifier")?;
            let chunk = &pool[next..pool.len().min(next + BATCH)];
            let start = Instant::now();
            for token in chunk {
                verified(v.verify(token, BUYER))?;
            }
            rate.add(Rate {
                calls: chunk.len() as u64,
                elapsed: start.elapsed(),
            });
            next += chunk.len();
        }
        Ok(rate)
    })
}

/// The signing input and the decoded signature of a compact JWS.
fn split_token(token: &str) -> Result<(&[u8], Vec<u8>), BoxError> {
    let (input, sig) = token
        .rsplit_once('.')
        .ok_or("a token without a signature")?;
    Ok((input.as_bytes(), B64.decode(sig)?))
}

fn algorithm(alg: KeyAlg) -> &'static dyn VerificationAlgorithm {
    match alg {
        KeyAlg::EdDSA => &ED25519,
        KeyAlg::ES256 => &ECDSA_P256_SHA256_FIXED,
    }
}

/// What `scripts/pyjwt_tool.py bench` reported, or why it was not run.
enum PyJwt {
    Measured(Value),
    NotMeasured(String),
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn python() -> PathBuf {
    std::env::var_os("SEALBOX_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-test/bin/python"))
}

fn pyjwt_bench(keyset: &Keyset, token: &str, secs: f64) -> PyJwt {
    let python = python();
    if !python.is_file() {
        return PyJwt::NotMeasured(format!(
            "the test Python is missing at {} (set SEALBOX_TEST_PYTHON, or run ./scripts/test, which builds .venv-test/)",
            python.display()
        ));
    }
    let run = || -> Result<Value, BoxError> {
        let mut jwks = tempfile::NamedTempFile::new()?;
        serde_json::to_writer(&mut jwks, &keyset.jwks()?)?;
        let out = Command::new(&python)
            .arg(workspace_root().join("scripts/pyjwt_tool.py"))
            .arg("bench")
            .arg("--jwks")
            .arg(jwks.path())
            .args(["--token", token, "--audience", AUDIENCE, "--issuer", ISSUER])
            .args(["--seconds", &secs.to_string()])
            .output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "pyjwt_tool.py bench failed ({}): {}",
                out.status,
                err.trim()
            )
            .into());
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        for field in ["per_second", "raw_per_second"] {
            if !v.get(field).is_some_and(Value::is_f64) {
                return Err(format!("pyjwt_tool.py bench printed no {field}").into());
            }
        }
        Ok(v)
    };
    match run() {
        Ok(v) => PyJwt::Measured(v),
        Err(e) => PyJwt::NotMeasured(format!(
            "PyJWT could not run with {}: {e}",
            python.display()
        )),
    }
}

fn measure(alg: KeyAlg, opts: &Opts) -> Result<Value, BoxError> {
    let keyset = Keyset::generate(ISSUER, alg)?;
    let issuer = TokenIssuer::new(&keyset)?;
    let config = VerifierConfig::new(ISSUER, AUDIENCE);
    let ttl = Duration::from_secs(3600);
    let token = issuer.issue(BUYER, AUDIENCE, "g-bench", ttl)?;
    let key = keyset.current()?;
    let public = key.public_bytes()?;
    let (input, sig) = split_token(&token)?;

    let size = if opts.full { POOL } else { SMOKE_POOL };
    let pool = (0..size)
        .map(|_| issuer.issue(BUYER, AUDIENCE, "g-bench", ttl))
        .collect::<Result<Vec<_>, _>>()?;
    if pool.iter().collect::<HashSet<_>>().len() != pool.len() {
        return Err("the token pool has repeats: they would hit the cache".into());
    }

    // raw: the signature alone, the key parsed on each call as jsonwebtoken does.
    let unparsed = UnparsedPublicKey::new(algorithm(alg), &public);
    let raw = per_call(|| {
        unparsed.verify(black_box(input), black_box(&sig))?;
        Ok(())
    });
    let cached_verifier = Verifier::from_keyset(config.clone(), &keyset)?;
    let cached = per_call(|| verified(cached_verifier.verify(black_box(&token), BUYER)));

    // The breakdown: the pieces around the signature, each alone.
    let parsed = ParsedPublicKey::new(algorithm(alg), &public)?;
    // The signatures of the pool, each once in turn: what the uncached verifier checks.
    let split_pool = pool
        .iter()
        .map(|t| split_token(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut next = 0;
    let raw_pool = per_call(|| {
        let (input, sig) = &split_pool[next % split_pool.len()];
        next += 1;
        unparsed.verify(black_box(input), black_box(sig))?;
        Ok(())
    });
    let raw_parsed = per_call(|| {
        parsed.verify_sig(black_box(input), black_box(&sig))?;
        Ok(())
    });
    // jsonwebtoken alone, with the validation the verifier gives it.
    let decoding = key.decoding_key()?;
    let mut validation = jsonwebtoken::Validation::new(alg.jwt());
    validation.leeway = config.leeway_secs.min(60);
    validation.set_audience(&[&config.audience]);
    validation.set_issuer(&[&config.issuer]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    let decode = per_call(|| {
        let data = jsonwebtoken::decode::<Value>(black_box(&token), &decoding, &validation)?;
        black_box(data);
        Ok(())
    });
    let (h, _) = token.split_once('.').ok_or("a token without a header")?;
    let header = per_call(|| {
        let header: Value = serde_json::from_slice(&B64.decode(black_box(h))?)?;
        black_box(header);
        Ok(())
    });
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&token)?.claims;
    let claims_to_struct = per_call(|| {
        let c: TokenClaims = serde_json::from_value(black_box(claims.clone()))?;
        black_box(c);
        Ok(())
    });
    let sha256 = per_call(|| {
        black_box(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            black_box(token.as_bytes()),
        ));
        Ok(())
    });

    let rounds = if opts.full { ROUNDS } else { 1 };
    let mut measures = [
        raw,
        uncached(&config, &keyset, &pool),
        cached,
        raw_pool,
        raw_parsed,
        decode,
        header,
        claims_to_struct,
        sha256,
    ];
    let turns = interleaved(opts.target(), rounds, &mut measures)?;
    drop(measures);
    let uncached_over_raw = ratio_per_turn(&turns[1], &turns[0]);
    let r: Vec<Rate> = turns.iter().map(|t| sum(t)).collect();
    let [
        raw,
        uncached,
        cached,
        raw_pool,
        raw_parsed,
        decode,
        header,
        claims_to_struct,
        sha256,
    ] = r[..]
    else {
        return Err("a measurement is missing".into());
    };

    let pyjwt = pyjwt_bench(&keyset, &token, opts.secs);

    let mut row = json!({
        "alg": alg.as_str(),
        "token_bytes": token.len(),
        "raw_per_second": raw.per_sec(),
        "raw_us": raw.micros(),
        "uncached_per_second": uncached.per_sec(),
        "uncached_us": uncached.micros(),
        "uncached_pct_of_raw": 100.0 * uncached.per_sec() / raw.per_sec(),
        "uncached_over_raw_per_turn": uncached_over_raw,
        "cached_per_second": cached.per_sec(),
        "cached_us": cached.micros(),
        "breakdown": {
            "raw_pool_per_second": raw_pool.per_sec(),
            "raw_pool_us": raw_pool.micros(),
            "raw_parsed_key_per_second": raw_parsed.per_sec(),
            "raw_parsed_key_us": raw_parsed.micros(),
            "jsonwebtoken_decode_per_second": decode.per_sec(),
            "jsonwebtoken_decode_us": decode.micros(),
            "header_base64_json_us": header.micros(),
            "claims_value_to_struct_us": claims_to_struct.micros(),
            "sha256_token_us": sha256.micros(),
        },
    });
    match pyjwt {
        PyJwt::Measured(p) => {
            let per_second = p["per_second"].as_f64().unwrap_or(f64::NAN);
            row["pyjwt_per_second"] = p["per_second"].clone();
            row["pyjwt_raw_per_second"] = p["raw_per_second"].clone();
            row["cached_over_pyjwt"] = json!(cached.per_sec() / per_second);
            row["pyjwt"] = p["pyjwt"].clone();
            row["cryptography"] = p["cryptography"].clone();
        }
        PyJwt::NotMeasured(why) => row["pyjwt_not_measured"] = json!(why),
    }
    Ok(row)
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
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "kernel": kernel.trim(),
    })
}

fn versions() -> Value {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap_or_default();
    let mut v = json!({});
    for name in ["aws-lc-rs", "aws-lc-sys", "jsonwebtoken"] {
        v[name] = json!(locked_version(&lock, name).unwrap_or_else(|| "unknown".into()));
    }
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    v["rustc"] = json!(rustc);
    let python = Command::new(python())
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    v["python"] = json!(python);
    v
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

fn print_tables(report: &Value) {
    let m = &report["machine"];
    let v = &report["versions"];
    println!(
        "machine: {} CPUs, {}, Linux {}; load average {} before, {} after",
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["loadavg_before"].as_str().unwrap_or("?"),
        m["loadavg_after"].as_str().unwrap_or("?"),
    );
    let first = &report["results"][0];
    println!(
        "versions: aws-lc-rs {}, aws-lc-sys {}, jsonwebtoken {}, {}; PyJWT {}, cryptography {}, {}",
        v["aws-lc-rs"].as_str().unwrap_or("?"),
        v["aws-lc-sys"].as_str().unwrap_or("?"),
        v["jsonwebtoken"].as_str().unwrap_or("?"),
        v["rustc"].as_str().unwrap_or("rustc ?"),
        first["pyjwt"].as_str().unwrap_or("-"),
        first["cryptography"].as_str().unwrap_or("-"),
        v["python"].as_str().unwrap_or("Python -"),
    );
    println!(
        "{} s per measurement, in {} turn(s){}",
        report["seconds_per_measurement"],
        report["rounds"],
        if report["smoke"] == true {
            " (smoke run without --bench: these numbers mean nothing; use `cargo bench -p sealbox-authz --bench verify`)"
        } else {
            ""
        }
    );
    println!();
    println!(
        "| alg | raw/s | uncached/s | uncached % of raw | cached/s | PyJWT/s | cached ÷ PyJWT | PyJWT raw (cryptography)/s |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let num = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    for r in report["results"].as_array().into_iter().flatten() {
        let ratio = num(r, "cached_over_pyjwt");
        println!(
            "| {} | {} | {} | {:.1} % | {} | {} | {} | {} |",
            r["alg"].as_str().unwrap_or("?"),
            thousands(num(r, "raw_per_second")),
            thousands(num(r, "uncached_per_second")),
            num(r, "uncached_pct_of_raw"),
            thousands(num(r, "cached_per_second")),
            thousands(num(r, "pyjwt_per_second")),
            if ratio.is_finite() {
                format!("{ratio:.0}×")
            } else {
                "-".into()
            },
            thousands(num(r, "pyjwt_raw_per_second")),
        );
    }
    for r in report["results"].as_array().into_iter().flatten() {
        if let Some(why) = r["pyjwt_not_measured"].as_str() {
            println!(
                "{}: PyJWT was NOT measured: {why}",
                r["alg"].as_str().unwrap_or("?")
            );
        }
    }
    for r in report["results"].as_array().into_iter().flatten() {
        let t = &r["uncached_over_raw_per_turn"];
        let pct = |k: &str| 100.0 * t[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{}: uncached % of raw, turn by turn: median {:.1} %, range {:.1}-{:.1} %",
            r["alg"].as_str().unwrap_or("?"),
            pct("median"),
            pct("min"),
            pct("max")
        );
    }
    println!();
    println!("Breakdown (µs per call, each piece timed alone):");
    println!();
    println!(
        "| alg | raw (UnparsedPublicKey) | raw, the pool's distinct signatures | raw (ParsedPublicKey) | jsonwebtoken::decode | Verifier uncached | Verifier cached | header base64+JSON | claims Value→struct | SHA-256 of token |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in report["results"].as_array().into_iter().flatten() {
        let b = &r["breakdown"];
        let us = |v: &Value, k: &str| format!("{:.2}", v[k].as_f64().unwrap_or(f64::NAN));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r["alg"].as_str().unwrap_or("?"),
            us(r, "raw_us"),
            us(b, "raw_pool_us"),
            us(b, "raw_parsed_key_us"),
            us(b, "jsonwebtoken_decode_us"),
            us(r, "uncached_us"),
            us(r, "cached_us"),
            us(b, "header_base64_json_us"),
            us(b, "claims_value_to_struct_us"),
            us(b, "sha256_token_us"),
        );
    }
    println!();
    if report["smoke"] == true {
        println!("goals: judged only by a full run (`cargo bench`), not by this smoke run");
        return;
    }
    for r in report["results"].as_array().into_iter().flatten() {
        let alg = r["alg"].as_str().unwrap_or("?");
        let pct = num(r, "uncached_pct_of_raw");
        let verdict = if pct >= 90.0 { "met" } else { "NOT met" };
        println!("goal {alg}: uncached within 10 % of raw: {verdict} ({pct:.1} %)");
        let ratio = num(r, "cached_over_pyjwt");
        if ratio.is_finite() {
            let verdict = if ratio >= 20.0 { "met" } else { "NOT met" };
            println!("goal {alg}: cached at least 20× PyJWT: {verdict} ({ratio:.0}×)");
        } else {
            println!("goal {alg}: cached at least 20× PyJWT: not measured (no PyJWT)");
        }
    }
}

fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn main() -> Result<(), BoxError> {
    let opts = Opts::from_env()?;
    let load_before = loadavg();
    let mut results = Vec::new();
    for alg in [KeyAlg::EdDSA, KeyAlg::ES256] {
        results.push(measure(alg, &opts)?);
    }
    let mut machine = machine();
    machine["loadavg_before"] = json!(load_before);
    machine["loadavg_after"] = json!(loadavg());
    let report = json!({
        "smoke": !opts.full,
        "seconds_per_measurement": opts.secs,
        "rounds": if opts.full { ROUNDS } else { 1 },
        "machine": machine,
        "versions": versions(),
        "results": results,
    });
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_tables(&report);
    }
    Ok(())
}
