//! The long-running commands: `maas proxy` and `maas up`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use maas_conf::{LimitMode, MaasConfig};
use maas_proxy::{Proxy, ProxyOptions};
use maas_store::{Environment, Store};

use crate::commands::{self, describe, init_logging, load_config, open_store};

/// Command-line overrides of `proxy.*` settings.
#[derive(Debug, Default, Clone)]
pub struct ProxyOverrides {
    pub listen: Option<std::net::SocketAddr>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub environment: Option<Environment>,
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
    }
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
    let store = runtime.block_on(open_store(&config))?;
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
pub fn up(config_path: Option<&Path>, demo: bool) -> Result<()> {
    let config = load_config(config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    init_logging(&config);
    let runtime = runtime()?;
    let store = runtime.block_on(open_store(&config))?;
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
    let public = config.proxy.public_url.trim_end_matches('/');
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
        let (email, password) = runtime.block_on(commands::demo_admin(&store))?;
        println!();
        println!("portal admin (demo; a new password each run): {email} / {password}");
        println!(
            "  sign in at {}/sign-in, then open {}/admin",
            config.portal.public_url, config.portal.public_url
        );
    }
    if let Some(secret) = &secret {
        let model = catalog
            .product("tinyllama")
            .and_then(|p| p.models.first().cloned())
            .unwrap_or_else(|| "tinyllama-1.1b-chat".into());
        println!();
        println!("demo API key (application demo-app, plan free; shown once, stored as a hash):");
        println!("  {secret}");
        println!();
        println!("try it:");
        println!(
            "  curl {public}/v1/chat/completions -H 'Authorization: Bearer {secret}' \\\n    -H 'Content-Type: application/json' \\\n    -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'"
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
    Ok(maas_portal::PortalOptions {
        public_url: settings.public_url.clone(),
        gateway_url: config.proxy.public_url.trim_end_matches('/').to_owned(),
        local_accounts: settings.local_accounts,
        session_ttl: Duration::from_secs(u64::from(settings.session_ttl_hours) * 3600),
        secure_cookies: settings
            .secure_cookies
            .unwrap_or_else(|| settings.public_url.starts_with("https://")),
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
fn spawn_admin_api(runtime: &tokio::runtime::Runtime, store: &Store, config: &MaasConfig) -> Result<()> {
    let app = runtime.block_on(admin_app(store, config))?;
    let listener = runtime.block_on(bind_portal(config))?;
    println!(
        "portal on {} (listening on {}), admin API at {}",
        config.portal.public_url,
        config.portal.listen,
        maas_admin_api::BASE_PATH
    );
    runtime.spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the admin API stopped");
        }
    });
    Ok(())
}

/// `maas portal`: the portal pages and the admin API,
/// until SIGINT or SIGTERM.
pub fn portal(config_path: Option<&Path>) -> Result<()> {
    let config = load_config(config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    init_logging(&config);
    let runtime = runtime()?;
    let store = runtime.block_on(open_store(&config))?;
    // The app (and its bootstrap token) before the port opens: a client
    // that finds the port open finds the API ready.
    let app = runtime.block_on(admin_app(&store, &config))?;
    let listener = runtime.block_on(bind_portal(&config))?;
    eprintln!(
        "maas portal: portal on {} (listening on {}), admin API at {}, store {}",
        config.portal.public_url,
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
