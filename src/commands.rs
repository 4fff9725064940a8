//! What each subcommand does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use maas_conf::{ConfigErrors, FileKind, MaasConfig};
use maas_store::document::{ApplyOptions, ApplyReport};
use maas_store::{Actor, Environment, NewKey, Store, StoreLocation, StoreOptions};

use crate::control::CommandOutput;

fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub fn load_config(path: Option<&Path>) -> Result<MaasConfig, ConfigErrors> {
    maas_conf::load_config(path, &environment)
}

pub fn init_logging(config: &MaasConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.logging.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.logging.format {
        maas_conf::LogFormat::Json => builder.json().try_init(),
        maas_conf::LogFormat::Text => builder.try_init(),
    };
}

pub fn describe(location: &StoreLocation) -> String {
    match location {
        StoreLocation::Embedded { data_dir } => format!("embedded ({})", data_dir.join("maas.redb").display()),
        StoreLocation::Redis { url, prefix, .. } => {
            format!("redis ({}, prefix `{prefix}`)", maas_conf::redact_url(url))
        }
    }
}

/// Opens the store the configuration names.
pub async fn open_store(config: &MaasConfig) -> Result<Store> {
    open_store_with(config, StoreOptions::default()).await
}

/// The proxy's store: Redis commands wait long for their answer, since the
/// proxy puts its own deadline (`store.timeout_ms`) on what requests wait
/// for, and a usage write given up on might still run when a hung Redis
/// wakes; a Redis that is not up yet is waited for.
pub async fn open_proxy_store(config: &MaasConfig, wait_for_redis: bool) -> Result<Store> {
    let options = StoreOptions {
        redis_response_timeout: std::time::Duration::from_secs(60),
        wait_for_redis,
        ..StoreOptions::default()
    };
    open_store_with(config, options).await
}

async fn open_store_with(config: &MaasConfig, options: StoreOptions) -> Result<Store> {
    let location = config.store.location();
    let options = StoreOptions {
        key_prefix: config.keys.prefix.clone(),
        ..options
    };
    Store::open(&location, options)
        .await
        .with_context(|| format!("opening the {} store", describe(&location)))
}

pub fn check(file: &Path, kind: Option<FileKind>) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let source = file.display().to_string();
    let result = match kind.unwrap_or_else(|| maas_conf::detect_kind(&text)) {
        FileKind::Catalog => maas_conf::parse_catalog(&source, &text).map(|doc| {
            for product in &doc.products {
                for note in maas_proxy::request::mapping::unmetered_notes(product) {
                    println!("{source}: note: {note}");
                }
            }
            format!(
                "catalog: {} backends, {} products, {} plans, {} accounts, {} users, {} applications",
                doc.backends.len(),
                doc.products.len(),
                doc.plans.len(),
                doc.accounts.len(),
                doc.users.len(),
                doc.applications.len()
            )
        }),
        FileKind::Config => maas_conf::load_config(Some(file), &environment).map(|config| {
            format!(
                "settings: store {}, proxy {}, portal {}",
                describe(&config.store.location()),
                config.proxy.listen,
                config.portal.listen
            )
        }),
    };
    match result {
        Ok(summary) => {
            println!("{source}: ok ({summary})");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{source}: {} error(s)", errors.0.len());
            ExitCode::FAILURE
        }
    }
}

/// What `apply` changed, one line each.
fn report_lines(report: &ApplyReport) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let catalog = &report.catalog;
    for (verb, items) in [
        ("created", &catalog.created),
        ("updated", &catalog.updated),
        ("deleted", &catalog.deleted),
    ] {
        for item in items {
            let _ = writeln!(text, "  {verb} {item}");
        }
    }
    for item in &report.promoted {
        let _ = writeln!(text, "  promoted {item}");
    }
    for item in &report.tenants_created {
        let _ = writeln!(text, "  created {item}");
    }
    for item in &report.tenants_updated {
        let _ = writeln!(text, "  updated {item}");
    }
    if !report.kept.is_empty() {
        let _ = writeln!(text, "  kept as they are: {}", report.kept.join(", "));
    } else if report.is_empty() {
        let _ = writeln!(text, "  no changes: the store already matches");
    }
    text
}

fn print_report(report: &ApplyReport) {
    print!("{}", report_lines(report));
}

/// `maas apply`: the catalog `text` (from the file `source`) into the store.
pub async fn apply(
    store: &Store,
    source: &str,
    text: &str,
    prune: bool,
    promote_to: Option<Environment>,
    out: &mut CommandOutput,
) -> Result<()> {
    let document = maas_conf::parse_catalog(source, text).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let store = store.as_actor(Actor::new("cli", "maas apply", None));
    let options = ApplyOptions {
        prune,
        promote_to,
        keep_existing: false,
    };
    let report = store.apply(&document, &options).await.map_err(|error| match error {
        maas_store::StoreError::Invalid(errors) => {
            anyhow::anyhow!("{}", maas_conf::locate_apply_errors(source, text, &document, errors))
        }
        other => anyhow::anyhow!("{source}: {other}"),
    })?;
    out.stdout
        .push_str(&format!("applied {source} to the {} store:\n", store.backend_kind()));
    out.stdout.push_str(&report_lines(&report));
    Ok(())
}

/// `maas export`: the store as YAML that `apply` accepts.
pub async fn export(store: &Store, tenants: bool, out: &mut CommandOutput) -> Result<()> {
    let document = store.export(tenants).await.context("reading the catalog")?;
    out.stdout = format!(
        "# exported by maas {}\n{}",
        env!("CARGO_PKG_VERSION"),
        maas_conf::catalog_to_yaml(&document)
    );
    Ok(())
}

/// `maas set-role`: an operator on the server makes a user an admin.
pub async fn set_role(
    store: &Store,
    email: &str,
    role: maas_store::model::UserRole,
    out: &mut CommandOutput,
) -> Result<()> {
    let store = store.as_actor(Actor::new("cli", "maas set-role", None));
    let user = store
        .find_user_by_email(email)
        .await?
        .with_context(|| format!("no user with the email `{email}`"))?;
    let update = maas_store::UserUpdate {
        role: Some(role),
        ..maas_store::UserUpdate::default()
    };
    let user = store.update_user(&user.id, update).await?;
    let note = if user.sso.is_some() {
        " (company sign-in decides the role again at the user's next sign-in)"
    } else {
        ""
    };
    out.stderr.push_str(&format!(
        "{} is now {}{note}\n",
        user.email,
        serde_json::to_value(user.role)?.as_str().unwrap_or("?")
    ));
    Ok(())
}

/// `maas create-key --app ACCOUNT/APP`: the secret alone on stdout.
pub async fn create_key(store: &Store, app: &str, label: String, out: &mut CommandOutput) -> Result<()> {
    let (account_name, app_name) = app
        .split_once('/')
        .with_context(|| format!("`{app}`: name the application as ACCOUNT/APPLICATION"))?;
    let store = store.as_actor(Actor::new("cli", "maas create-key", None));
    let account = store
        .find_account(account_name)
        .await?
        .with_context(|| format!("no account named `{account_name}`"))?;
    let application = store
        .find_application(&account.id, app_name)
        .await?
        .with_context(|| format!("account `{account_name}` has no application named `{app_name}`"))?;
    let issued = store
        .create_key(
            &application.id,
            NewKey {
                label,
                expires_at: None,
            },
        )
        .await?;
    out.stderr.push_str(&format!(
        "key {} for {account_name}/{app_name} (product {}, plan {}); shown once:\n",
        issued.key.masked(),
        application.product,
        application.plan
    ));
    out.stdout.push_str(&format!("{}\n", issued.secret.expose()));
    Ok(())
}

const DEMO_KEY_LABEL: &str = "maas up --demo";

/// The demo's API key: made now (its secret, printed this once) or kept
/// from an earlier run (only its masked form is known).
pub enum DemoKey {
    Issued(String),
    Kept { masked: String },
}

/// The demo's portal admin: made now with a password, or kept as it is.
pub enum DemoAdmin {
    Created { email: String, password: String },
    Kept { email: String },
}

/// The store half of `maas up`: applies the configured catalog, and with
/// `--demo` seeds what the store lacks of the demo (catalog, account,
/// application, key), leaving what exists as it is.
pub async fn prepare_up(config: &MaasConfig, store: &Store, demo: bool) -> Result<Option<DemoKey>> {
    let store = store.as_actor(Actor::new("cli", "maas up", None));
    println!(
        "MaaS {} — store: {}",
        env!("CARGO_PKG_VERSION"),
        describe(&config.store.location())
    );
    if let Some(path) = &config.catalog {
        let document = maas_conf::load_catalog(path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
        println!("catalog {}:", path.display());
        print_report(&store.apply(&document, &ApplyOptions::default()).await?);
    }
    if !demo {
        return Ok(None);
    }
    let mut document = maas_conf::parse_catalog("demo catalog", maas_conf::DEMO_CATALOG)
        .map_err(|errors| anyhow::anyhow!("{errors}"))?;
    // The demo models are served by the built-in simulator, wherever `sim.listen` puts it.
    let mut sim = config.sim.listen;
    if sim.ip().is_unspecified() {
        sim.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let sim_url = format!("http://{sim}");
    for backend in document.backends.iter_mut().filter(|b| b.system_name == "sim") {
        backend.urls = vec![sim_url.clone()];
    }
    println!("demo catalog (made where missing; what exists is kept as it is):");
    let seed = ApplyOptions {
        keep_existing: true,
        ..ApplyOptions::default()
    };
    print_report(&store.apply(&document, &seed).await?);
    follow_simulator(&store, &sim_url).await?;
    Ok(Some(demo_key(&store).await?))
}

/// Points the demo's `sim` backend at the simulator's address of this run,
/// when it still names a simulator on this machine (one loopback URL); a
/// backend an operator pointed elsewhere is left alone, with a warning.
async fn follow_simulator(store: &Store, sim_url: &str) -> Result<()> {
    let Some(mut backend) = store.get_backend("sim").await? else {
        return Ok(());
    };
    if backend.urls == [sim_url] {
        return Ok(());
    }
    let on_this_machine = match backend.urls.as_slice() {
        [url] => url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .is_some_and(|authority| match authority.parse::<std::net::SocketAddr>() {
                Ok(address) => address.ip().is_loopback(),
                Err(_) => authority.split(':').next() == Some("localhost"),
            }),
        _ => false,
    };
    if on_this_machine {
        println!(
            "  updated backend sim: {} → {sim_url} (the simulator of this run)",
            backend.urls[0]
        );
        backend.urls = vec![sim_url.to_owned()];
        store.put_backend(backend).await?;
    } else {
        println!(
            "  warning: backend sim points at {} (kept); the demo simulator listens on {sim_url}",
            backend.urls.join(", ")
        );
    }
    Ok(())
}

/// The demo's portal admin `admin@demo.local` in account Demo: made with a
/// random password (stored as an Argon2id hash) when missing, so the
/// console can be tried at once; an existing one is left as it is.
pub async fn demo_admin(store: &Store) -> Result<DemoAdmin> {
    let store = store.as_actor(Actor::new("cli", "maas up", None));
    let email = ["admin", "demo.local"].join("@");
    if store.find_user_by_email(&email).await?.is_some() {
        return Ok(DemoAdmin::Kept { email });
    }
    let password = maas_store::ids::hex(&maas_store::ids::random_bytes::<12>());
    let hash = maas_portal::accounts::hash_password(password.clone())
        .await
        .map_err(|e| anyhow::anyhow!("hashing the demo admin's password: {}", e.message))?;
    let account = store
        .find_account("Demo")
        .await?
        .context("the demo catalog creates account Demo")?;
    store
        .create_user(maas_store::NewUser {
            account_id: account.id,
            email: email.clone(),
            display_name: "Demo admin".into(),
            role: maas_store::model::UserRole::Admin,
            state: maas_store::model::UserState::Active,
            sso: None,
            password_hash: Some(hash),
            email_verified: true,
        })
        .await?;
    Ok(DemoAdmin::Created { email, password })
}

/// The demo application's key: a usable one made by an earlier run is
/// kept; else a new one is issued.
async fn demo_key(store: &Store) -> Result<DemoKey> {
    let account = store
        .find_account("Demo")
        .await?
        .context("the demo catalog creates account Demo")?;
    let app = store
        .find_application(&account.id, "demo-app")
        .await?
        .context("the demo catalog creates application demo-app")?;
    let now = time::OffsetDateTime::now_utc();
    if let Some(key) = store
        .application_keys(&app.id)
        .await?
        .into_iter()
        .find(|k| k.label == DEMO_KEY_LABEL && k.is_usable_at(now))
    {
        return Ok(DemoKey::Kept { masked: key.masked() });
    }
    let issued = store
        .create_key(
            &app.id,
            NewKey {
                label: DEMO_KEY_LABEL.into(),
                expires_at: None,
            },
        )
        .await?;
    Ok(DemoKey::Issued(issued.secret.into_string()))
}

/// Loads a simulator file: `file:line: field: reason` on mistakes.
pub fn load_sim_config(path: &Path) -> Result<maas_sim::SimConfig> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {source}"))?;
    let parsed = maas_conf::yaml::parse::<maas_sim::SimConfig>(&source, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    parsed.value.validate().map_err(|errors| {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| match parsed.index.line_of(&e.path) {
                Some(line) => format!("{source}:{line}: {e}"),
                None => format!("{source}: {e}"),
            })
            .collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })?;
    Ok(parsed.value)
}

/// `maas sim`: serves simulated models until SIGINT or SIGTERM.
pub fn sim(
    config_path: Option<&Path>,
    listen: Option<std::net::SocketAddr>,
    models: Option<PathBuf>,
    seed: Option<u64>,
) -> Result<()> {
    let config = load_config(config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    init_logging(&config);
    let mut sim = match &models {
        Some(path) => load_sim_config(path)?,
        None => maas_sim::SimConfig::default(),
    };
    if let Some(seed) = seed {
        sim.seed = seed;
    }
    let listen = listen.unwrap_or(config.sim.listen);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        // A deep accept queue, as a model server behind a gateway needs:
        // with tokio's default of 1024, a burst of new upstream connections
        // (thousands of streams opening) overflows it and the dropped SYNs
        // come back a second or more later.
        let socket = if listen.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .context("creating the listening socket")?;
        socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
        socket.bind(listen).with_context(|| format!("listening on {listen}"))?;
        let listener = socket.listen(8192).with_context(|| format!("listening on {listen}"))?;
        let ids: Vec<&str> = sim.models.iter().map(|m| m.id.as_str()).collect();
        println!(
            "maas-sim listening on http://{} serving {}",
            listener.local_addr()?,
            ids.join(", ")
        );
        maas_sim::serve(listener, sim, shutdown_signal())
            .await
            .context("serving")
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return interrupt.await.unwrap_or(()),
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or(());
}

/// `maas bench`: runs the load, prints the figures, writes the JSON report.
pub fn bench(options: &maas_bench::BenchOptions) -> Result<()> {
    let report = maas_bench::run_blocking(options)?;
    let json = serde_json::to_string_pretty(&report)?;
    match options.json.as_deref() {
        Some("-") => println!("{json}"),
        Some(path) => {
            std::fs::write(path, json).with_context(|| format!("writing {path}"))?;
            print!("{report}");
        }
        None => print!("{report}"),
    }
    if report.ok == 0 {
        anyhow::bail!("no request got status {}", options.expect_status);
    }
    Ok(())
}
