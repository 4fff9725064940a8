//! The floor `loadtest/compare.py` measures maas against: a Pingora 0.9
//! proxy with no policy at all. Every request goes, as it came, to one
//! upstream over kept-alive connections; nothing is read, checked, counted
//! or logged. What maas costs above this is our own work; what this costs
//! above nginx is Pingora's.
//!
//! ```text
//! cargo run --release -p maas-proxy --example bare_pingora -- 127.0.0.1:8081 127.0.0.1:8000 [threads]
//! ```

use async_trait::async_trait;
use pingora_core::prelude::HttpPeer;
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_proxy::{ProxyHttp, Session};

struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora_error::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_pingora <listen address> <upstream address> [threads]");
        std::process::exit(2);
    };
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    // No drain on SIGTERM: the benchmark stops it between runs.
    let mut conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    conf.upstream_keepalive_pool_size = 1024;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Forward { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
