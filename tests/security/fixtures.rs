//! What the attacks need besides the gateway harness: an upstream that
//! records exactly what reached it, a `maas portal` process with its own
//! settings, the OpenID provider, and a portal client that keeps cookies
//! and answers forms with their CSRF token.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use futures_util::StreamExt;

use crate::harness::{Gateway, free_port, redis_url};
pub use crate::support::node_dir;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target (path and query) exactly as sent.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A model server that records every request and answers it as a chat
/// completion that spent all the `max_tokens` it was allowed (100 when
/// none), reading the body as JSON whatever its content type, as vLLM does.
///
/// A request header [`ANSWER_HEADER`] asks for another answer (the gateway
/// forwards it): `no-usage` (the completion without `usage`), `text` (a
/// `text/plain` body), or `stream:` and a JSON array of events, written
/// as a `text/event-stream` that then stays open until the client leaves.
#[derive(Clone)]
pub struct Capture {
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Capture {
    pub async fn start() -> Capture {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorded = seen.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let recorded = recorded.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
                let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
                let asked: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let mode = parts.headers.get(ANSWER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                recorded.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    target,
                    headers: parts.headers,
                    body,
                });
                if let Some(events) = mode.strip_prefix("stream:") {
                    return open_stream(events);
                }
                let completion = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
                    .iter()
                    .filter_map(|f| asked[*f].as_u64())
                    .max()
                    .unwrap_or(100);
                let answer = serde_json::json!({
                    "id": "chatcmpl-capture", "object": "chat.completion", "created": 0, "model": asked["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": completion, "total_tokens": 5 + completion},
                });
                match mode.as_str() {
                    "no-usage" => {
                        let mut answer = answer;
                        answer.as_object_mut().unwrap().remove("usage");
                        (StatusCode::OK, axum::Json(answer)).into_response()
                    }
                    "text" => (StatusCode::OK, "ok").into_response(),
                    _ => (StatusCode::OK, axum::Json(answer)).into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Capture { base, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

/// The request header that picks the capture upstream's answer.
pub const ANSWER_HEADER: &str = "x-capture-answer";

/// An event stream of `events` (a JSON array) that never ends by itself.
fn open_stream(events: &str) -> axum::response::Response {
    let events: Vec<serde_json::Value> = serde_json::from_str(events).expect("a JSON array of events");
    let frames = events
        .into_iter()
        .map(|event| Ok::<_, std::io::Error>(Bytes::from(format!("data: {event}\n\n"))));
    let body = futures_util::stream::iter(frames).chain(futures_util::stream::pending());
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from_stream(body))
        .unwrap()
}

/// A `maas portal` process on the gateway's Redis store, configured by a
/// `maas.yaml` of `settings` (YAML lines under the top level); its admin
/// API takes `ADMIN_TOKEN`.
pub struct PortalProcess {
    child: Child,
    pub base: String,
}

pub const ADMIN_TOKEN: &str = "security-suite-admin-token";

impl PortalProcess {
    pub fn start(gw: &Gateway, settings: &str) -> PortalProcess {
        PortalProcess::launch(gw, free_port(), settings, &[])
    }

    /// As [`start`](PortalProcess::start), on `port` (when the settings name the URL).
    pub fn start_at(gw: &Gateway, port: u16, settings: &str) -> PortalProcess {
        PortalProcess::launch(gw, port, settings, &[])
    }

    /// As [`start_at`](PortalProcess::start_at), with `env` besides.
    /// `settings` may begin with a `portal:` section of its own.
    pub fn launch(gw: &Gateway, port: u16, settings: &str, env: &[(&str, &str)]) -> PortalProcess {
        let base = format!("http://127.0.0.1:{port}");
        let config = gw.dir.path().join(format!("maas-portal-{port}.yaml"));
        // A `portal:` section in `settings` joins the one written here.
        let (portal_lines, settings) = match settings.strip_prefix("portal:\n") {
            Some(rest) => {
                let end = rest
                    .lines()
                    .take_while(|l| l.starts_with(' '))
                    .map(|l| l.len() + 1)
                    .sum::<usize>();
                rest.split_at(end.min(rest.len()))
            }
            None => ("", settings),
        };
        let yaml = format!(
            "portal:\n  listen: 127.0.0.1:{port}\n  public_url: {base}\n{portal_lines}store:\n  redis_url: {}\n  redis_prefix: {}\n{settings}\n",
            redis_url(),
            gw.prefix
        );
        std::fs::write(&config, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_maas"))
            .arg("--config")
            .arg(&config)
            .arg("portal")
            .env("MAAS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("MAAS_SSO_CLIENT_SECRET", "test-client-secret")
            .env("MAAS_LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .env_remove("MAAS_CONFIG")
            .env_remove("MAAS_REDIS_URL")
            .current_dir(gw.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting maas portal");
        maas_store::conformance::servers::wait_for_port(port, "maas portal", &mut child);
        PortalProcess { child, base }
    }
}

impl Drop for PortalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The npm `oidc-provider` as the company's OpenID provider, with the
/// people of tests/node/oidc_provider.mjs and `people` (JSON) besides.
pub struct Idp {
    _child: tokio::process::Child,
    pub issuer: String,
    /// Claims changed since the start (`OIDC_PEOPLE_FILE`), read by the
    /// provider at every sign-in.
    changes: tempfile::TempDir,
}

impl Idp {
    pub async fn start(portal_base: &str, people: serde_json::Value) -> Idp {
        Idp::start_with(portal_base, people, &[]).await
    }

    /// As [`start`](Idp::start), with `env` for the provider script
    /// (`OIDC_TOKEN_AUTH`).
    pub async fn start_with(portal_base: &str, people: serde_json::Value, env: &[(&str, &str)]) -> Idp {
        use tokio::io::AsyncBufReadExt;
        let dir = node_dir(&["oidc-provider"]);
        let port = free_port();
        let changes = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("node")
            .arg(format!("{dir}/oidc_provider.mjs"))
            .args([
                &port.to_string(),
                "maas-portal",
                "test-client-secret",
                &format!("{portal_base}/sso/callback"),
                &format!("{portal_base}/"),
            ])
            .env("OIDC_PEOPLE", people.to_string())
            .env("OIDC_PEOPLE_FILE", changes.path().join("people.json"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (apt-get install nodejs)");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
        assert!(
            matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"),
            "the OpenID provider did not start: {ready:?}"
        );
        // Its later warnings go to stdout too: keep reading, or it dies of EPIPE.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Idp {
            _child: child,
            issuer: format!("http://127.0.0.1:{port}"),
            changes,
        }
    }

    /// From the next sign-in on, the provider says `claims` (the whole
    /// person: email, name, org_name, groups) for `login`.
    pub fn change_person(&self, login: &str, claims: serde_json::Value) {
        let path = self.changes.path().join("people.json");
        let mut people: serde_json::Map<String, serde_json::Value> = std::fs::read(&path)
            .ok()
            .map(|bytes| serde_json::from_slice(&bytes).unwrap())
            .unwrap_or_default();
        people.insert(login.to_owned(), claims);
        std::fs::write(&path, serde_json::to_vec(&people).unwrap()).unwrap();
    }

    /// The `sso:` settings of a portal signing in through this provider.
    pub fn settings(&self) -> String {
        format!(
            "sso:\n  enabled: true\n  issuer_url: {}\n  client_id: maas-portal\n  account_claim: org_name\n  \
             admin_claim: groups\n  admin_value: maas-admins\n  auto_approve: true\n",
            self.issuer
        )
    }
}

/// What a company sign-in of `login` through `portal` ended with.
pub async fn sso_sign_in(portal: &str, login: &str) -> serde_json::Value {
    let dir = node_dir(&["oidc-provider"]);
    crate::harness::run_json_script("node", &[&format!("{dir}/sso_login.mjs"), portal, login]).await
}

/// A company sign-in, then a sign-out through the portal and the provider;
/// the sign-out's end is `signed_out`.
pub async fn sso_sign_in_and_out(portal: &str, login: &str) -> serde_json::Value {
    let dir = node_dir(&["oidc-provider"]);
    crate::harness::run_json_script("node", &[&format!("{dir}/sso_login.mjs"), portal, login, "sign-out"]).await
}

/// A portal visitor without a browser: keeps the cookies it is given and
/// posts forms with the CSRF token of the page they are on.
pub struct Visitor {
    pub base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    /// Headers sent with every request (e.g. `X-Forwarded-For`).
    pub extra: Vec<(String, String)>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Page {
    /// The value of the first hidden input `name`.
    pub fn hidden(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(self.body[start..end].to_owned())
    }
}

impl Visitor {
    pub fn new(base: &str) -> Visitor {
        Visitor {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            extra: Vec::new(),
        }
    }

    /// A visitor holding the portal session `session` (from [`sso_sign_in`]).
    pub fn with_session(base: &str, session: &str) -> Visitor {
        let mut visitor = Visitor::new(base);
        visitor.cookies.insert("maas_session".into(), session.into());
        visitor
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        Page { status, location, body }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header());
        for (name, value) in &self.extra {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        self.finish(response).await
    }

    /// Posts `fields` to `path` with the CSRF token of the page at `from`.
    pub async fn submit(&mut self, from: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(from).await;
        let csrf = page
            .hidden("csrf")
            .unwrap_or_else(|| panic!("{from} has a form: {}", page.body));
        let mut all: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = form_encode(fields);
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (name, value) in &self.extra {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        self.finish(response).await
    }

    /// Creates an application on `plan` (`product/plan`) in the portal; its id.
    pub async fn create_application(&mut self, name: &str, plan: &str) -> String {
        let created = self
            .submit("/applications/new", "/applications", &[("name", name), ("plan", plan)])
            .await;
        assert_eq!(created.status, 303, "creating {name}: {}", created.body);
        application_id(&created.location.unwrap())
    }

    pub fn session(&self) -> Option<&str> {
        self.cookies.get("maas_session").map(String::as_str)
    }
}

/// A password zxcvbn rates strong.
pub const STRONG_PASSWORD: &str = "correct horse battery staple 93";

/// `local` at example.com.
pub fn email(local: &str) -> String {
    [local, "example.com"].join("@")
}

/// An admin API call with the suite's admin token.
pub async fn admin_api(
    portal: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{portal}/admin/api/v1{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The suite's catalog (see catalog.yaml).
pub const CATALOG: &str = include_str!("catalog.yaml");

/// A gateway of `proxies` strict proxies on the suite's catalog, its
/// capture upstream beside the simulator.
/// A gateway (no proxy), the company's OpenID provider with `people` (and
/// `env`) besides its own, and the port where its portal must listen (the
/// provider sends browsers back there).
pub async fn company(people: serde_json::Value, env: &[(&str, &str)]) -> (Gateway, Capture, Idp, u16) {
    let (gw, capture) = gateway(0).await;
    let port = free_port();
    let idp = Idp::start_with(&format!("http://127.0.0.1:{port}"), people, env).await;
    (gw, capture, idp, port)
}

pub async fn gateway(proxies: usize) -> (Gateway, Capture) {
    let capture = Capture::start().await;
    let gw = Gateway::start(&CATALOG.replace("{CAPTURE}", &capture.base), proxies, "strict").await;
    (gw, capture)
}

/// The content types a JSON body has been sent with to slip past checks
/// that looked only at `application/json`.
pub const CONTENT_TYPES: [Option<&str>; 7] = [
    None,
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=x"),
    Some("Application/JSON; charset=utf-8"),
    Some("application/octet-stream"),
    Some("application/vnd.api+json"),
];

/// Signs `visitor` up (a new organization `organization`) and in.
pub async fn sign_up_and_in(visitor: &mut Visitor, organization: &str, email: &str) {
    let page = visitor
        .submit(
            "/sign-up",
            "/sign-up",
            &[
                ("organization", organization),
                ("display_name", "Dev"),
                ("email", email),
                ("password", STRONG_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "sign-up: {}", page.body);
    sign_in(visitor, email, STRONG_PASSWORD).await;
}

/// Signs `visitor` in with a password; fails unless it worked.
pub async fn sign_in(visitor: &mut Visitor, email: &str, password: &str) {
    let page = visitor
        .submit("/sign-in", "/sign-in", &[("email", email), ("password", password)])
        .await;
    assert_eq!(page.status, 303, "sign-in of {email}: {}", page.body);
}

/// Runs `maas ARGS` against the gateway's store; its exit status and stderr.
pub fn maas_cli(gw: &Gateway, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_maas"))
        .args(args)
        .env("MAAS_REDIS_URL", redis_url())
        .env("MAAS_REDIS_PREFIX", &gw.prefix)
        .env("MAAS_LOG_LEVEL", "warn")
        .env_remove("MAAS_CONFIG")
        .current_dir(gw.dir.path())
        .output()
        .expect("maas runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The id in `/applications/<id>`.
pub fn application_id(location: &str) -> String {
    location
        .trim_start_matches("/applications/")
        .split(['/', '?'])
        .next()
        .unwrap()
        .to_owned()
}

/// `application/x-www-form-urlencoded`, as a browser sends a form.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `maas up` on the embedded store in strict mode, behind it a simulator
/// (the catalog's backend `sim`), with one key per application.
pub struct EmbeddedUp {
    dir: tempfile::TempDir,
    up: Option<Child>,
    sim: Child,
    pub sim_base: String,
    pub base: String,
    /// A key of each application, in the order given.
    pub keys: Vec<String>,
}

impl EmbeddedUp {
    /// Applies `catalog` (products and plans; the `sim` backend is added)
    /// with an account and application per `(account, application,
    /// product, plan)`, then starts `maas up`.
    pub fn start(catalog: &str, applications: &[(&str, &str, &str, &str)]) -> EmbeddedUp {
        let dir = tempfile::tempdir().unwrap();
        let (sim, sim_base) = crate::harness::spawn_sim(dir.path());
        let mut document = format!("backends:\n  - {{system_name: sim, urls: [\"{sim_base}\"]}}\n{catalog}accounts:\n");
        let mut accounts: Vec<&str> = applications.iter().map(|a| a.0).collect();
        accounts.dedup();
        for account in accounts {
            document.push_str(&format!("  - {{name: {account}}}\n"));
        }
        document.push_str("applications:\n");
        for (account, name, product, plan) in applications {
            document.push_str(&format!(
                "  - {{account: {account}, name: {name}, product: {product}, plan: {plan}}}\n"
            ));
        }
        let path = dir.path().join("catalog.yaml");
        std::fs::write(&path, document).unwrap();
        let maas = |args: &[&str]| embedded_maas(dir.path(), args);
        maas(&["apply", "-f", path.to_str().unwrap()]);
        let keys = applications
            .iter()
            .map(|(account, name, _, _)| maas(&["create-key", "--app", &format!("{account}/{name}")]))
            .collect();
        let (proxy_port, portal_port) = (free_port(), free_port());
        let mut up = Command::new(env!("CARGO_BIN_EXE_maas"))
            .arg("up")
            .env("MAAS_DATA_DIR", dir.path().join("data"))
            .env("MAAS_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
            .env("MAAS_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("MAAS_PORTAL_LISTEN", format!("127.0.0.1:{portal_port}"))
            .env("MAAS_ADMIN_TOKEN", "embedded-test-admin-token")
            .env("MAAS_LIMITS_MODE", "strict")
            .env("MAAS_LOG_LEVEL", "warn")
            .env("MAAS_ACCESS_LOG", "false")
            .env_remove("MAAS_CONFIG")
            .env_remove("MAAS_REDIS_URL")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_err() {
            assert!(up.try_wait().unwrap().is_none(), "maas up exited");
            assert!(Instant::now() < deadline, "maas up did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        EmbeddedUp {
            dir,
            up: Some(up),
            sim,
            sim_base,
            base: format!("http://127.0.0.1:{proxy_port}"),
            keys,
        }
    }

    /// Stops `maas up` with SIGTERM (it drains and writes its usage), then
    /// reads what the store billed `account`/`application` and what the
    /// simulator served it: `(billed total_tokens, served tokens)`.
    pub async fn stop_and_count(&mut self, account: &str, application: &str) -> (u64, u64) {
        let mut up = self.up.take().expect("maas up runs");
        let sent = Command::new("kill")
            .args(["-TERM", &up.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let exited = up.wait().unwrap();
        assert!(exited.success(), "maas up stopped cleanly: {exited}");
        let store = maas_store::Store::open(
            &maas_store::StoreLocation::Embedded {
                data_dir: self.dir.path().join("data"),
            },
            maas_store::StoreOptions::default(),
        )
        .await
        .unwrap();
        let account = store.find_account(account).await.unwrap().unwrap();
        let app = store.find_application(&account.id, application).await.unwrap().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let billed = store
            .usage(&app.id, "total_tokens", maas_store::period::Period::Eternity, now)
            .await
            .unwrap();
        let usage: serde_json::Value = reqwest::get(format!("{}/sim/usage", self.sim_base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let served = &usage["applications"][&app.id];
        let served = served["prompt_tokens"].as_u64().unwrap_or(0) + served["completion_tokens"].as_u64().unwrap_or(0);
        (billed, served)
    }
}

impl Drop for EmbeddedUp {
    fn drop(&mut self) {
        for child in self.up.iter_mut().chain(std::iter::once(&mut self.sim)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `maas` on the embedded store of `dir`; its output.
fn embedded_maas(dir: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_maas"))
        .args(args)
        .env("MAAS_DATA_DIR", dir.join("data"))
        .env_remove("MAAS_CONFIG")
        .env_remove("MAAS_REDIS_URL")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "maas {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Waits until the store holds `expected` `metric` for `app` (usage is
/// settled after the answer, written in batches).
pub async fn await_stored(gw: &Gateway, app: &str, metric: &str, expected: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = gw.stored(app, metric).await;
        if expected(stored) || Instant::now() > deadline {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
