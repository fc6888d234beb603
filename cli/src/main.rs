//! The `sealbox` command: parses arguments, builds adapters from them and runs the command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sealbox::output::Backend;
use sealbox::stack::{DEFAULT_ISSUER, DEFAULT_PRODUCT, ModelSource, StackOptions};
use sealbox::{access, aws, bench, commands, demo, model, results, submit, usage};

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
    /// Seller commands: keys, subscriptions and tokens.
    Seller {
        /// Where the seller's keys and subscriptions are (`sealbox aws bootstrap-seller`
        /// prints the settings of `aws`); no seller command touches a buyer's buckets or queues.
        #[arg(long, value_enum, default_value_t = SellerBackend::Embedded, global = true)]
        backend: SellerBackend,
        #[command(subcommand)]
        command: SellerCommand,
    },
    /// Buyer commands: get tokens, submit requests and read results.
    Buyer {
        #[command(subcommand)]
        command: BuyerCommand,
    },
    /// Backlog, in flight, dead letters and the age of the oldest job.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Whose queues: the data directory's, or on AWS those at $SEALBOX_INBOX_EVENTS_QUEUE_URL
        /// and $SEALBOX_JOBS_QUEUE_URL (dead-letter queues from their redrive policies).
        #[arg(long, value_enum, default_value_t = Backend::Embedded)]
        backend: Backend,
    },
    /// Dead-letter queue of jobs.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Measure the pipeline (embedded, or on AWS with --backend aws): throughput, overhead,
    /// endpoint utilisation, AWS calls per job.
    Bench(bench::BenchArgs),
    /// AWS commands (settings from the standard AWS environment).
    Aws {
        #[command(subcommand)]
        command: AwsCommand,
    },
    /// The sample model.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

#[derive(Subcommand)]
enum AwsCommand {
    /// Create (idempotently) a development stack: buckets, queues with dead-letter queues, the
    /// topic and the inbox notification; print its settings as KEY=VALUE lines.
    Bootstrap {
        /// Stack name: resources are NAME-inbox, NAME-outbox, NAME-jobs, ...
        #[arg(long)]
        name: String,
        /// Print one JSON object instead.
        #[arg(long)]
        json: bool,
    },
    /// Delete what `aws bootstrap --name NAME` made: both buckets with every object in them,
    /// the four queues and the topic (what is already gone is skipped).
    Teardown {
        /// Stack name, as given to `aws bootstrap`.
        #[arg(long)]
        name: String,
    },
    /// Create (idempotently) the seller's development resources: the keys and subscriptions
    /// tables and the bucket of the published keys; print their settings as KEY=VALUE lines.
    BootstrapSeller {
        /// Name: resources are NAME-keys, NAME-subscriptions and NAME-keys-published.
        #[arg(long)]
        name: String,
        /// Print one JSON object instead.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Serve the sample model: the container contract and the SageMaker Runtime API.
    Serve(model::ServeArgs),
}

#[derive(Args)]
struct UpArgs {
    /// Where the pipeline runs.
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    backend: Backend,
    /// Product id that tokens must be issued for.
    #[arg(long, env = "SEALBOX_PRODUCT", default_value = DEFAULT_PRODUCT)]
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
    /// Port of the token service on 127.0.0.1 (0: any free port; the URL is written to
    /// DATA/token-service.url).
    #[arg(long, default_value_t = 0)]
    token_port: u16,
    /// Longest token the token service hands out (at most 12h).
    #[arg(long, default_value = "1h")]
    max_token_lifetime: humantime::Duration,
    /// Where ingest reads the seller's published keys: an http(s):// URL, s3://BUCKET/KEY in
    /// the embedded store, or a file (default: this stack's own token service).
    #[arg(long, value_name = "URL|s3://BUCKET/KEY|FILE")]
    jwks: Option<sealbox::stack::KeysSource>,
    /// How often ingest refreshes the published keys: a revoked key or buyer stops working
    /// within this.
    #[arg(long, default_value = "60s")]
    jwks_refresh: humantime::Duration,
    /// Ingest refuses every token once its copy of the published keys is older than this.
    #[arg(long, default_value = "15m")]
    jwks_max_staleness: humantime::Duration,
}

/// Where the seller's keys and subscriptions are (the buyer's `Backend` names buckets and
/// queues, which no seller command touches).
#[derive(Clone, Copy, ValueEnum)]
enum SellerBackend {
    /// The data directory: DATA/seller/keyset.json and the subscriptions database.
    Embedded,
    /// KMS signing keys with their states in DynamoDB ($SEALBOX_KEYS_TABLE), subscriptions in
    /// DynamoDB ($SEALBOX_SUBSCRIPTIONS_TABLE), the published keys object ($SEALBOX_JWKS_OBJECT).
    Aws,
}

#[derive(Clone, Copy, ValueEnum)]
enum Alg {
    Eddsa,
    Es256,
}

impl From<Alg> for sealbox_authz::KeyAlg {
    fn from(alg: Alg) -> Self {
        match alg {
            Alg::Eddsa => sealbox_authz::KeyAlg::EdDSA,
            Alg::Es256 => sealbox_authz::KeyAlg::ES256,
        }
    }
}

#[derive(Subcommand)]
enum SellerCommand {
    /// Keyset commands.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Subscribe a buyer (or renew), printing its new secret for the token service (with
    /// `--backend aws`, only with `--with-secret`: a buyer proves its AWS account instead).
    Grant {
        /// Buyer id.
        buyer: String,
        /// End of the subscription: a date (through that day, UTC) or an RFC 3339 time.
        #[arg(long, value_parser = sealbox::access::parse_until)]
        until: Option<time::OffsetDateTime>,
        /// Product id.
        #[arg(long, env = "SEALBOX_PRODUCT", default_value = DEFAULT_PRODUCT)]
        product: String,
        /// Write the secret to this file (mode 0600) instead of printing it.
        #[arg(long)]
        secret_out: Option<PathBuf>,
        /// With `--backend aws`: make a secret too, for a buyer outside AWS (the embedded
        /// backend always makes one).
        #[arg(long)]
        with_secret: bool,
    },
    /// End a buyer's subscription: no new tokens; its tokens stop within one key refresh.
    Revoke {
        /// Buyer id.
        buyer: String,
        /// Product id.
        #[arg(long, env = "SEALBOX_PRODUCT", default_value = DEFAULT_PRODUCT)]
        product: String,
    },
    /// List subscriptions: buyer, product, status, expiry, created and updated times.
    #[command(visible_alias = "list")]
    Subscriptions {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Print a token for a buyer, signed locally (the token alone on stdout).
    Token {
        /// Buyer id.
        #[arg(long)]
        buyer: String,
        /// Lifetime (e.g. 30m, 1h; at most 12h).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Product id.
        #[arg(long, env = "SEALBOX_PRODUCT", default_value = DEFAULT_PRODUCT)]
        product: String,
    },
    /// AWS Marketplace agreements: what the marketplace-events function does, from a file.
    Marketplace {
        #[command(subcommand)]
        command: MarketplaceCommand,
    },
}

#[derive(Subcommand)]
enum MarketplaceCommand {
    /// Apply saved agreement events (EventBridge events of source aws.agreement-marketplace:
    /// a JSON array, one event, or JSON lines) in the file's order, with the handler of the
    /// marketplace-events function: created or amended grants, ended revokes, duplicates and
    /// older events change nothing. Events naming no product are looked up with the
    /// Marketplace Agreement Service (DescribeAgreement) unless --product is given.
    Replay {
        /// The file of events (`-` for standard input).
        file: PathBuf,
        /// Marketplace product id to sealbox product: `prod-abc123=my-product[,...]`.
        #[arg(long, env = "SEALBOX_MARKETPLACE_PRODUCTS")]
        products: Option<String>,
        /// The sealbox product of every event that names none (skips DescribeAgreement).
        #[arg(long)]
        product: Option<String>,
        /// Print JSON lines (one per event).
        #[arg(long)]
        json: bool,
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
    List {
        /// Print JSON lines (one object per key).
        #[arg(long)]
        json: bool,
    },
    /// Print the published keys (JWKS with the deny list; public keys only), or write them
    /// to an object for buyers who read them from a bucket.
    Jwks {
        /// Product whose denied buyers are listed.
        #[arg(long, env = "SEALBOX_PRODUCT", default_value = DEFAULT_PRODUCT)]
        product: String,
        /// Write to this object of the embedded store (BUCKET/KEY) instead of printing.
        #[arg(long)]
        object: Option<String>,
    },
}

#[derive(Subcommand)]
enum BuyerCommand {
    /// Print a token from the token service, reused until shortly before it expires.
    Token {
        /// Buyer id.
        #[arg(long)]
        buyer: String,
        /// Lifetime to ask for (the service clamps it to its maximum).
        #[arg(long)]
        lifetime: Option<humantime::Duration>,
        /// Ask for a new token even if the cached one is still good.
        #[arg(long)]
        fresh: bool,
        /// `aws`: the seller's token service on AWS (`--token-url`), which the buyer proves its
        /// AWS account to with its AWS credentials, unless a secret is given.
        #[arg(long, value_enum, default_value_t = sealbox::output::Backend::Embedded)]
        backend: sealbox::output::Backend,
        #[command(flatten)]
        credentials: sealbox::access::BuyerCredentials,
    },
    /// Upload each input and a request object for it.
    Submit(submit::SubmitArgs),
    /// List outcomes, optionally fetching them.
    Results(results::ResultsArgs),
    /// Sum what the requests used of the model (invocations, records, bytes, model time) per
    /// UTC day, to reconcile the AWS Marketplace bill.
    Usage(usage::UsageArgs),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead-lettered messages.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
        /// Print JSON lines (one object per message: message_id, receive_count, body).
        #[arg(long)]
        json: bool,
        /// Which queue's dead letters.
        #[arg(long, value_enum, default_value = "jobs")]
        queue: commands::QueueName,
        #[command(flatten)]
        backend: DlqBackend,
    },
    /// Move dead-lettered messages back to their queue.
    Redrive {
        /// At most this many.
        #[arg(long, default_value_t = 10_000)]
        max: usize,
        /// Which queue's dead letters.
        #[arg(long, value_enum, default_value = "jobs")]
        queue: commands::QueueName,
        #[command(flatten)]
        backend: DlqBackend,
    },
}

/// The `--backend` of the dead-letter commands.
#[derive(Args)]
struct DlqBackend {
    /// Whose queue: the data directory's, or on AWS the one at $SEALBOX_JOBS_QUEUE_URL (or
    /// $SEALBOX_INBOX_EVENTS_QUEUE_URL), its dead-letter queue from its redrive policy.
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    backend: Backend,
}

/// The embedded runtime's threads hand buffers to each other all the time, which glibc's
/// allocator makes costly (12 % of its CPU in a profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // Resolved once: a relative path must mean the folder it meant when the command started,
    // and the inbox watcher reports absolute paths.
    let data = std::path::absolute(&cli.data_dir)
        .with_context(|| format!("resolving the data directory {}", cli.data_dir.display()))?;
    match cli.command {
        Command::Up(a) if a.backend == Backend::Aws => {
            aws::up(aws::UpOptions {
                concurrency: usize::from(a.concurrency),
                jwks_refresh: a.jwks_refresh.into(),
                jwks_max_staleness: a.jwks_max_staleness.into(),
            })
            .await
        }
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
            opts.token_port = a.token_port;
            opts.max_token_lifetime = a.max_token_lifetime.into();
            opts.jwks_refresh.interval = a.jwks_refresh.into();
            opts.jwks_refresh.unknown_kid_min_interval = opts
                .jwks_refresh
                .unknown_kid_min_interval
                .min(a.jwks_refresh.into());
            opts.jwks_max_staleness = a.jwks_max_staleness.into();
            if let Some(source) = a.jwks {
                opts.keys_source = source;
            }
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
        Command::Seller {
            backend: SellerBackend::Aws,
            command,
        } => seller_aws(command).await,
        Command::Seller { command, .. } => match command {
            SellerCommand::Keys {
                command: KeysCommand::Init { alg, issuer },
            } => {
                commands::keys_init(&data, &issuer, alg.into())?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Keys {
                command: KeysCommand::Rotate,
            } => {
                commands::keys_rotate(&data).await?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Keys {
                command: KeysCommand::Revoke { kid },
            } => {
                commands::keys_revoke(&data, &kid).await?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Keys {
                command: KeysCommand::List { json },
            } => {
                commands::keys_list(&data, json)?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Keys {
                command: KeysCommand::Jwks { product, object },
            } => {
                access::publish_keys(&data, &product, object.as_deref()).await?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Grant {
                buyer,
                until,
                product,
                secret_out,
                with_secret: _,
            } => {
                access::grant(&data, &buyer, &product, until, secret_out.as_deref()).await?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Revoke { buyer, product } => {
                access::revoke(&data, &buyer, &product).await?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Subscriptions { json } => {
                access::subscriptions(&data, json).await?;
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Token {
                buyer,
                ttl,
                product,
            } => {
                println!(
                    "{}",
                    commands::seller_token(&data, &buyer, &product, ttl.into()).await?
                );
                Ok(ExitCode::SUCCESS)
            }
            SellerCommand::Marketplace {
                command:
                    MarketplaceCommand::Replay {
                        file,
                        products,
                        product,
                        json,
                    },
            } => {
                let products = sealbox::marketplace::ReplayProducts {
                    map: products.as_deref(),
                    unnamed: product.as_deref(),
                };
                sealbox::marketplace::replay_embedded(&data, &file, products, json).await?;
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Buyer { command } => match command {
            BuyerCommand::Token {
                buyer,
                lifetime,
                fresh,
                backend,
                credentials,
            } => {
                let lifetime = lifetime.map(Into::into);
                let aws = backend == sealbox::output::Backend::Aws;
                let token =
                    access::buyer_token(&data, &buyer, &credentials, lifetime, fresh, aws).await?;
                println!("{token}");
                Ok(ExitCode::SUCCESS)
            }
            BuyerCommand::Submit(a) => submit::submit(&data, a).await,
            BuyerCommand::Results(a) => results::results(&data, a).await,
            BuyerCommand::Usage(a) => usage::usage(&data, a).await,
        },
        Command::Status { json, backend } => {
            commands::status(backend, &data, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => {
            match command {
                DlqCommand::List {
                    max,
                    json,
                    queue,
                    backend: DlqBackend { backend },
                } => commands::dlq_list(backend, &data, queue, max, json).await?,
                DlqCommand::Redrive {
                    max,
                    queue,
                    backend: DlqBackend { backend },
                } => commands::dlq_redrive(backend, &data, queue, max).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(a) => bench::run(a).await,
        Command::Aws {
            command: AwsCommand::Bootstrap { name, json },
        } => aws::bootstrap(&name, json).await,
        Command::Aws {
            command: AwsCommand::Teardown { name },
        } => aws::teardown(&name).await,
        Command::Aws {
            command: AwsCommand::BootstrapSeller { name, json },
        } => sealbox::seller_aws::bootstrap_seller(&name, json).await,
        Command::Model {
            command: ModelCommand::Serve(a),
        } => model::serve(a).await,
    }
}

/// The seller's commands on AWS.
async fn seller_aws(command: SellerCommand) -> anyhow::Result<ExitCode> {
    let aws = sealbox::seller_aws::AwsSeller::from_env().await?;
    match command {
        SellerCommand::Keys { command } => match command {
            KeysCommand::Init { alg, issuer } => aws.keys_init(&issuer, alg.into()).await?,
            KeysCommand::Rotate => aws.keys_rotate().await?,
            KeysCommand::Revoke { kid } => aws.keys_revoke(&kid).await?,
            KeysCommand::List { json } => aws.keys_list(json).await?,
            KeysCommand::Jwks {
                object: Some(_), ..
            } => anyhow::bail!(
                "--object is for the embedded store; with --backend aws the keys are published \
                 to $SEALBOX_JWKS_OBJECT"
            ),
            KeysCommand::Jwks { object: None, .. } => aws.keys_jwks().await?,
        },
        SellerCommand::Grant {
            buyer,
            until,
            product,
            secret_out,
            with_secret,
        } => {
            aws.grant(&buyer, &product, until, secret_out.as_deref(), with_secret)
                .await?
        }
        SellerCommand::Revoke { buyer, product } => aws.revoke(&buyer, &product).await?,
        SellerCommand::Subscriptions { json } => aws.subscriptions(json).await?,
        SellerCommand::Token {
            buyer,
            ttl,
            product,
        } => println!("{}", aws.token(&buyer, &product, ttl.into()).await?),
        SellerCommand::Marketplace {
            command:
                MarketplaceCommand::Replay {
                    file,
                    products,
                    product,
                    json,
                },
        } => {
            let products = sealbox::marketplace::ReplayProducts {
                map: products.as_deref(),
                unnamed: product.as_deref(),
            };
            aws.marketplace_replay(&file, products, json).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}
