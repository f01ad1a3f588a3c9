//! The `tidemark` binary: parses flags, loads configuration, starts telemetry and runs
//! one role (or all of them) until SIGINT/SIGTERM.

mod quarantine;
mod replay;
mod roles;
mod rules;
mod standalone;
mod vocabulary;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tidemark_runtime::auth::{self, Role as KeyRole};
use tidemark_runtime::{telemetry, Config};
use tidemark_store::db;
use tokio_util::sync::CancellationToken;

use crate::roles::{Role, Shared};

// Ingest allocates per sample on many threads at once; glibc malloc's arena locks and
// cross-thread frees took about a third of its CPU (docs/archive/performance-rounds.md,
// "Where Tidemark's ingest CPU goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tidemark", version, about = "Self-hosted metrics pipeline")]
struct Cli {
    /// Optional configuration file; `TIDEMARK_*` environment variables override it.
    #[arg(long, global = true, default_value = "tidemark.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP ingest → Kafka.
    Ingest,
    /// Kafka → hourly buckets in Postgres and Redis.
    Aggregator,
    /// Breaches → alerts in Postgres → the on-call feed topic (receivers not built yet).
    Alerter,
    /// Read API, `/metrics` and health views.
    Api,
    /// All roles in one process; embeds a broker when TIDEMARK_KAFKA_BROKERS is unset.
    Standalone,
    /// Applies the Postgres migrations.
    Migrate,
    /// Rebuilds the buckets of a time range from what Kafka still retains.
    Replay {
        /// Start of the range: RFC 3339 or Unix milliseconds (widened to the hour).
        #[arg(long)]
        from: String,
        /// End of the range (default: now).
        #[arg(long)]
        to: Option<String>,
    },
    /// Manages API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Messages the aggregator set aside because of their data.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Alert rules files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validates a rules file; for a valid one shows each rule, the schedule in force now
    /// and the next change. Exits 1 with every error otherwise.
    Check {
        /// The rules file (YAML).
        file: PathBuf,
    },
    /// Runs unit tests of alert rules: samples at given instants in a time zone, and the
    /// alerts and schedules expected then. Prints `ok` or the differences per test; exits
    /// 1 when a test fails, 2 when a file cannot be read or is invalid.
    Test {
        /// Test files (YAML), each naming its rules files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Lists quarantined messages waiting for a replay.
    List {
        /// Include those already replayed.
        #[arg(long)]
        all: bool,
    },
    /// Applies quarantined messages once the cause is fixed (each exactly once).
    Replay {
        /// The entry to replay (from `list`).
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<i64>,
        /// Every entry waiting for a replay.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Creates a key and prints its token once.
    Create {
        /// ingest, read or admin
        #[arg(long)]
        role: KeyRole,
        /// A label for people, e.g. the team or service using it.
        #[arg(long)]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Rules files are checked and tested on their own: no configuration, no runtime.
    let command = match cli.command {
        Command::Rules { command } => return rules::run(command),
        command => command,
    };
    let config = match Config::load(Some(&cli.config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&config.common.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let role = match command {
        Command::Standalone => return standalone::run(config, shutdown).await,
        Command::Migrate => {
            let pool = db::connect(&config.common.database_url, 1, true).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            return Ok(());
        }
        Command::Keys {
            command: KeysCommand::Create { role, name },
        } => {
            let pool = db::connect(&config.common.database_url, 1, true).await?;
            db::migrate(&pool).await?;
            let token = auth::create_key(&pool, role, &name).await?;
            println!("{token}");
            return Ok(());
        }
        Command::Replay { from, to } => return replay::run(&config, &from, to.as_deref()).await,
        Command::Quarantine {
            command: QuarantineCommand::List { all },
        } => return quarantine::list(&config, all).await,
        Command::Quarantine {
            command: QuarantineCommand::Replay { id, .. },
        } => return quarantine::replay(&config, id).await,
        Command::Ingest => Role::Ingest,
        Command::Aggregator => Role::Aggregator,
        Command::Alerter => Role::Alerter,
        Command::Api => Role::Api,
        Command::Rules { .. } => unreachable!("handled before the runtime starts"),
    };
    let brokers = config.require_brokers()?.to_owned();
    let shared = Shared::connect(&config, &brokers, false).await?;
    roles::run(&config, &shared, &[role], true, shutdown).await
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
