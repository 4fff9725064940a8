//! Connecting to Redis: the client (TLS included), how a connection is
//! made (waiting for a server that is not up yet), what a failed command
//! means, and the change feed's subscriber.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, oneshot};

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};

use super::redis_link::FeedSource;
use super::redis_url::{self, ClusterTarget, SentinelTarget};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::store::RedisTls;

/// A client for a one-server `url`; a `rediss://` URL with PEM files
/// configured trusts `tls.ca_file` instead of the system's roots and may
/// present a client certificate.
pub(super) fn client(url: &str, tls: &RedisTls) -> StoreResult<redis::Client> {
    let bad_url = |e: redis::RedisError| StoreError::Unavailable(format!("redis URL: {e}"));
    match certificates(url, tls)? {
        None => redis::Client::open(url).map_err(bad_url),
        Some(certificates) => redis::Client::build_with_tls(url, certificates).map_err(bad_url),
    }
}

/// The PEM files as the redis crate takes them, `None` when none are set.
pub(super) fn certificates(url: &str, tls: &RedisTls) -> StoreResult<Option<redis::TlsCertificates>> {
    if redis_url::is_tls(url) {
        // The redis client builds its TLS config from the process's default
        // provider, which rustls cannot pick when several are linked in.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    if !tls.is_configured() {
        return Ok(None);
    }
    if !redis_url::is_tls(url) {
        return Err(StoreError::Unavailable(
            "redis TLS files are set but the URL is not rediss:// (or rediss+sentinel://, rediss+cluster://)".into(),
        ));
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| StoreError::Unavailable(format!("redis TLS: reading {}: {e}", path.display())))
    };
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(StoreError::Unavailable(
                "redis TLS: a client certificate needs both cert_file and key_file".into(),
            ));
        }
    };
    let root_cert = tls.ca_file.as_deref().map(read).transpose()?;
    Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
}

/// A sentinel client for `target`.
pub(super) fn sentinel_client(
    target: &SentinelTarget,
    certificates: Option<redis::TlsCertificates>,
) -> StoreResult<SentinelClient> {
    let addresses = target.sentinels.iter().map(|(host, port)| {
        if target.tls {
            redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let mut builder = SentinelClientBuilder::new(addresses, &target.master, SentinelServerType::Master)
        .map_err(unavailable)?
        .set_client_to_redis_db(target.db)
        .set_client_to_redis_tcp_settings(tcp_settings())
        .set_client_to_sentinel_tcp_settings(tcp_settings());
    if let Some(username) = &target.username {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = &target.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(username) = &target.sentinel_username {
        builder = builder.set_client_to_sentinel_username(username);
    }
    if let Some(password) = &target.sentinel_password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if target.tls {
        builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
        if let Some(certificates) = certificates {
            builder = builder
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_certificates(certificates);
        }
    }
    builder
        .build()
        .map_err(|e| StoreError::Unavailable(format!("redis sentinel URL: {e}")))
}

fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default()
}

/// A cluster client for `target`'s seed nodes.
pub(super) fn cluster_client(
    target: &ClusterTarget,
    certificates: Option<redis::TlsCertificates>,
    how: RedisConnect,
) -> StoreResult<ClusterClient> {
    let mut builder = ClusterClientBuilder::new(target.nodes.iter().map(String::as_str))
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(how.response_timeout)
        .retries(3);
    if let Some(certificates) = certificates {
        builder = builder.certs(certificates);
    }
    builder
        .build()
        .map_err(|e| StoreError::Unavailable(format!("redis cluster URL: {e}")))
}

/// How [`RedisBackend::connect_with`] connects.
#[derive(Debug, Clone, Copy)]
pub struct RedisConnect {
    /// How long a command waits for its answer before it fails.
    pub response_timeout: Duration,
    /// Whether a server that refuses or does not answer yet is waited for
    /// (connected on first use) instead of an error.
    pub wait_for_server: bool,
}

impl Default for RedisConnect {
    fn default() -> Self {
        RedisConnect {
            response_timeout: Duration::from_secs(5),
            wait_for_server: false,
        }
    }
}

pub(super) fn explain_connect_error(e: redis::RedisError, url: &str, tls: &RedisTls) -> StoreError {
    match unavailable(e) {
        StoreError::Unavailable(message)
            if redis_url::is_tls(url) && tls.ca_file.is_none() && message.contains("certificate") =>
        {
            StoreError::Unavailable(format!(
                "{message} (the server's certificate was checked against the system's trust store; \
                 set store.redis_tls_ca_file or MAAS_REDIS_TLS_CA_FILE to the CA that signed it)"
            ))
        }
        other => other,
    }
}

/// A write's error: a connection that dropped or timed out after the
/// command went out leaves it unknown whether Redis ran it.
pub(super) fn unsure(e: redis::RedisError) -> StoreError {
    if !e.is_connection_refusal() && (e.is_connection_dropped() || e.is_timeout()) {
        StoreError::Uncertain(format!("redis: {e}"))
    } else {
        unavailable(e)
    }
}

pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Keeps one pub/sub connection subscribed, reconnecting forever; after a
/// reconnect subscribers get `Resync` since events may have been missed.
pub(super) async fn run_subscriber(
    source: FeedSource,
    channel: String,
    changes: broadcast::Sender<Change>,
    // Told of the first subscription's outcome; without it (the server is
    // waited for) the first attempt's failure is retried like a reconnect.
    mut ready: Option<oneshot::Sender<Result<(), String>>>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut moves = source.moves();
    for attempt in 0.. {
        if let Some(moves) = &mut moves {
            moves.borrow_and_update();
        }
        let subscribed = async {
            let mut pubsub = source.client(attempt)?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Ok(()));
                    }
                    None => {
                        let _ = changes.send(Change::Resync);
                    }
                }
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                let moved = async {
                    match &mut moves {
                        Some(moves) => drop(moves.changed().await),
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(moved);
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => match serde_json::from_slice::<Change>(message.get_payload_bytes()) {
                                Ok(change) => {
                                    let _ = changes.send(change);
                                }
                                Err(e) => tracing::warn!(error = %e, "undecodable change event; resyncing"),
                            },
                            None => {
                                tracing::warn!("redis change feed disconnected; reconnecting");
                                break;
                            }
                        },
                        () = &mut moved => {
                            tracing::info!("redis change feed: the master moved; resubscribing there");
                            break;
                        }
                    }
                }
                let _ = changes.send(Change::Resync);
            }
            Err(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
                tracing::warn!(error = %e, "redis change feed: reconnect failed");
            }
        }
        // A new master is worth trying at once.
        match &mut moves {
            Some(moves) => {
                if let Ok(Ok(())) = tokio::time::timeout(backoff, moves.changed()).await {
                    backoff = Duration::from_millis(100);
                    continue;
                }
            }
            None => tokio::time::sleep(backoff).await,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
