//! The long-running commands: `maas proxy` and `maas up`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use maas_conf::{LimitMode, MaasConfig};
use maas_proxy::{Proxy, ProxyOptions};
use maas_store::{Environment, Store};

use crate::commands::{self, describe, init_logging, load_config, open_store};
use crate::control;

/// With the embedded store, which one process holds, the store commands
/// (`apply`, `export`, `create-key`, `set-role`) reach this process through
/// the data directory's socket instead; the socket lives as long as the
/// value returned.
fn take_commands(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    config: &MaasConfig,
) -> Option<control::ControlSocket> {
    let maas_store::StoreLocation::Embedded { data_dir } = config.store.location() else {
        return None;
    };
    match control::listen(runtime, store, &data_dir) {
        Ok(socket) => Some(socket),
        Err(error) => {
            eprintln!(
                "warning: {error:#}; `maas apply`, `export`, `create-key` and `set-role` cannot run beside this process"
            );
            None
        }
    }
}

/// Command-line overrides of `proxy.*` settings.
#[derive(Debug, Default, Clone)]
pub struct ProxyOverrides {
    pub listen: Option<std::net::SocketAddr>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub environment: Option<Environment>,
}

/// The settings a first run needs, as flags of `maas up` (each also a
/// `MAAS_*` variable and a `maas.yaml` field; a flag wins).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct UpSettings {
    /// Address of the OpenAI-compatible API [default: `proxy.listen`, 0.0.0.0:8080]
    #[arg(long, value_name = "ADDR", env = "MAAS_PROXY_LISTEN", hide_env_values = true)]
    pub listen: Option<std::net::SocketAddr>,
    /// Address of `/metrics`, `/health`, `/ready` [default: 0.0.0.0:9421]
    #[arg(long, value_name = "ADDR", env = "MAAS_METRICS_LISTEN", hide_env_values = true)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Address of the portal and the admin API [default: 0.0.0.0:3000]
    #[arg(long, value_name = "ADDR", env = "MAAS_PORTAL_LISTEN", hide_env_values = true)]
    pub portal_listen: Option<std::net::SocketAddr>,
    /// Address of the demo's simulated models [default: 127.0.0.1:8000]
    #[arg(long, value_name = "ADDR", env = "MAAS_SIM_LISTEN", hide_env_values = true)]
    pub sim_listen: Option<std::net::SocketAddr>,
    /// The API's URL as developers reach it (behind a load balancer, a
    /// TLS terminator); printed and shown in the portal [default: from --listen]
    #[arg(long, value_name = "URL", env = "MAAS_PROXY_PUBLIC_URL", hide_env_values = true)]
    pub public_url: Option<String>,
    /// The portal's URL as browsers reach it (SSO redirects) [default: from --portal-listen]
    #[arg(long, value_name = "URL", env = "MAAS_PORTAL_PUBLIC_URL", hide_env_values = true)]
    pub portal_public_url: Option<String>,
    /// Directory of the embedded store [default: `store.data_dir`, ./data]
    #[arg(long, value_name = "DIR", env = "MAAS_DATA_DIR", hide_env_values = true)]
    pub data_dir: Option<std::path::PathBuf>,
}

impl UpSettings {
    /// Writes the flags given over the configuration, then checks it again
    /// (a flag's URL is checked like the file's).
    fn apply_to(&self, config: &mut MaasConfig) -> Result<()> {
        let set = |target: &mut std::net::SocketAddr, value: Option<std::net::SocketAddr>| {
            if let Some(value) = value {
                *target = value;
            }
        };
        set(&mut config.proxy.listen, self.listen);
        set(&mut config.proxy.metrics_listen, self.metrics_listen);
        set(&mut config.portal.listen, self.portal_listen);
        set(&mut config.sim.listen, self.sim_listen);
        if let Some(url) = &self.public_url {
            config.proxy.public_url = Some(url.clone());
        }
        if let Some(url) = &self.portal_public_url {
            config.portal.public_url = Some(url.clone());
        }
        if let Some(dir) = &self.data_dir {
            config.store.data_dir = dir.clone();
        }
        config.validate().map_err(|errors| {
            let lines: Vec<String> = errors
                .0
                .iter()
                .map(|e| format!("{}: {}", flag_of(&e.path), e.message))
                .collect();
            anyhow::anyhow!("{}", lines.join("\n"))
        })
    }
}

/// The flag of a setting's path, for errors in flags' values.
fn flag_of(path: &str) -> String {
    match path {
        "proxy.public_url" => "--public-url (proxy.public_url)".into(),
        "portal.public_url" => "--portal-public-url (portal.public_url)".into(),
        other => other.into(),
    }
}

fn proxy_options(config: &MaasConfig, overrides: &ProxyOverrides) -> ProxyOptions {
    let limit_mode = match config.limits.mode {
        LimitMode::Strict => maas_proxy::LimitMode::Strict,
        LimitMode::Local => maas_proxy::LimitMode::Local {
            sync_interval: Duration::from_millis(config.limits.sync_interval_ms.max(1)),
        },
    };
    ProxyOptions {
        listen: overrides.listen.unwrap_or(config.proxy.listen).to_string(),
        metrics_listen: overrides
            .metrics_listen
            .unwrap_or(config.proxy.metrics_listen)
            .to_string(),
        environment: overrides.environment.unwrap_or(config.proxy.environment),
        max_body_bytes: config.proxy.max_body_bytes,
        access_log: config.logging.access_log,
        overhead_header: config.proxy.overhead_header,
        report_every: (config.proxy.report_interval_ms > 0)
            .then(|| Duration::from_millis(config.proxy.report_interval_ms)),
        limit_mode,
        holds: maas_proxy::HoldPolicy {
            ttl: Duration::from_secs(config.limits.hold_ttl_secs),
            default_max_tokens: config.limits.default_max_tokens,
        },
        flush_interval: Duration::from_millis(config.limits.sync_interval_ms.max(1)),
        threads: match config.proxy.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            threads => threads,
        },
        shutdown_timeout: Duration::from_secs(config.proxy.shutdown_timeout_secs),
        upstream_ca_file: config.proxy.upstream_ca_file.clone(),
        breaker: maas_proxy::limits::breaker::BreakerSettings {
            failures_to_open: config.store.breaker_failures.max(1),
            call_timeout: Duration::from_millis(config.store.timeout_ms.max(1)),
            probe_interval: Duration::from_secs(1),
        },
        outage: match config.store.outage {
            maas_conf::OutageMode::ServeCached => maas_proxy::limits::outage::OutagePolicy::ServeCached {
                max_key_age: Duration::from_secs(config.store.outage_max_key_age_secs),
            },
            maas_conf::OutageMode::FailClosed => maas_proxy::limits::outage::OutagePolicy::FailClosed,
        },
        // The embedded store lives in this process: nothing to spool for.
        spool: matches!(config.store.location(), maas_store::StoreLocation::Redis { .. }).then(|| {
            maas_proxy::record::spool::SpoolSettings {
                dir: config
                    .store
                    .spool_dir
                    .clone()
                    .unwrap_or_else(|| config.store.data_dir.join("spool")),
                max_bytes: config.store.spool_max_mb.saturating_mul(1 << 20),
                fsync: config.store.spool_fsync == maas_conf::SpoolFsync::Always,
            }
        }),
        spool_required: config.store.spool_dir.is_some(),
        access_tokens: access_token_settings(config),
        otlp: config
            .telemetry
            .otlp_endpoint
            .clone()
            .map(|endpoint| maas_proxy::record::otlp::OtlpSettings {
                endpoint,
                service_name: config.telemetry.service_name.clone(),
                metrics_interval: Duration::from_millis(config.telemetry.metrics_interval_ms),
            }),
        trace_ratio: config.telemetry.trace_sample_ratio,
    }
}

/// `access_tokens:` as the proxy takes it; none when not enabled.
fn access_token_settings(config: &MaasConfig) -> Option<maas_proxy::identity::AccessTokenSettings> {
    use maas_proxy::identity::jwks::KeySource;
    use maas_proxy::identity::jwt::{JwsAlg, TokenRules};
    let tokens = &config.access_tokens;
    if !tokens.enabled {
        return None;
    }
    // Validated: enabled access tokens have an issuer and an audience.
    let issuer = config.access_token_issuer()?.to_owned();
    Some(maas_proxy::identity::AccessTokenSettings {
        rules: TokenRules {
            issuer: issuer.clone(),
            audience: tokens.audience.clone()?,
            algorithms: tokens
                .algorithms
                .iter()
                .filter_map(|name| JwsAlg::parse(name))
                .collect(),
            leeway_secs: i64::from(tokens.leeway_secs),
        },
        keys: KeySource {
            issuer,
            jwks_url: tokens.jwks_url.clone(),
            min_refresh: Duration::from_secs(u64::from(tokens.jwks_min_refresh_secs)),
            max_age: Duration::from_secs(u64::from(tokens.jwks_max_age_secs)),
            timeout: Duration::from_secs(5),
        },
        organization_claim: config.access_token_organization_claim().to_owned(),
        groups_claim: tokens.groups_claim.clone(),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("maas-control")
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Starts the proxy on `runtime` and serves until a signal; then writes
/// the usage still queued and flushes the store.
fn serve(runtime: &tokio::runtime::Runtime, store: Store, options: ProxyOptions) -> Result<()> {
    let proxy = runtime
        .block_on(Proxy::start(store.clone(), options))
        .map_err(|e| anyhow::anyhow!(e))?;
    let served = proxy.run().map_err(|e| anyhow::anyhow!(e));
    runtime.block_on(store.flush()).context("flushing the store")?;
    served
}

/// `maas proxy`: the data plane alone.
pub fn proxy(config_path: Option<&Path>, overrides: ProxyOverrides) -> Result<()> {
    let config = load_config(config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    init_logging(&config);
    let runtime = runtime()?;
    let store = runtime.block_on(commands::open_proxy_store(&config, true))?;
    let _commands = take_commands(&runtime, &store, &config);
    let options = proxy_options(&config, &overrides);
    // Standard output carries the access log alone.
    eprintln!(
        "maas proxy: serving {} on http://{} (metrics http://{}/metrics), store {}",
        options.environment,
        options.listen,
        options.metrics_listen,
        describe(&config.store.location())
    );
    serve(&runtime, store, options)
}

/// `maas up`: store, proxy and (with `--demo`) the simulated models in one process.
pub fn up(config_path: Option<&Path>, demo: bool, settings: &UpSettings) -> Result<()> {
    let mut config = load_config(config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    settings.apply_to(&mut config)?;
    init_logging(&config);
    let runtime = runtime()?;
    let store = runtime.block_on(commands::open_proxy_store(&config, false))?;
    let _commands = take_commands(&runtime, &store, &config);
    let secret = runtime.block_on(commands::prepare_up(&config, &store, demo))?;
    if demo {
        let listen = config.sim.listen;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| format!("starting the simulator on {listen} (is something else using the port?)"))?;
        let sim = maas_sim::SimConfig::default();
        let models: Vec<String> = sim.models.iter().map(|m| m.id.clone()).collect();
        runtime.spawn(async move {
            if let Err(error) = maas_sim::serve(listener, sim, std::future::pending()).await {
                tracing::error!(%error, "the simulator stopped");
            }
        });
        println!("simulated models on http://{listen}: {}", models.join(", "));
    }
    let options = proxy_options(&config, &ProxyOverrides::default());
    let catalog = runtime.block_on(store.catalog_for(options.environment))?;
    let public = config.proxy.advertised_url();
    println!();
    println!(
        "API gateway on http://{} — serving {}:",
        options.listen, options.environment
    );
    for product in &catalog.products {
        let endpoint = product.path_prefix.as_deref().unwrap_or("");
        println!(
            "  {} [{}]: {public}{endpoint}/v1 (or {public}/v1 by model)",
            product.display_name(),
            product.models.join(", ")
        );
    }
    println!("metrics on http://{}/metrics", options.metrics_listen);
    spawn_admin_api(&runtime, &store, &config)?;
    if demo {
        let portal = config.portal.advertised_url();
        println!();
        match runtime.block_on(commands::demo_admin(&store))? {
            commands::DemoAdmin::Created { email, password } => {
                println!("portal admin (demo; made now, the password is shown once): {email} / {password}");
            }
            commands::DemoAdmin::Kept { email } => {
                println!("portal admin (demo): {email}, kept with the password printed when it was made");
            }
        }
        println!("  sign in at {portal}/sign-in, then open {portal}/admin");
    }
    if let Some(key) = &secret {
        let model = catalog
            .product("tinyllama")
            .and_then(|p| p.models.first().cloned())
            .unwrap_or_else(|| "tinyllama-1.1b-chat".into());
        let shown = match key {
            commands::DemoKey::Issued(secret) => {
                println!();
                println!("demo API key (application Demo/demo-app, plan free; shown once, stored as a hash):");
                println!("  {secret}");
                secret.clone()
            }
            commands::DemoKey::Kept { masked } => {
                println!();
                println!(
                    "demo API key: {masked} of Demo/demo-app, kept from an earlier run (its secret was shown \
                     once then); new keys: the portal's application page"
                );
                "$MAAS_API_KEY".to_owned()
            }
        };
        println!();
        println!("try it:");
        println!(
            "  curl {public}/v1/chat/completions -H \"Authorization: Bearer {shown}\" \\\n    -H 'Content-Type: application/json' \\\n    -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'"
        );
    }
    println!();
    serve(&runtime, store, options)
}

/// The admin API's tokens: the configured bootstrap token, else one made
/// now, printed once and kept only as a hash for this process's lifetime.
/// The configured admin token; without one, a bootstrap token is made the
/// first time the store has no admin token at all, stored hashed like the
/// tokens made through `/tokens`, and printed this once.
async fn admin_tokens(store: &Store, config: &MaasConfig) -> Result<maas_admin_api::AdminTokens> {
    if let Some(secret) = &config.secrets.admin_token {
        return Ok(maas_admin_api::AdminTokens::new(Some(secret.expose())));
    }
    let existing = store.list_admin_tokens().await.context("reading the admin tokens")?;
    if existing.is_empty() {
        let (_, secret) = store
            .as_actor(maas_store::Actor::system())
            .create_admin_token("bootstrap", maas_store::model::AdminScope::Write)
            .await
            .context("creating the bootstrap admin token")?;
        eprintln!(
            "admin API bootstrap token (stored hashed, shown only now; keep it, or set MAAS_ADMIN_TOKEN):\n  {}",
            secret.expose()
        );
    } else {
        eprintln!(
            "admin API: {} token(s) in the store (the bootstrap token was printed at first start); \
             MAAS_ADMIN_TOKEN or admin.token_file adds one",
            existing.len()
        );
    }
    Ok(maas_admin_api::AdminTokens::default())
}

async fn bind_portal(config: &MaasConfig) -> Result<tokio::net::TcpListener> {
    let listen = config.portal.listen;
    tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("starting the admin API on {listen} (portal.listen; is something else using the port?)")
    })
}

/// The portal's options from the configuration.
fn portal_options(config: &MaasConfig) -> Result<maas_portal::PortalOptions> {
    let settings = &config.portal;
    let brand = &settings.brand;
    let logo = match &brand.logo_file {
        None => None,
        Some(path) => {
            let content_type = match path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("png") => "image/png",
                Some("jpg" | "jpeg") => "image/jpeg",
                Some("svg") => "image/svg+xml",
                _ => anyhow::bail!(
                    "portal.brand.logo_file: `{}` is not a .png, .jpg or .svg file",
                    path.display()
                ),
            };
            let bytes = std::fs::read(path)
                .with_context(|| format!("portal.brand.logo_file: cannot read `{}`", path.display()))?;
            Some((bytes, content_type))
        }
    };
    let public_url = settings.advertised_url();
    Ok(maas_portal::PortalOptions {
        secure_cookies: settings
            .secure_cookies
            .unwrap_or_else(|| public_url.starts_with("https://")),
        public_url,
        gateway_url: config.proxy.advertised_url(),
        local_accounts: settings.local_accounts,
        session_ttl: Duration::from_secs(u64::from(settings.session_ttl_hours) * 3600),
        templates_dir: settings.templates_dir.clone(),
        brand: maas_portal::Brand {
            name: brand.name.clone(),
            title: brand.title.clone(),
            home_text: brand.home_text.clone(),
            primary_color: brand.primary_color.clone(),
            logo,
        },
        admin_emails: config.admin.admin_emails.clone(),
        trusted_proxies: maas_portal::security::TrustedProxies::parse(&settings.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("portal.trusted_proxies: {e}"))?,
        password_checks: maas_portal::passwords::PasswordCheckLimits {
            concurrent: match settings.password_checks.concurrent {
                0 => maas_portal::passwords::PasswordCheckLimits::default().concurrent,
                n => n,
            },
            queued: settings.password_checks.queued,
            wait: Duration::from_secs(settings.password_checks.wait_seconds.max(1)),
        },
        sso: config.sso.enabled.then(|| maas_portal::sso::SsoOptions {
            display_name: config.sso.display_name.clone(),
            issuer_url: config.sso.issuer_url.clone().unwrap_or_default(),
            client_id: config.sso.client_id.clone().unwrap_or_default(),
            client_secret: config.secrets.sso_client_secret.as_ref().map(|s| s.expose().to_owned()),
            scopes: config.sso.scopes.clone(),
            account_claim: config.sso.account_claim.clone(),
            admin_claim: config.sso.admin_claim.clone(),
            admin_value: config.sso.admin_value.clone(),
            auto_approve: config.sso.auto_approve,
            token_auth: match config.sso.token_auth_method {
                maas_conf::TokenAuthMethod::Auto => maas_portal::sso::TokenAuth::Auto,
                maas_conf::TokenAuthMethod::ClientSecretBasic => maas_portal::sso::TokenAuth::Basic,
                maas_conf::TokenAuthMethod::ClientSecretPost => maas_portal::sso::TokenAuth::Post,
            },
            organization_change: match config.sso.organization_change {
                maas_conf::OrganizationChange::Move => maas_portal::sso::OrganizationChange::Move,
                maas_conf::OrganizationChange::Refuse => maas_portal::sso::OrganizationChange::Refuse,
            },
        }),
    })
}

/// The portal's pages and the admin API, on `portal.listen`.
async fn admin_app(
    store: &Store,
    config: &MaasConfig,
) -> Result<axum::extract::connect_info::IntoMakeServiceWithConnectInfo<axum::Router, std::net::SocketAddr>> {
    let tokens = admin_tokens(store, config).await?;
    let options = portal_options(config)?;
    let csp = maas_portal::content_security_policy(&options);
    let portal = maas_portal::router(store.clone(), options).map_err(|e| anyhow::anyhow!("portal template {e}"))?;
    // The admin API and its Swagger UI get the portal's headers too.
    let app = maas_admin_api::router(store.clone(), tokens).merge(portal);
    Ok(maas_portal::with_security_headers(app, csp).into_make_service_with_connect_info::<std::net::SocketAddr>())
}

/// `maas up`: the admin API beside the proxy, on the control runtime.
/// Budget alerts: scanned and sent from the control plane
/// ([`maas_portal::budget_alerts`]).
fn spawn_budget_alerts(runtime: &tokio::runtime::Runtime, store: &Store, config: &MaasConfig) {
    let webhook = config
        .alerts
        .webhook_url
        .clone()
        .zip(config.secrets.alerts_webhook_secret.as_ref())
        .map(|(url, secret)| maas_portal::budget_alerts::Webhook {
            url,
            secret: secret.expose().to_owned(),
        });
    let options = maas_portal::budget_alerts::AlertOptions {
        webhook,
        interval: std::time::Duration::from_millis(config.alerts.interval_ms),
        max_attempts: config.alerts.max_attempts,
    };
    runtime.spawn(maas_portal::budget_alerts::run(store.clone(), options));
}

fn spawn_admin_api(runtime: &tokio::runtime::Runtime, store: &Store, config: &MaasConfig) -> Result<()> {
    let app = runtime.block_on(admin_app(store, config))?;
    let listener = runtime.block_on(bind_portal(config))?;
    println!(
        "portal on {} (listening on {}), admin API at {}",
        config.portal.advertised_url(),
        config.portal.listen,
        maas_admin_api::BASE_PATH
    );
    runtime.spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the admin API stopped");
        }
    });
    spawn_budget_alerts(runtime, store, config);
    Ok(())
}

/// `maas portal`: the portal pages and the admin API,
/// until SIGINT or SIGTERM.
pub fn portal(config_path: Option<&Path>) -> Result<()> {
    let config = load_config(config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    init_logging(&config);
    let runtime = runtime()?;
    let store = runtime.block_on(open_store(&config))?;
    let _commands = take_commands(&runtime, &store, &config);
    // The app (and its bootstrap token) before the port opens: a client
    // that finds the port open finds the API ready.
    let app = runtime.block_on(admin_app(&store, &config))?;
    let listener = runtime.block_on(bind_portal(&config))?;
    spawn_budget_alerts(&runtime, &store, &config);
    eprintln!(
        "maas portal: portal on {} (listening on {}), admin API at {}, store {}",
        config.portal.advertised_url(),
        config.portal.listen,
        maas_admin_api::BASE_PATH,
        describe(&config.store.location())
    );
    runtime
        .block_on(async {
            axum::serve(listener, app)
                .with_graceful_shutdown(commands::shutdown_signal())
                .await
        })
        .context("serving the admin API")?;
    runtime.block_on(store.flush()).context("flushing the store")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// maas.yaml accepts exactly the algorithms the proxy verifies.
    #[test]
    fn configurable_token_algorithms_are_the_verified_ones() {
        let verified: Vec<&str> = maas_proxy::identity::jwt::JwsAlg::ALL
            .iter()
            .map(|a| a.name())
            .collect();
        assert_eq!(verified, maas_conf::TOKEN_ALGORITHMS);
    }
}
