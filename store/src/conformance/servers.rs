//! Redis topologies a test starts for itself on free loopback ports: a
//! Cluster of masters, and a master with a replica watched by three
//! sentinels. Every process is killed when its value is dropped. Also the
//! port helpers every test binary that starts processes shares.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The master name the sentinels watch.
pub const SENTINEL_MASTER: &str = "maas";

/// One `redis-server` process (a node, a replica or a sentinel).
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
}

impl RedisProcess {
    fn spawn(args: &[String], port: u16) -> RedisProcess {
        let mut child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed: apt-get install redis-server");
        wait_for_port(port, "redis-server", &mut child);
        RedisProcess {
            child: Some(child),
            port,
        }
    }

    /// SIGKILL: its connections drop and new ones are refused.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis-cli -p <port> <args>`'s output; panics when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed: apt-get install redis-server (it ships redis-cli)");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits up to 20 s for `child` (`what`) to listen on loopback `port`;
/// panics, saying which, when it exits first or never listens.
pub fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A directory of the test's own, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(what: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!(
            "maas-{what}-{}-{}",
            std::process::id(),
            crate::ids::hex(&crate::ids::random_bytes::<4>())
        ));
        std::fs::create_dir_all(&path).expect("a scratch directory");
        ScratchDir(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A redis-server on `port` of loopback, in `dir`, persisting nothing.
fn server_args(port: u16, dir: &ScratchDir) -> Vec<String> {
    let dir = dir.0.to_string_lossy();
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir,
    ]
    .map(String::from)
    .into()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Redis Cluster of `masters` masters (no replicas), every slot assigned.
pub struct RedisCluster {
    pub nodes: Vec<RedisProcess>,
    _dir: ScratchDir,
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        let dir = ScratchDir::new("cluster");
        let nodes: Vec<RedisProcess> = (0..masters)
            .map(|_| {
                let port = free_port();
                let mut args = server_args(port, &dir);
                for arg in [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "2000",
                ] {
                    args.push(arg.to_owned());
                }
                RedisProcess::spawn(&args, port)
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        nodes[0].cli(&create);
        for node in &nodes {
            wait_until(
                "every cluster node reports cluster_state:ok",
                Duration::from_secs(20),
                || node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"),
            );
        }
        RedisCluster { nodes, _dir: dir }
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }
}

/// A master and a replica watched by three sentinels (quorum 2, a master
/// is down after 1 s without an answer).
pub struct RedisSentinels {
    pub master: RedisProcess,
    pub replica: RedisProcess,
    pub sentinels: Vec<RedisProcess>,
    _dir: ScratchDir,
}

impl RedisSentinels {
    pub fn start() -> RedisSentinels {
        let dir = ScratchDir::new("sentinel");
        let server = |port: u16, replica_of: Option<u16>| {
            let mut args = server_args(port, &dir);
            args.extend(["--dbfilename".to_owned(), format!("dump-{port}.rdb")]);
            if let Some(master) = replica_of {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            }
            RedisProcess::spawn(&args, port)
        };
        let master = server(free_port(), None);
        let replica = server(free_port(), Some(master.port));
        wait_until("the replica is in sync", Duration::from_secs(20), || {
            replica.cli(&["INFO", "replication"]).contains("master_link_status:up")
        });
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                let config = dir.0.join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 10000\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                        dir = dir.0.display(),
                        master = master.port,
                    ),
                )
                .expect("sentinel config");
                RedisProcess::spawn(&[config.to_string_lossy().into_owned(), "--sentinel".into()], port)
            })
            .collect::<Vec<_>>();
        let sentinels = RedisSentinels {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        // A failover needs every sentinel to know the replica and a quorum
        // of the others.
        for sentinel in &sentinels.sentinels {
            wait_until(
                "each sentinel knows the replica and the other sentinels",
                Duration::from_secs(30),
                || {
                    let master = sentinel.cli(&["SENTINEL", "master", SENTINEL_MASTER]);
                    let field = |name: &str| {
                        let mut lines = master.lines();
                        lines.find(|l| *l == name).and_then(|_| lines.next()).map(str::to_owned)
                    };
                    field("num-slaves").as_deref() == Some("1") && field("num-other-sentinels").as_deref() == Some("2")
                },
            );
        }
        sentinels
    }

    /// `redis+sentinel://` naming the three sentinels and the master.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis+sentinel://{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// The master's port as the first sentinel reports it.
    pub fn master_port(&self) -> u16 {
        let reply = self.sentinels[0].cli(&["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER]);
        reply.lines().nth(1).and_then(|p| p.trim().parse().ok()).unwrap_or(0)
    }

    /// Waits until the sentinels name the replica as master.
    pub fn wait_for_failover(&self, within: Duration) {
        wait_until("the sentinels promote the replica", within, || {
            self.master_port() == self.replica.port && self.replica.cli(&["ROLE"]).lines().next() == Some("master")
        });
    }
}
