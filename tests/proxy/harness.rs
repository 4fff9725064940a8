//! A gateway under test: a real `maas sim` process, one or more real
//! `maas proxy` processes, and a real Redis store under a random prefix
//! (`MAAS_TEST_REDIS_URL`, default redis://127.0.0.1:6379).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_store::{NewAccount, NewApplication, NewKey, Store, StoreLocation, StoreOptions};

pub fn redis_url() -> String {
    std::env::var("MAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub use crate::support::{free_port, metric_value, node_dir};
pub use maas_store::conformance::servers::wait_for_port;

/// Simulated models: fast, with room for long prompts, and one embedding model.
pub const SIM_MODELS: &str = "seed: 7
models:
  - id: chat-a
    ttft_ms: 0
    itl_ms: 0
    output_tokens: {min: 20, max: 40}
    max_model_len: 2000000
  - id: chat-b
    ttft_ms: 0
    itl_ms: 0
    output_tokens: {min: 20, max: 40}
  - id: embed-a
    ttft_ms: 0
    itl_ms: 0
    embedding_dimensions: 16
  - id: slow-a
    ttft_ms: 0
    itl_ms: 0
    failures:
      slow_headers_ms: 3000
  - id: long-a
    ttft_ms: 0
    itl_ms: 10
    output_tokens: {min: 300, max: 300}
  - id: chat-x
    ttft_ms: 0
    itl_ms: 0
    output_tokens: {min: 20, max: 40}
  - id: embed-x
    ttft_ms: 0
    itl_ms: 0
    embedding_dimensions: 16
  - id: frag-x
    ttft_ms: 1
    itl_ms: 1
    output_tokens: {min: 10, max: 30}
    fragment_events: true
  - id: paced-x
    ttft_ms: 100
    itl_ms: 100
    output_tokens: {min: 10, max: 30}
    fragment_events: true
  - id: hangup-x
    ttft_ms: 100
    itl_ms: 300
    output_tokens: {min: 10, max: 30}
    fragment_events: true
  - id: stream-a
    ttft_ms: 5
    itl_ms: 2
    output_tokens: {min: 100, max: 200}
  - id: reset-a
    ttft_ms: 0
    itl_ms: 1
    output_tokens: {min: 40, max: 40}
    failures:
      reset_rate: 1.0
  - id: words-a
    ttft_ms: 0
    itl_ms: 0
    output_tokens: {min: 20, max: 40}
  - id: vision-a
    ttft_ms: 0
    itl_ms: 0
    output_tokens: {min: 20, max: 40}
    image_tokens: 1500
  - id: strict-d
    ttft_ms: 0
    itl_ms: 0
    output_tokens: {min: 20, max: 40}
    continuous_usage_stats: false
  - id: strict-e
    ttft_ms: 0
    itl_ms: 0
    output_tokens: {min: 20, max: 40}
    continuous_usage_stats: false
";

/// The catalog of the proxy tests.
pub const CATALOG: &str = include_str!("catalog.yaml");

pub struct ProxyProcess {
    child: Child,
    pub base: String,
    pub metrics: String,
    pub access_log: PathBuf,
}

pub struct Gateway {
    pub store: Store,
    /// The Redis every process of this gateway uses.
    pub redis_url: String,
    pub prefix: String,
    pub sim_base: String,
    sim: Child,
    pub proxies: Vec<ProxyProcess>,
    portals: Vec<Child>,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// A `maas sim` process serving [`SIM_MODELS`], once it listens; its URL.
pub fn spawn_sim(dir: &std::path::Path) -> (Child, String) {
    spawn_sim_with(dir, SIM_MODELS)
}

/// A `maas sim` process serving `models` (its models.yaml), once it listens; its URL.
pub fn spawn_sim_with(dir: &std::path::Path, models_yaml: &str) -> (Child, String) {
    let models = dir.join(format!("models-{}.yaml", free_port()));
    std::fs::write(&models, models_yaml).unwrap();
    let port = free_port();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_maas"))
        .args(["sim", "--listen", &format!("127.0.0.1:{port}"), "--models"])
        .arg(&models)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting maas sim");
    wait_for_port(port, "maas sim", &mut sim);
    (sim, format!("http://127.0.0.1:{port}"))
}

impl Gateway {
    /// Applies `catalog` (YAML; `{SIM}` stands for the simulator's URL),
    /// then starts `proxies` proxy processes in limit `mode`.
    pub async fn start(catalog: &str, proxies: usize, mode: &str) -> Gateway {
        Gateway::start_on(&redis_url(), catalog, proxies, mode).await
    }

    /// [`start`](Self::start) on the Redis at `redis_url`.
    pub async fn start_on(redis_url: &str, catalog: &str, proxies: usize, mode: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!(
            "maastest-proxy-{}",
            maas_store::ids::hex(&maas_store::ids::random_bytes::<6>())
        );
        let (sim, sim_base) = spawn_sim(dir.path());

        let location = StoreLocation::Redis {
            url: redis_url.to_owned(),
            prefix: prefix.clone(),
            tls: Default::default(),
        };
        let store = Store::open(&location, StoreOptions::default())
            .await
            .expect("Redis must run on MAAS_TEST_REDIS_URL (default 127.0.0.1:6379): apt install redis-server");
        let document = maas_conf::parse_catalog("test catalog", &catalog.replace("{SIM}", &sim_base))
            .unwrap_or_else(|e| panic!("{e}"));
        store.apply(&document, &Default::default()).await.unwrap();

        let mut gateway = Gateway {
            store,
            redis_url: redis_url.to_owned(),
            prefix,
            sim_base,
            sim,
            proxies: Vec::new(),
            portals: Vec::new(),
            http: reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap(),
            dir,
        };
        for _ in 0..proxies {
            gateway.add_proxy(mode);
        }
        gateway
    }

    pub fn add_proxy(&mut self, mode: &str) {
        self.add_proxy_with_env(mode, &[]);
    }

    /// A proxy with extra environment (settings such as `MAAS_TOKEN_HOLD_TTL_SECS`).
    pub fn add_proxy_with_env(&mut self, mode: &str, env: &[(&str, &str)]) {
        let (port, metrics_port) = (free_port(), free_port());
        let access_log = self.dir.path().join(format!("access-{port}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_maas"))
            .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .env("MAAS_REDIS_URL", &self.redis_url)
            .env("MAAS_REDIS_PREFIX", &self.prefix)
            .env("MAAS_LIMITS_MODE", mode)
            .env("MAAS_LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .env_remove("MAAS_CONFIG")
            .current_dir(self.dir.path())
            .stdout(std::fs::File::create(&access_log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting maas proxy");
        wait_for_port(port, "maas proxy", &mut child);
        wait_for_port(metrics_port, "maas proxy metrics", &mut child);
        self.proxies.push(ProxyProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            access_log,
        });
    }

    /// A `maas portal` process on the same store, whose admin API takes
    /// `admin_token`; returns its base URL once it listens (it binds only
    /// when the API is ready).
    pub fn add_portal(&mut self, admin_token: &str) -> String {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_maas"))
            .arg("portal")
            .env("MAAS_REDIS_URL", &self.redis_url)
            .env("MAAS_REDIS_PREFIX", &self.prefix)
            .env("MAAS_PORTAL_LISTEN", format!("127.0.0.1:{port}"))
            .env("MAAS_ADMIN_TOKEN", admin_token)
            .env("MAAS_LOG_LEVEL", "warn")
            .env_remove("MAAS_CONFIG")
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting maas portal");
        wait_for_port(port, "maas portal", &mut child);
        self.portals.push(child);
        format!("http://127.0.0.1:{port}")
    }

    pub fn base(&self) -> &str {
        &self.proxies[0].base
    }

    /// Kills proxy `index` at once (SIGKILL), as a crash would.
    pub fn crash_proxy(&mut self, index: usize) {
        let _ = self.proxies[index].child.kill();
        let _ = self.proxies[index].child.wait();
    }

    /// Sends SIGTERM to proxy `index`, as Kubernetes does, and waits up to
    /// `within` for it to exit; returns how it exited.
    pub fn terminate_proxy(&mut self, index: usize, within: Duration) -> std::process::ExitStatus {
        let child = &mut self.proxies[index].child;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {}", child.id());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A new application of a new account on `product`/`plan`, and its key.
    pub async fn app_key(&self, name: &str, product: &str, plan: &str) -> (String, String) {
        let account = self
            .store
            .create_account(NewAccount {
                name: format!("acct-{name}"),
                description: String::new(),
                sso: None,
            })
            .await
            .unwrap();
        let app = self
            .store
            .create_application(NewApplication {
                account_id: account.id,
                name: name.into(),
                description: String::new(),
                product: product.into(),
                plan: plan.into(),
            })
            .await
            .unwrap();
        let key = self.store.create_key(&app.id, NewKey::default()).await.unwrap();
        (app.id, key.secret.into_string())
    }

    /// What the simulator served to `application_id`.
    pub async fn sim_usage(&self, application_id: &str) -> serde_json::Value {
        self.sim_usage_at(&self.sim_base, application_id).await
    }

    /// What the simulator at `base` (another replica) served to `application_id`.
    pub async fn sim_usage_at(&self, base: &str, application_id: &str) -> serde_json::Value {
        let all: serde_json::Value = serde_json::from_str(&self.text(&format!("{base}/sim/usage")).await).unwrap();
        all["applications"][application_id].clone()
    }

    /// The body of `GET url`, as text.
    pub async fn text(&self, url: &str) -> String {
        self.http.get(url).send().await.unwrap().text().await.unwrap()
    }

    pub async fn chat(&self, base: &str, key: &str, model: &str) -> reqwest::Response {
        self.chat_body(
            base,
            key,
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]}),
        )
        .await
    }

    /// The same chat, streamed (`stream: true`, no usage asked for).
    pub async fn stream_chat(&self, base: &str, key: &str, model: &str) -> reqwest::Response {
        let body = serde_json::json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "Hello there"}]});
        self.chat_body(base, key, body).await
    }

    pub async fn chat_body(&self, base: &str, key: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The text of proxy `index`'s `/metrics`.
    pub async fn metrics(&self, index: usize) -> String {
        let response = self.http.get(&self.proxies[index].metrics).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// Waits until proxy `index` has applied at least `count` change events
    /// of `kind` (e.g. `key`): the feed is ordered, so every event published
    /// before those has reached its caches too.
    pub async fn await_changes(&self, index: usize, kind: &str, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics(index).await;
            let applied = metric_value(&text, "maas_store_changes_total", "kind", kind).unwrap_or(0);
            if applied >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy {index} applied {applied} `{kind}` changes in 10 s, expected {count}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts the store billed the application exactly the prompt and
    /// completion tokens the simulator served it; returns the simulator's count.
    pub async fn assert_stored_as_served(&self, application_id: &str) -> serde_json::Value {
        let served = self.sim_usage(application_id).await;
        for metric in ["prompt_tokens", "completion_tokens"] {
            assert_eq!(
                self.stored(application_id, metric).await,
                served[metric].as_u64().unwrap(),
                "{metric}: {served}"
            );
        }
        served
    }

    /// What the store holds of `metric` for an application, all time.
    pub async fn stored(&self, application_id: &str, metric: &str) -> u64 {
        let now = time::OffsetDateTime::now_utc();
        self.store
            .usage(application_id, metric, maas_store::period::Period::Eternity, now)
            .await
            .unwrap()
    }

    /// Every access-log line so far, parsed.
    pub fn access_log(&self, proxy: usize) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.proxies[proxy].access_log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("access log line `{line}`: {e}")))
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for child in self.proxies.iter_mut().map(|p| &mut p.child).chain(&mut self.portals) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.sim.kill();
        let _ = self.sim.wait();
        let (prefix, url) = (self.prefix.clone(), self.redis_url.clone());
        // Drop may run inside a runtime: clean Redis from a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(backend) =
                    maas_store::backend::redis::RedisBackend::connect(&url, &prefix, &Default::default()).await
                {
                    let _ = backend.destroy_all_data().await;
                }
            });
        })
        .join();
    }
}

/// A `redis-server` of the test's own on a free port, to stop, hang and
/// restart; its append-only file keeps the data across restarts.
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server runs already");
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed: apt install redis-server");
        wait_for_port(self.port, "redis-server", &mut child);
        self.child = Some(child);
    }

    /// Kills it (SIGKILL): connections drop, new ones are refused.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP` hangs it, `CONT` wakes it).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server runs").id();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} {pid}");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("CONT");
        }
        self.kill();
    }
}

/// The error object of an OpenAI-shaped error response.
pub async fn error_of(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("an error body in JSON");
    assert!(body["error"]["message"].is_string(), "OpenAI error shape: {body}");
    assert!(body["error"]["type"].is_string(), "OpenAI error shape: {body}");
    (status, body["error"].clone())
}

/// Sleeps into the next UTC minute when less than `needed` is left of the
/// current one, so a per-minute limit is not reset halfway through a test.
pub async fn leave_room_in_this_minute(needed: Duration) {
    let now = time::OffsetDateTime::now_utc();
    let into_minute = Duration::from_millis((now.second() as u64) * 1000 + now.millisecond() as u64);
    if Duration::from_secs(60) - into_minute < needed {
        tokio::time::sleep(Duration::from_secs(60) - into_minute + Duration::from_millis(200)).await;
    }
}

/// Runs a client script (`program script args…`) that prints one JSON
/// report, failing with the script's output when it exits non-zero.
pub async fn run_json_script(program: &str, args: &[&str]) -> serde_json::Value {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The tests/node directory, once Debian's Chromium and the npm `packages`
/// are there.
pub fn require_browser(packages: &[&str]) -> &'static str {
    let dir = node_dir(packages);
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "this test needs Debian's chromium: `apt-get install chromium` (.ci/run does it)"
    );
    dir
}

/// Fails with how to install it when Python's `openai` package is missing.
pub fn require_python_openai() {
    match std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
    {
        Ok(output) if output.status.success() => {}
        _ => panic!("this test needs Python 3 with `openai`: `python3 -m pip install openai` (.ci/run installs it)"),
    }
}

/// `key` with its last character changed (never to itself).
pub fn with_typo(key: &str) -> String {
    let typo = if key.ends_with('x') { 'y' } else { 'x' };
    format!("{}{typo}", &key[..key.len() - 1])
}
