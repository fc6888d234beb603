//! The `sealbox` command: parses arguments, builds adapters from them and runs the command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sealbox::stack::{DEFAULT_ISSUER, DEFAULT_PRODUCT, ModelSource, StackOptions};
use sealbox::{bench, commands, demo};

/// Subscription-gated asynchronous model serving, embedded on one machine or on AWS.
#[derive(Parser)]
#[command(name = "sealbox", version, about)]
struct Cli {
    /// Data directory of the embedded stack.
    #[arg(
        long,
        global = true,
        env = "SEALBOX_DATA_DIR",
        default_value = "./sealbox-data"
    )]
    data_dir: PathBuf,
    /// Log filter (e.g. info, debug, sealbox_worker=debug); default: info for `up`, warn otherwise.
    #[arg(long, global = true, env = "SEALBOX_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole embedded stack: model, inbox watcher, ingest and workers.
    Up(UpArgs),
    /// Run a few hundred requests (some bad) through a fresh embedded stack and check outcomes.
    Demo {
        /// Good requests to send (bad ones are added).
        #[arg(long, default_value_t = 300)]
        requests: usize,
        /// Keep the data directory here instead of a temporary one.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Seller commands: keys and tokens.
    Seller {
        #[command(subcommand)]
        command: SellerCommand,
    },
    /// Buyer commands: submit requests and read results.
    Buyer {
        #[command(subcommand)]
        command: BuyerCommand,
    },
    /// Backlog, in flight, dead letters and the age of the oldest job.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dead-letter queue of jobs.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Measure the embedded pipeline: throughput, overhead, endpoint utilisation.
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct UpArgs {
    /// Product id that tokens must be issued for.
    #[arg(long, default_value = DEFAULT_PRODUCT)]
    product: String,
    /// Seller name, used when keys are created.
    #[arg(long, default_value = DEFAULT_ISSUER)]
    issuer: String,
    /// Use a model container at this URL instead of the built-in sample model.
    #[arg(long)]
    model_url: Option<String>,
    /// Port of the built-in model on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    model_port: u16,
    /// Artificial latency of the built-in model, in milliseconds.
    #[arg(long, default_value_t = 0)]
    model_latency_ms: u64,
    /// Model invocations in flight at once (the endpoint's concurrency cap).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Receives of a job before it goes to the dead-letter queue.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_receives: u32,
    /// POST every notification to this URL as well.
    #[arg(long)]
    webhook: Option<String>,
    /// fsync every object and notification (survive power loss, at a cost).
    #[arg(long)]
    durable: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Alg {
    Eddsa,
    Es256,
}

#[derive(Subcommand)]
enum SellerCommand {
    /// Keyset commands.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print a token for a buyer (the token alone on stdout).
    Token {
        /// Buyer id.
        #[arg(long)]
        buyer: String,
        /// Lifetime (e.g. 30m, 1h; at most 12h).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Product id.
        #[arg(long, default_value = DEFAULT_PRODUCT)]
        product: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the keyset (refuses to replace one).
    Init {
        /// Signature algorithm.
        #[arg(long, value_enum, default_value = "eddsa")]
        alg: Alg,
        /// Seller name (`iss`).
        #[arg(long, default_value = DEFAULT_ISSUER)]
        issuer: String,
    },
    /// Move each key one step: next signs, current is kept until its tokens expire.
    Rotate,
    /// Remove a key from the JWKS at once.
    Revoke {
        /// Key id (see `list`).
        kid: String,
    },
    /// Show kid, algorithm, state, created and retires-at of each key.
    List,
    /// Print the JWKS (public keys only).
    Jwks,
}

#[derive(Subcommand)]
enum BuyerCommand {
    /// Upload each input and a request object for it.
    Submit(commands::SubmitArgs),
    /// List outcomes, optionally fetching them.
    Results(commands::ResultsArgs),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead-lettered messages.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
        /// Which queue's dead letters.
        #[arg(long, value_enum, default_value = "jobs")]
        queue: commands::QueueName,
    },
    /// Move dead-lettered messages back to their queue.
    Redrive {
        /// At most this many.
        #[arg(long, default_value_t = 10_000)]
        max: usize,
        /// Which queue's dead letters.
        #[arg(long, value_enum, default_value = "jobs")]
        queue: commands::QueueName,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Up(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = cli.log.as_deref().unwrap_or(default_level);
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| default_level.into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data = cli.data_dir;
    match cli.command {
        Command::Up(a) => {
            let mut opts = StackOptions::new(&data);
            opts.product = a.product;
            opts.issuer = a.issuer;
            opts.model = match a.model_url {
                Some(u) => ModelSource::Url(u),
                None => ModelSource::InProcess {
                    latency: Duration::from_millis(a.model_latency_ms),
                    port: a.model_port,
                },
            };
            opts.concurrency = usize::from(a.concurrency);
            opts.max_receives = a.max_receives;
            opts.webhook = a.webhook;
            opts.durable = a.durable;
            commands::up(opts).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { requests, keep } => {
            let tmp = tempfile::tempdir()?;
            let dir = keep.unwrap_or_else(|| tmp.path().to_owned());
            println!(
                "sealbox demo: {requests} good requests plus a table of bad ones, in {}",
                dir.display()
            );
            let mut report = demo::run(&dir, requests, false).await?;
            let total = report.completed
                + report.failed.values().sum::<usize>()
                + report.rejected.values().sum::<usize>();
            demo::print_summary(&mut report, total);
            if report.ok() {
                println!("every request got the outcome it should");
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "{} requests did not get the outcome they should",
                    report.mismatches.len()
                );
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Seller { command } => match command {
            SellerCommand::Keys {
                command: KeysCommand::Init { alg, issuer },
            } => {
                let alg = match alg {
                    Alg::Eddsa => sealbox_authz::KeyAlg::EdDSA,
                    Alg::Es256 => sealbox_authz::KeyAlg::ES256,
                };
                commands::keys_init(&data, &issuer, alg)?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Keys {
                command: KeysCommand::Rotate,
            } => {
                commands::keys_rotate(&data)?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Keys {
                command: KeysCommand::Revoke { kid },
            } => {
                commands::keys_revoke(&data, &kid)?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Keys {
                command: KeysCommand::List,
            } => {
                commands::keys_list(&data)?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Keys {
                command: KeysCommand::Jwks,
            } => {
                commands::keys_jwks(&data)?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Token {
                buyer,
                ttl,
                product,
            } => {
                println!(
                    "{}",
                    commands::seller_token(&data, &buyer, &product, ttl.into())?
                );
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Buyer { command } => match command {
            BuyerCommand::Submit(a) => commands::submit(&data, a).await,
            BuyerCommand::Results(a) => commands::results(&data, a).await,
        },
        Command::Status { json } => {
            commands::status(&data, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => {
            match command {
                DlqCommand::List { max, queue } => commands::dlq_list(&data, queue, max).await?,
                DlqCommand::Redrive { max, queue } => {
                    commands::dlq_redrive(&data, queue, max).await?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(a) => bench::run(a).await,
    }
}
