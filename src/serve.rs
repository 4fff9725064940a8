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
        shutdown_timeout: Duration::from_secs(30),
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
    println!("portal: not built yet (issues #5, #6)");
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
