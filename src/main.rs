//! `maas`: the one binary of MaaS. See `maas --help`.

mod allocator;
mod commands;
mod control;
mod serve;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "maas",
    version,
    about = "Model as a Service: an OpenAI-compatible gateway, portal and metering for self-hosted LLMs"
)]
struct Cli {
    /// Server settings (maas.yaml); every setting has a default, MAAS_* variables override them.
    #[arg(long, short = 'c', global = true, env = "MAAS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: store, proxy, portal (and with --demo, simulated models).
    Up {
        /// Apply the built-in demo catalog (what is missing of it) and print a demo API key.
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        settings: serve::UpSettings,
    },
    /// Run the API gateway (data plane).
    Proxy {
        /// Address of the API (default: `proxy.listen`, 0.0.0.0:8080).
        #[arg(long, env = "MAAS_PROXY_LISTEN", hide_env_values = true)]
        listen: Option<std::net::SocketAddr>,
        /// Address of `/metrics`, `/health`, `/ready` (default: `proxy.metrics_listen`, 0.0.0.0:9421).
        #[arg(long, env = "MAAS_METRICS_LISTEN", hide_env_values = true)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// The environment whose product releases to serve (default: `proxy.environment`).
        #[arg(long, value_enum)]
        environment: Option<EnvironmentArg>,
    },
    /// Run the developer portal and the admin API (`/admin/api/v1`) on `portal.listen`.
    Portal,
    /// Run the OpenAI-compatible model simulator (vLLM's API and chunk shapes).
    Sim {
        /// Address to listen on (default: `sim.listen` of maas.yaml, 127.0.0.1:8000).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Models, timing and failure injection (YAML); two demo chat models by default.
        #[arg(long)]
        models: Option<PathBuf>,
        /// Seed of the simulated outputs and failures.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Load an OpenAI-compatible endpoint and measure latency, time to first token and chunk gaps.
    Bench(Box<maas_bench::BenchOptions>),
    /// Make the store match a catalog file (backends, products, plans, and optionally tenants).
    Apply {
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Delete backends, products and plans the file does not list.
        #[arg(long)]
        prune: bool,
        /// Promote changed products up to this environment.
        #[arg(long, value_enum, default_value_t = PromoteTo::Production)]
        promote_to: PromoteTo,
    },
    /// Write the store's catalog as YAML that `apply` accepts.
    Export {
        /// Include accounts, users and applications.
        #[arg(long)]
        tenants: bool,
        /// Write here instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Issue an API key for an application (printed once; the store keeps its hash).
    CreateKey {
        /// The application as `ACCOUNT/APPLICATION` (names, as in the catalog file).
        #[arg(long)]
        app: String,
        /// A label to tell keys apart.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Make a user an admin (or a member again), by email: the way, beside
    /// the console and the admin API, a local account becomes an admin.
    SetRole {
        /// The user's email.
        #[arg(long)]
        email: String,
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Check a maas.yaml or catalog file; prints `file:line: field: reason` per mistake.
    Check {
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// What the file is; guessed from its top-level keys by default.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Member,
}

#[derive(Clone, Copy, ValueEnum)]
enum PromoteTo {
    /// Write drafts only.
    None,
    Staging,
    Production,
}

#[derive(Clone, Copy, ValueEnum)]
enum EnvironmentArg {
    Staging,
    Production,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Config,
    Catalog,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Check { file, kind } => return commands::check(&file, kind.map(Kind::into)),
        Command::Proxy {
            listen,
            metrics_listen,
            environment,
        } => serve::proxy(
            config,
            serve::ProxyOverrides {
                listen,
                metrics_listen,
                environment: environment.map(|e| match e {
                    EnvironmentArg::Staging => maas_store::Environment::Staging,
                    EnvironmentArg::Production => maas_store::Environment::Production,
                }),
            },
        ),
        Command::Portal => serve::portal(config),
        Command::Sim { listen, models, seed } => commands::sim(config, listen, models, seed),
        Command::Up { demo, settings } => serve::up(config, demo, &settings),
        Command::Bench(options) => commands::bench(&options),
        Command::Apply {
            file,
            prune,
            promote_to,
        } => std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))
            .and_then(|text| {
                let command = control::StoreCommand::Apply {
                    source: file.display().to_string(),
                    text,
                    prune,
                    promote_to: promote_to.into(),
                };
                store_command(config, command, None)
            }),
        Command::SetRole { email, role } => {
            let role = match role {
                RoleArg::Admin => maas_store::model::UserRole::Admin,
                RoleArg::Member => maas_store::model::UserRole::Member,
            };
            store_command(config, control::StoreCommand::SetRole { email, role }, None)
        }
        Command::CreateKey { app, label } => {
            store_command(config, control::StoreCommand::CreateKey { app, label }, None)
        }
        Command::Export { tenants, output } => {
            store_command(config, control::StoreCommand::Export { tenants }, output.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a store command (beside a running server when one holds the
/// embedded store) and prints what it printed; `output` takes its standard
/// output instead.
fn store_command(config_path: Option<&Path>, command: control::StoreCommand, output: Option<&Path>) -> Result<()> {
    let config = commands::load_config(config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    commands::init_logging(&config);
    let printed = control::execute(&config, command)?;
    eprint!("{}", printed.stderr);
    match output {
        Some(path) => std::fs::write(path, &printed.stdout).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{}", printed.stdout),
    }
    match printed.error {
        Some(error) => Err(anyhow::anyhow!(error)),
        None => Ok(()),
    }
}

impl From<PromoteTo> for Option<maas_store::Environment> {
    fn from(value: PromoteTo) -> Self {
        match value {
            PromoteTo::None => None,
            PromoteTo::Staging => Some(maas_store::Environment::Staging),
            PromoteTo::Production => Some(maas_store::Environment::Production),
        }
    }
}

impl From<Kind> for maas_conf::FileKind {
    fn from(value: Kind) -> Self {
        match value {
            Kind::Config => maas_conf::FileKind::Config,
            Kind::Catalog => maas_conf::FileKind::Catalog,
        }
    }
}
