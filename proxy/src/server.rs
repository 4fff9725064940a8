//! Wiring: the store-facing state on a Tokio runtime of our own (change
//! feed, usage batches, local-limit sync), and the Pingora server with the
//! proxy and metrics services, which owns its runtimes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use maas_store::{Environment, Store};
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;
use tokio::runtime::Handle;

use crate::limits::breaker::{BreakerSettings, StoreBreaker};
use crate::limits::outage::OutagePolicy;
use crate::limits::{HoldPolicy, LimitMode, Limiter};
use crate::phases::edge::EdgeApp;
use crate::phases::service::MaasProxy;
use crate::record::metrics::{METRICS, MetricsApp};
use crate::record::spool::SpoolSettings;
use crate::record::usage::UsageSink;
use crate::state::ProxyState;

/// How the proxy is run.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub listen: String,
    pub metrics_listen: String,
    pub environment: Environment,
    pub max_body_bytes: u64,
    pub access_log: bool,
    /// Send `x-maas-overhead-us` on proxied responses.
    pub overhead_header: bool,
    /// How often to report the replicas' live state to the store
    /// ([`crate::upstream::report`]); `None`: never.
    pub report_every: Option<Duration>,
    pub limit_mode: LimitMode,
    /// How requests hold tokens on plans with token limits.
    pub holds: HoldPolicy,
    /// How often queued usage is written in strict mode.
    pub flush_interval: Duration,
    /// Worker threads of the proxy service (default: one per core).
    pub threads: usize,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// CAs trusted for `https://` backends (PEM); the system's by default.
    pub upstream_ca_file: Option<PathBuf>,
    /// The store's circuit breaker.
    pub breaker: BreakerSettings,
    /// What requests get while the store does not answer.
    pub outage: OutagePolicy,
    /// Where usage the store does not take is spooled (none: memory only).
    pub spool: Option<SpoolSettings>,
    /// The issuer whose access tokens products with `oidc` take.
    pub access_tokens: Option<crate::identity::AccessTokenSettings>,
    /// Where the GenAI metrics and spans are exported (OTLP/HTTP).
    pub otlp: Option<crate::record::otlp::OtlpSettings>,
    /// Share of new traces given a span (with `otlp`); 0: tracing off.
    pub trace_ratio: f64,
    /// Whether a spool that cannot be opened stops the start (it was
    /// configured), or only leaves usage in memory (the default place).
    pub spool_required: bool,
}

/// The data plane, ready to serve.
pub struct Proxy {
    state: Arc<ProxyState>,
    options: ProxyOptions,
    control: Handle,
}

impl Proxy {
    /// Loads the catalog and starts the background tasks on `control`
    /// (the runtime the store was opened on).
    pub async fn start(store: Store, options: ProxyOptions) -> Result<Proxy, String> {
        if let Some(path) = &options.upstream_ca_file {
            check_ca_file(path)?;
        }
        let sink = Arc::new(match &options.spool {
            None => UsageSink::new(store.clone()),
            Some(settings) => match UsageSink::with_spool(store.clone(), settings.clone()) {
                Ok(sink) => sink,
                Err(error) if options.spool_required => return Err(format!("store.spool_dir: {error}")),
                Err(error) => {
                    tracing::error!(
                        %error,
                        "no usage spool (set store.spool_dir to a writable directory): usage waits in memory \
                         while the store does not answer"
                    );
                    UsageSink::new(store.clone())
                }
            },
        });
        let breaker = Arc::new(StoreBreaker::new(options.breaker));
        let limiter = Limiter::new(store.clone(), sink, options.limit_mode, options.holds)
            .with_outage(breaker.clone(), options.outage);
        let mut state = ProxyState::new(
            store,
            options.environment,
            limiter,
            options.max_body_bytes,
            options.access_log,
        );
        state.overhead_header = options.overhead_header;
        if let Some(settings) = &options.otlp {
            crate::record::otlp::spawn_exporter(settings.clone(), &Handle::current())?;
            state.trace_ratio = (options.trace_ratio > 0.0).then_some(options.trace_ratio);
        }
        if let Some(settings) = &options.access_tokens {
            state.tokens = Some(crate::identity::TokenVerifier::new(
                settings.clone(),
                Handle::current(),
            )?);
        }
        let state = Arc::new(state);
        match state.reload_catalog().await {
            Ok(()) => {}
            // Started before the store: serve 503 and retry until it answers.
            Err(error) if crate::limits::breaker::is_unavailable(&error) => {
                tracing::warn!(%error, "the store does not answer; the catalog loads when it does");
                state.start_without_catalog(&error);
            }
            Err(error) => return Err(format!("loading the {} catalog: {error}", options.environment)),
        }
        tokio::spawn(state.clone().follow_changes());
        tokio::spawn(breaker.run_probes(state.store.clone()));
        if let Some(every) = options.report_every {
            tokio::spawn(crate::upstream::report::report_forever(
                state.clone(),
                crate::upstream::report::proxy_name(&options.listen),
                every,
            ));
        }
        let interval = match options.limit_mode {
            LimitMode::Strict => options.flush_interval,
            LimitMode::Local { sync_interval } => sync_interval,
        };
        let syncing = state.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(error) = syncing.limiter.sync().await {
                    METRICS.store_errors.with_label_values(&["record_usage"]).inc();
                    tracing::warn!(%error, "writing usage failed; kept for the next attempt");
                }
            }
        });
        // Keys' last use on a loop of its own: it must never hold up usage
        // (or its spooling during an outage).
        let noting = state.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(KEY_USE_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                write_key_uses(&noting).await;
            }
        });
        Ok(Proxy {
            state,
            options,
            control: Handle::current(),
        })
    }

    pub fn state(&self) -> &Arc<ProxyState> {
        &self.state
    }

    /// Serves until SIGINT/SIGTERM (blocking: Pingora owns its runtimes),
    /// then writes the usage still queued.
    pub fn run(self) -> Result<(), String> {
        // On SIGTERM Pingora stops accepting, then sleeps the whole grace
        // period before dropping what still runs; `exit_when_drained` ends
        // the process as soon as the requests in flight are done.
        let mut conf = ServerConf {
            threads: self.options.threads.max(1),
            grace_period_seconds: Some(self.options.shutdown_timeout.as_secs()),
            graceful_shutdown_timeout_seconds: Some(1),
            ca_file: self.options.upstream_ca_file.as_ref().map(|p| p.display().to_string()),
            ..ServerConf::default()
        };
        self.control.spawn(exit_when_drained(self.state.clone()));
        conf.upstream_keepalive_pool_size = 1024;
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let app = pingora_proxy::http_proxy(&server.configuration, MaasProxy::new(self.state.clone()));
        let mut proxy = Service::new("maas proxy".to_owned(), EdgeApp::new(app));
        // Pingora's default 64 KiB read buffer per client connection is for
        // TLS records; plaintext HTTP/1 reads into the session's own header
        // buffer, so the extra buffer only costs memory per open stream.
        proxy.endpoints().add_listener(
            ListenerConfig::tcp(self.options.listen.clone()).l4_buffer(L4BufferSettings::default().read(0)),
        );
        let mut metrics = Service::new(
            "maas metrics".to_owned(),
            MetricsApp {
                state: self.state.clone(),
            },
        );
        metrics.add_tcp(&self.options.metrics_listen);
        server.add_service(proxy);
        server.add_service(metrics);
        server.run(RunArgs::default());
        let state = self.state.clone();
        self.control.block_on(async move { write_usage(&state).await })
    }
}

/// Pingora reads the upstream CA file when the service is built and
/// cannot say which setting was wrong; check it first.
fn check_ca_file(path: &Path) -> Result<(), String> {
    let what = format!("proxy.upstream_ca_file: `{}`", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{what}: {e}"))?;
    if text.contains("PRIVATE KEY-----") {
        return Err(format!(
            "{what}: holds a private key; it must hold only CA certificates"
        ));
    }
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{what}: holds no PEM certificate"));
    }
    Ok(())
}

/// Writes what is queued: the access log, then the usage and the keys'
/// last use (the caller flushes the store).
async fn write_usage(state: &ProxyState) -> Result<(), String> {
    crate::record::access_log::flush();
    state
        .limiter
        .drain()
        .await
        .map_err(|e| format!("writing the last usage to the store: {e}"))?;
    write_key_uses(state).await;
    Ok(())
}

/// How often keys' last use is written: well within its minute.
const KEY_USE_INTERVAL: Duration = Duration::from_secs(2);

/// Writes which keys were used, by the minute; kept for the next try on
/// failure. Not usage: skipped while the store's breaker is open, bounded
/// by the breaker's call timeout, never tripping it nor stopping a drain.
async fn write_key_uses(state: &ProxyState) {
    let breaker = state.limiter.breaker();
    if breaker.is_open() {
        return;
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let written = tokio::time::timeout(breaker.call_timeout(), state.key_uses.flush(&state.store, now)).await;
    if let Err(error) = written.unwrap_or_else(|_| Err(maas_store::StoreError::Unavailable("timed out".into()))) {
        METRICS.store_errors.with_label_values(&["record_key_uses"]).inc();
        tracing::warn!(%error, "writing when keys were last used failed; kept for the next attempt");
    }
}

/// After SIGTERM (Pingora has stopped accepting on the same signal), waits
/// for the requests and streams in flight to end, writes their usage,
/// flushes the store and exits 0, without sitting out the rest of the
/// grace period. Past the deadline Pingora's own shutdown takes over.
async fn exit_when_drained(state: Arc<ProxyState>) {
    let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        return;
    };
    if terminate.recv().await.is_none() {
        return;
    }
    tracing::info!(in_flight = METRICS.in_flight.get(), "SIGTERM: draining");
    while METRICS.in_flight.get() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = write_usage(&state).await;
    let flushed = state.store.flush().await;
    match (written, flushed) {
        (Ok(()), Ok(())) => {
            tracing::info!("drained: usage written, exiting");
            std::process::exit(0);
        }
        (Err(error), _) => tracing::error!(%error, "draining"),
        (_, Err(error)) => tracing::error!(%error, "flushing the store while draining"),
    }
    // Leave the exit to Pingora's shutdown, whose caller reports the error.
}
