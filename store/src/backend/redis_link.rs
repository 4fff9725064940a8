//! The connection the Redis backend sends commands on: one server's, the
//! master Redis Sentinel names (followed when it fails over), or a Redis
//! Cluster's (the redis crate follows slot moves and failovers itself).

use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{Cmd, ConnectionAddr, Pipeline, RedisFuture, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{StoreError, StoreResult};

/// How often a replica asks the sentinels where the master is. Sentinel
/// itself needs `down-after-milliseconds` plus an election to fail over,
/// so a second adds little to the outage.
const SENTINEL_POLL: Duration = Duration::from_secs(1);

/// A connection commands are sent on; cheap to clone.
#[derive(Clone)]
pub(super) enum RedisConn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Server(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Server(conn) => conn.get_db(),
            RedisConn::Cluster(conn) => conn.get_db(),
        }
    }
}

impl RedisConn {
    /// Every key matching `pattern`, on every master of a cluster (tests
    /// clean up with it; SCAN walks one node).
    pub(super) async fn keys_matching(&mut self, pattern: &str) -> redis::RedisResult<Vec<String>> {
        let nodes: Vec<Option<(String, u16)>> = match self {
            RedisConn::Server(_) => vec![None],
            RedisConn::Cluster(conn) => {
                let listing: String = redis::cmd("CLUSTER").arg("NODES").query_async(conn).await?;
                cluster_masters(&listing).into_iter().map(Some).collect()
            }
        };
        let mut keys = Vec::new();
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
                let (next, found): (u64, Vec<String>) = match (&mut *self, &node) {
                    (RedisConn::Cluster(conn), Some((host, port))) => {
                        let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                            redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port: *port,
                            },
                        );
                        redis::from_redis_value(conn.route_command(scan, routing).await?)?
                    }
                    (conn, _) => scan.query_async(conn).await?,
                };
                keys.extend(found);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }
}

/// The masters' addresses in a `CLUSTER NODES` listing.
fn cluster_masters(listing: &str) -> Vec<(String, u16)> {
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                return None;
            }
            let (host, port) = address.split(['@', ',']).next()?.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// Where commands go, as `store.redis_url` says.
pub(super) enum RedisLink {
    Server(ConnectionManager),
    Sentinel(Arc<SentinelLink>),
    Cluster(Arc<ClusterLink>),
}

impl RedisLink {
    /// The connection to send on now; fails while a sentinel-named master
    /// or a cluster has not been reached yet (the proxy started first).
    pub(super) fn conn(&self) -> StoreResult<RedisConn> {
        match self {
            RedisLink::Server(conn) => Ok(RedisConn::Server(conn.clone())),
            RedisLink::Sentinel(link) => link
                .current()
                .map(|master| RedisConn::Server(master.conn.clone()))
                .ok_or_else(|| {
                    StoreError::Unavailable("redis: the sentinels have not named a reachable master yet".into())
                }),
            RedisLink::Cluster(link) => link
                .conn
                .get()
                .cloned()
                .map(RedisConn::Cluster)
                .ok_or_else(|| StoreError::Unavailable("redis: no cluster node has answered yet".into())),
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, RedisLink::Cluster(_))
    }
}

/// The master the sentinels named last.
pub(super) struct Master {
    pub(super) address: (String, u16),
    pub(super) client: redis::Client,
    conn: ConnectionManager,
}

pub(super) struct SentinelLink {
    name: String,
    // Shared, so a command clones the connection handle and not the client.
    current: RwLock<Option<Arc<Master>>>,
    /// Bumped each time another master is taken on (the change feed
    /// resubscribes there).
    moved: watch::Sender<u64>,
}

impl SentinelLink {
    pub(super) fn current(&self) -> Option<Arc<Master>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn moves(&self) -> watch::Receiver<u64> {
        self.moved.subscribe()
    }

    fn take_on(&self, master: Master) {
        tracing::warn!(
            master = %self.name,
            address = %format!("{}:{}", master.address.0, master.address.1),
            "redis sentinel: sending commands to this master"
        );
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(master));
        self.moved.send_modify(|generation| *generation += 1);
    }
}

fn host_port(address: &ConnectionAddr) -> Option<(String, u16)> {
    match address {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
        _ => None,
    }
}

/// Asks the sentinels for the master and connects to it (the redis crate
/// checks that the server it names calls itself master).
async fn connect_master(
    sentinels: &mut SentinelClient,
    config: &ConnectionManagerConfig,
) -> redis::RedisResult<Master> {
    let client = sentinels.async_get_client().await?;
    let address = host_port(client.get_connection_info().addr()).unwrap_or_default();
    let conn = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
    Ok(Master { address, client, conn })
}

/// Connects to the master `sentinels` name; with `wait`, a master not
/// reachable yet is looked for every second instead of an error. The
/// returned task follows failovers for as long as the link lives.
pub(super) async fn connect_sentinel(
    name: &str,
    mut sentinels: SentinelClient,
    config: ConnectionManagerConfig,
    wait: bool,
) -> StoreResult<(Arc<SentinelLink>, JoinHandle<()>)> {
    let link = Arc::new(SentinelLink {
        name: name.to_owned(),
        current: RwLock::new(None),
        moved: watch::channel(0).0,
    });
    match connect_master(&mut sentinels, &config).await {
        Ok(master) => link.take_on(master),
        Err(e) if wait => tracing::warn!(error = %e, "redis sentinel: no master yet; looking every second"),
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "redis sentinel (master `{name}`): {e}"
            )));
        }
    }
    let follower = tokio::spawn(follow_master(Arc::downgrade(&link), sentinels, config));
    Ok((link, follower))
}

/// Polls the sentinels for the master's address and moves to a new master
/// when it changes. The poll is one `SENTINEL get-master-addr-by-name` on a
/// kept connection; the master is only contacted when its address changed.
async fn follow_master(link: Weak<SentinelLink>, mut sentinels: SentinelClient, config: ConnectionManagerConfig) {
    let mut asking: Option<MultiplexedConnection> = None;
    let mut failing = false;
    loop {
        tokio::time::sleep(SENTINEL_POLL).await;
        let Some(link) = link.upgrade() else { return };
        let known = link.current().map(|m| m.address.clone());
        let named = match named_master(&mut sentinels, &mut asking, &link.name).await {
            Ok(named) => named,
            Err(e) => {
                asking = None;
                if !failing {
                    tracing::warn!(error = %e, "redis sentinel: no sentinel answers");
                }
                failing = true;
                continue;
            }
        };
        if known.is_some() && known == named {
            failing = false;
            continue;
        }
        match connect_master(&mut sentinels, &config).await {
            Ok(master) => {
                failing = false;
                link.take_on(master);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "redis sentinel: the named master does not answer");
                }
                failing = true;
            }
        }
    }
}

async fn named_master(
    sentinels: &mut SentinelClient,
    asking: &mut Option<MultiplexedConnection>,
    name: &str,
) -> redis::RedisResult<Option<(String, u16)>> {
    if asking.is_none() {
        let client = sentinels.async_get_sentinel_client().await?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)));
        *asking = Some(client.get_multiplexed_async_connection_with_config(&config).await?);
    }
    let conn = asking.as_mut().expect("connected above");
    let reply: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(name)
        .query_async(conn)
        .await?;
    Ok(reply.and_then(|(host, port)| Some((host, port.parse().ok()?))))
}

pub(super) struct ClusterLink {
    conn: OnceLock<ClusterConnection>,
}

/// Connects to the cluster; with `wait`, seeds that do not answer yet are
/// tried every second in the background instead of an error.
pub(super) async fn connect_cluster(
    client: ClusterClient,
    wait: bool,
) -> StoreResult<(Arc<ClusterLink>, Option<JoinHandle<()>>)> {
    let link = Arc::new(ClusterLink { conn: OnceLock::new() });
    match client.get_async_connection().await {
        Ok(conn) => {
            let _ = link.conn.set(conn);
            Ok((link, None))
        }
        Err(e) if wait => {
            tracing::warn!(error = %e, "redis cluster does not answer yet; connecting when it does");
            let pending = Arc::downgrade(&link);
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let Some(link) = pending.upgrade() else { return };
                    if let Ok(conn) = client.get_async_connection().await {
                        tracing::info!("redis cluster answers");
                        let _ = link.conn.set(conn);
                        return;
                    }
                }
            });
            Ok((link, Some(task)))
        }
        Err(e) => Err(StoreError::Unavailable(format!("redis cluster: {e}"))),
    }
}

/// Where the change feed subscribes: pub/sub messages reach every node of
/// a cluster and every replica of a master, so any one node will do.
pub(super) enum FeedSource {
    Server(Box<redis::Client>),
    Sentinel(Arc<SentinelLink>),
    Nodes(Vec<redis::Client>),
}

impl FeedSource {
    /// The client for the `attempt`th subscription (cluster seeds in turn).
    pub(super) fn client(&self, attempt: usize) -> redis::RedisResult<redis::Client> {
        match self {
            FeedSource::Server(client) => Ok((**client).clone()),
            FeedSource::Sentinel(link) => link.current().map(|master| master.client.clone()).ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "the sentinels have not named a master yet"))
            }),
            FeedSource::Nodes(nodes) => Ok(nodes[attempt % nodes.len()].clone()),
        }
    }

    /// Fires when the subscription should move (a new master).
    pub(super) fn moves(&self) -> Option<watch::Receiver<u64>> {
        match self {
            FeedSource::Sentinel(link) => Some(link.moves()),
            _ => None,
        }
    }
}
