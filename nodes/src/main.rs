//! `parley`: the Parley node binary.
//!
//! - `parley node [--name NODE]`: migrate the database, then serve the HTTP API until SIGINT/SIGTERM.
//! - `parley migrate`: apply pending migrations with progress, then exit.
//! - `parley token --user ID [--admin] [--ttl SECS]`: print a signed bearer token.
//!
//! Configuration comes from `cluster.toml` (or `--config` / `PARLEY_CONFIG`) and `PARLEY_*`
//! environment variables; see `config.rs`. Logs go to stderr; the one line a script may parse,
//! `parley node <name> ready: http://ADDR`, goes to stdout.

mod api;
mod auth;
mod cluster;
mod cluster_tls;
mod config;
mod log_filter;
mod node;
mod notify;
mod recording;
mod telemetry;
mod ws;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "parley", version, about = "Parley: actor-based, distributed video conferencing backend")]
struct Cli {
    /// Configuration file (default: $PARLEY_CONFIG, else ./cluster.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: migrate, then serve HTTP until interrupted.
    Node {
        /// This node's name in [[nodes]] of the configuration (default: $PARLEY_NODE, else standalone).
        #[arg(long)]
        name: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print a signed bearer token.
    Token {
        /// The user id (UUID) the token speaks for; any name for an operator token.
        #[arg(long)]
        user: String,
        /// Give the token operator rights.
        #[arg(long)]
        admin: bool,
        /// Lifetime in seconds (default 12 h, at most 30 days).
        #[arg(long, default_value_t = auth::DEFAULT_TTL_SECS)]
        ttl: u64,
    },
    /// WebRTC load test against a running node: P publishers (synthetic VP8 + Opus) and S
    /// receive-only subscribers in one new meeting; prints a JSON summary. Tokens are minted
    /// with the same secret as the node (same configuration / PARLEY_SECRET).
    Loadtest {
        /// The node, `http://HOST:PORT`.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        /// Seconds of measurement (after everyone receives everyone).
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Video packets per frame (30 fps); 4 ≈ 1 Mbit/s per publisher.
        #[arg(long, default_value_t = 4)]
        packets_per_frame: u32,
        /// Spread each frame's packets over the frame interval (as a browser's pacer does)
        /// instead of sending them in one burst.
        #[arg(long)]
        paced: bool,
        /// Record the meeting for SECS seconds of the run (publishers send real VP8/Opus), wait
        /// for the recording to be processed and report it in the summary.
        #[arg(long, value_name = "SECS")]
        record: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A load test prints its own progress; only the libraries' errors besides.
    let default = if matches!(cli.command, Command::Loadtest { .. }) { "error" } else { node::NODE_LOG };
    // A node's log format and traces come from its settings (read again, with errors
    // reported, by `run`); the trace exporter is built before the runtime, as it must be.
    let telemetry = node_telemetry(&cli);
    let traces = match node::init_logging(default, telemetry.as_ref().map(|(t, n)| (t, n.as_str()))) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("parley: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("parley: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parley: {e:#}");
            ExitCode::FAILURE
        }
    };
    drop(runtime);
    if let Some(traces) = traces {
        traces.shutdown();
    }
    code
}

/// For `parley node`: its telemetry settings and name, when its configuration resolves.
fn node_telemetry(cli: &Cli) -> Option<(config::TelemetrySettings, String)> {
    let Command::Node { name } = &cli.command else { return None };
    let (_, file) = config::load_file(cli.config.as_deref(), &config::ProcessEnv).ok()?;
    let settings = config::Settings::resolve(&file, name.as_deref(), &config::ProcessEnv).ok()?;
    Some((settings.telemetry, settings.node_name))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (path, file) = config::load_file(cli.config.as_deref(), &config::ProcessEnv)?;
    match cli.command {
        Command::Node { name } => {
            let settings = config::Settings::resolve(&file, name.as_deref(), &config::ProcessEnv)?;
            node::run(settings, path).await
        }
        Command::Migrate => {
            let settings = config::Settings::resolve(&file, None, &config::ProcessEnv)?;
            node::migrate_only(&settings).await
        }
        Command::Token { user, admin, ttl } => {
            anyhow::ensure!(
                (1..=auth::MAX_TTL_SECS).contains(&ttl),
                "--ttl must be between 1 and {} seconds",
                auth::MAX_TTL_SECS
            );
            anyhow::ensure!(!user.trim().is_empty(), "--user must not be empty");
            let settings = config::Settings::resolve(&file, None, &config::ProcessEnv)?;
            println!("{}", auth::TokenKeys::new(&settings.secret).mint(user.trim(), admin, ttl));
            Ok(())
        }
        Command::Loadtest { url, publishers, subscribers, duration, packets_per_frame, paced, record } => {
            let settings = config::Settings::resolve(&file, None, &config::ProcessEnv)?;
            let test = parley_loadtest::LoadTest {
                url,
                secret: settings.secret.clone(),
                publishers,
                subscribers,
                duration: std::time::Duration::from_secs(duration.max(1)),
                rates: parley_loadtest::Rates {
                    packets_per_frame: packets_per_frame.max(1),
                    paced,
                    ..Default::default()
                },
                record: record.map(std::time::Duration::from_secs),
                ..Default::default()
            };
            let summary = parley_loadtest::run::run(&test, |line| eprintln!("loadtest: {line}")).await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
    }
}
