//! `deploy/` checked without a cluster or a container engine: the rendered
//! manifests and the dashboard pass `deploy/check.py` (and a broken copy
//! does not); the Containerfile builds the binary the manifests run; that
//! binary starts as proxy and portal with the config the manifests mount and
//! answers their probes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// Each test binary uses its own part of the shared support.
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;
use support::certs::make_certificates;
use support::{free_port, metric_value};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn check_py(root: &Path) -> std::process::Output {
    Command::new("python3")
        .arg(root.join("deploy/check.py"))
        .output()
        .expect("python3 runs")
}

#[test]
fn manifests_and_dashboard_pass_the_offline_checks() {
    let output = check_py(&repo(""));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !text.contains("is missing: pip install"),
        "this test needs kubernetes-validate: `pip install kubernetes-validate` (.ci/run installs it)\n{text}"
    );
    assert!(output.status.success(), "deploy/check.py:\n{text}");
    for rendered in [
        "kubernetes/base: Deployment maas-proxy",
        "kubernetes/base: Ingress maas",
        "kubernetes/base: ServiceMonitor maas-proxy",
        "kubernetes/overlays/openshift: Route maas-api",
        "kubernetes/overlays/openshift: ConfigMap maas-config",
    ] {
        assert!(text.contains(rendered), "{rendered}:\n{text}");
    }
    assert!(
        !text.contains("kubernetes/overlays/openshift: Ingress"),
        "the OpenShift overlay replaces the Ingress with Routes:\n{text}"
    );
    // The Sentinel overlay swaps the single Redis for three sentinel-watched
    // pods and points both Deployments at them with a URL maas reads.
    assert!(
        text.contains("kubernetes/overlays/redis-sentinel: StatefulSet maas-redis-sentinel"),
        "{text}"
    );
    assert!(
        !text.contains("kubernetes/overlays/redis-sentinel: StatefulSet maas-redis\n"),
        "{text}"
    );
    let overlay =
        std::fs::read_to_string(repo("deploy/kubernetes/overlays/redis-sentinel/kustomization.yaml")).unwrap();
    let urls: Vec<&str> = overlay
        .lines()
        .filter_map(|line| line.trim().strip_prefix("value: redis+sentinel://"))
        .collect();
    assert_eq!(urls.len(), 2, "the proxy's and the portal's MAAS_REDIS_URL");
    for url in urls {
        let url = format!("redis+sentinel://{url}");
        match maas_store::backend::redis_url::parse(&url) {
            Ok(maas_store::backend::redis_url::RedisTarget::Sentinel(target)) => {
                assert_eq!((target.master.as_str(), target.sentinels.len()), ("maas", 3), "{url}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }

    // A broken copy fails, naming each mistake.
    let copy = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .args(["-r", &repo("deploy").display().to_string()])
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    // The metric names the dashboard may chart: the proxy's, the admin API's gauges.
    for source in [
        "proxy/src/record/metrics.rs",
        "proxy/src/record/genai.rs",
        "admin-api/src/budgets.rs",
    ] {
        let target = copy.path().join(source);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(repo(source), target).unwrap();
    }
    let edit = |file: &str, from: &str, to: &str| {
        let path = copy.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file}: {from}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    edit(
        "deploy/kubernetes/base/proxy.yaml",
        "targetPort: http}",
        "targetPort: htp}",
    );
    edit("deploy/kubernetes/base/proxy.yaml", "replicas: 2", "replicas: two");
    edit(
        "deploy/kubernetes/base/config/maas.yaml",
        "shutdown_timeout_secs: 50",
        "shutdown_timeout_secs: 90",
    );
    edit(
        "deploy/kubernetes/overlays/openshift/routes.yaml",
        "termination: edge",
        "termination: none",
    );
    edit(
        "deploy/kubernetes/overlays/openshift/kustomization.yaml",
        "      - op: remove\n        path: /spec/template/spec/securityContext/fsGroup\n",
        "",
    );
    edit(
        "deploy/grafana/maas-dashboard.json",
        "maas_rejected_total",
        "maas_refused_total",
    );
    edit(
        "deploy/grafana/maas-dashboard.json",
        "maas_budget_remaining",
        "maas_budget_left",
    );
    edit(
        "deploy/grafana/maas-dashboard.json",
        "gen_ai_server_time_per_output_token_seconds_bucket",
        "gen_ai_server_time_per_token_seconds_bucket",
    );
    let broken = check_py(copy.path());
    let errors = String::from_utf8_lossy(&broken.stderr);
    assert!(!broken.status.success(), "a broken copy passed");
    for expected in [
        "Service maas-proxy targets port htp, which its pods do not name",
        "Deployment maas-proxy: 'two' is not of type 'integer'",
        "must stay below terminationGracePeriodSeconds 60 s",
        "Route maas-api: spec.tls.termination must be edge, passthrough or reencrypt",
        "kubernetes/overlays/openshift: StatefulSet maas-redis fixes fsGroup 999, which the restricted-v2 SCC refuses",
        "neither the proxy nor the admin API exports maas_refused_total",
        "neither the proxy nor the admin API exports maas_budget_left",
        "neither the proxy nor the admin API exports gen_ai_server_time_per_token_seconds_bucket",
    ] {
        assert!(errors.contains(expected), "{expected}:\n{errors}");
    }
}

/// `maas check` on the config the manifests mount, with the secrets the
/// cluster provides; and the same file with SSO off, where nobody could sign
/// in, is refused.
#[test]
fn the_mounted_config_passes_maas_check_and_someone_can_sign_in() {
    let check = |file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_maas"))
            .args(["check", "-f"])
            .arg(file)
            .env("MAAS_SSO_CLIENT_SECRET", "test-client-secret")
            .env("MAAS_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef")
            .output()
            .unwrap()
    };
    let config = repo("deploy/kubernetes/base/config/maas.yaml");
    let checked = check(&config);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("local_accounts: false"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let without_sso = dir.path().join("maas.yaml");
    std::fs::write(&without_sso, text.replacen("  enabled: true\n", "", 1)).unwrap();
    let refused = check(&without_sso);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a config nobody can sign in with passed");
    assert!(
        said.contains("portal.local_accounts: nobody can sign in to the portal"),
        "{said}"
    );
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(http: &reqwest::Client, url: &str, child: &mut Child) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = http.get(url).send().await {
            return (response.status().as_u16(), response.text().await.unwrap());
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{url}: the process exited: {status}");
        }
        assert!(Instant::now() < deadline, "{url}: no answer within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_proxy_and_portal_with_the_mounted_config() {
    // What the Containerfile builds and runs.
    let containerfile = std::fs::read_to_string(repo("deploy/container/Containerfile")).unwrap();
    assert!(
        containerfile.contains("cargo build --release --locked --bin maas"),
        "{containerfile}"
    );
    assert!(containerfile.contains("COPY --from=build /out/maas /usr/local/bin/maas"));
    assert!(containerfile.contains("ENTRYPOINT [\"/usr/local/bin/maas\"]"));
    assert!(containerfile.contains("CMD [\"proxy\"]"));
    assert!(
        !containerfile.contains("cmake"),
        "the build needs no cmake: {containerfile}"
    );
    // The build context leaves out build outputs and the repository (Podman
    // reads .containerignore, Docker .dockerignore: the same file).
    for ignore in [".containerignore", ".dockerignore"] {
        let text = std::fs::read_to_string(repo(ignore)).unwrap();
        for excluded in ["target/", ".git/", "**/node_modules/"] {
            assert!(
                text.lines().any(|l| l == excluded),
                "{ignore} lacks {excluded}:\n{text}"
            );
        }
    }
    let user = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        user.split(':').all(|id| id.parse::<u32>().is_ok_and(|id| id > 0)),
        "numeric non-root USER: {user}"
    );
    for copied in containerfile.lines().filter_map(|l| l.strip_prefix("COPY conf/")) {
        let file = copied.split_whitespace().next().unwrap();
        let checked = Command::new(env!("CARGO_BIN_EXE_maas"))
            .args(["check", "-f"])
            .arg(repo(&format!("conf/{file}")))
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "conf/{file}: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }

    // What the Deployments run: a subcommand, and the config where the
    // ConfigMap is mounted.
    let mut subcommands = Vec::new();
    for file in ["proxy.yaml", "portal.yaml"] {
        let text = std::fs::read_to_string(repo(&format!("deploy/kubernetes/base/{file}"))).unwrap();
        let deployment: serde_json::Value = serde_yaml_ng::from_str(text.split("\n---").next().unwrap()).unwrap();
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
        let config = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "MAAS_CONFIG")
            .and_then(|e| e["value"].as_str())
            .unwrap();
        assert_eq!(config, format!("{mount}/maas.yaml"), "{file}");
        subcommands.push(container["args"][0].as_str().unwrap().to_owned());
    }
    assert_eq!(subcommands, ["proxy", "portal"]);

    // That config, with what the cluster would provide (Redis, secrets) and
    // loopback ports, starts both and answers the probes.
    let config = repo("deploy/kubernetes/base/config/maas.yaml");
    let catalog = repo("deploy/kubernetes/base/config/catalog.yaml");
    let redis = std::env::var("MAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("maastest-deploy-{}", std::process::id());
    let (proxy_port, metrics_port, portal_port) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_maas"));
        command
            .args(args)
            .current_dir(dir.path())
            .env("MAAS_CONFIG", &config)
            .env("MAAS_REDIS_URL", &redis)
            .env("MAAS_REDIS_PREFIX", &prefix)
            .env("MAAS_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
            .env("MAAS_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("MAAS_PORTAL_LISTEN", format!("127.0.0.1:{portal_port}"))
            .env("MAAS_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef")
            .env("MAAS_SSO_CLIENT_SECRET", "test-client-secret")
            .env("MAAS_LOG_LEVEL", "warn")
            .stdout(Stdio::null());
        command
    };
    let applied = run(&["apply", "-f", &catalog.display().to_string()]).output().unwrap();
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let http = reqwest::Client::new();
    let mut proxy = Running(run(&["proxy"]).spawn().unwrap());
    let (status, body) = wait_for(&http, &format!("http://127.0.0.1:{metrics_port}/ready"), &mut proxy.0).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, _) = wait_for(&http, &format!("http://127.0.0.1:{metrics_port}/health"), &mut proxy.0).await;
    assert_eq!(status, 200);
    // The catalog is served: an unknown key is refused by the gateway itself.
    let refused = http
        .post(format!("http://127.0.0.1:{proxy_port}/granite/v1/chat/completions"))
        .bearer_auth("sk-maas-not-issued")
        .json(&serde_json::json!({"model": "granite-7b-instruct", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let mut portal = Running(run(&["portal"]).spawn().unwrap());
    let (status, body) = wait_for(&http, &format!("http://127.0.0.1:{portal_port}/readyz"), &mut portal.0).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, _) = wait_for(&http, &format!("http://127.0.0.1:{portal_port}/healthz"), &mut portal.0).await;
    assert_eq!(status, 200);
    // SIGTERM, as Kubernetes sends it: both drain and exit 0.
    for (what, running) in [("proxy", &mut proxy), ("portal", &mut portal)] {
        let sent = Command::new("kill")
            .args(["-TERM", &running.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = running.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{what} still runs 10 s after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "{what} exits 0 on SIGTERM: {status}");
    }
    // Leave the test Redis as it was.
    let keys = Command::new("redis-cli")
        .args(["-u", &redis, "--scan", "--pattern", &format!("{prefix}:*")])
        .output()
        .expect("redis-cli runs");
    for key in String::from_utf8_lossy(&keys.stdout).lines() {
        let _ = Command::new("redis-cli").args(["-u", &redis, "DEL", key]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_redis_is_reached_with_the_mounted_ca_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path();
    make_certificates(certs);
    let file = |name: &str| certs.join(name).display().to_string();

    // Redis with TLS only, requiring a client certificate (mutual TLS).
    let tls_port = free_port();
    let mut redis = Running(
        Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-port", &tls_port.to_string(), "--tls-auth-clients", "yes"])
            .args([
                "--tls-cert-file",
                &file("server.crt"),
                "--tls-key-file",
                &file("server.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &file("ca.crt"),
                "--dir",
                &certs.display().to_string(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("this test needs redis-server (with TLS, as Debian builds it): `apt-get install redis-server`"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(redis.0.try_wait().unwrap().is_none(), "redis-server with TLS exited");
        assert!(Instant::now() < deadline, "redis-server never listened on {tls_port}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (proxy_port, metrics_port) = (free_port(), free_port());
    let catalog = repo("conf/catalog.yaml").display().to_string();
    let maas = |args: &[&str], tls: &[(&str, String)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_maas"));
        command
            .args(args)
            .current_dir(certs)
            .env("MAAS_CONFIG", repo("conf/maas.yaml"))
            .env("MAAS_REDIS_URL", format!("rediss://127.0.0.1:{tls_port}"))
            .env("MAAS_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
            .env("MAAS_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("MAAS_LOG_LEVEL", "warn")
            .stdout(Stdio::null());
        for (name, value) in tls {
            command.env(name, value);
        }
        command
    };
    let ca = ("MAAS_REDIS_TLS_CA_FILE", file("ca.crt"));
    let client = [
        ("MAAS_REDIS_TLS_CERT_FILE", file("client.crt")),
        ("MAAS_REDIS_TLS_KEY_FILE", file("client.key")),
    ];
    let all = [ca.clone(), client[0].clone(), client[1].clone()];

    // The server's certificate is not in the system's trust store, and the
    // server refuses a client without a certificate: both fail, saying so.
    let plain = maas(&["apply", "-f", &catalog], &[]).output().unwrap();
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success(), "connected with no TLS files");
    assert!(
        said.contains("invalid peer certificate") && !said.contains("panicked"),
        "{said}"
    );
    let untrusted = maas(&["apply", "-f", &catalog], &client).output().unwrap();
    let said = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success(), "connected without the CA");
    assert!(
        said.contains("invalid peer certificate") && said.contains("MAAS_REDIS_TLS_CA_FILE"),
        "{said}"
    );
    let anonymous = maas(&["apply", "-f", &catalog], std::slice::from_ref(&ca))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&anonymous.stderr);
    assert!(!anonymous.status.success(), "connected without a client certificate");
    assert!(said.contains("CertificateRequired"), "{said}");

    // With the mounted files: the catalog is written, the proxy loads it and
    // follows the change feed over TLS.
    let applied = maas(&["apply", "-f", &catalog], &all).output().unwrap();
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let http = reqwest::Client::new();
    let mut proxy = Running(maas(&["proxy"], &all).spawn().unwrap());
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    let (status, body) = wait_for(&http, &format!("{metrics}/ready"), &mut proxy.0).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let catalog_changes = || async {
        let text = http
            .get(format!("{metrics}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, "maas_store_changes_total", "kind", "catalog").unwrap_or(0)
    };
    let before = catalog_changes().await;
    let edited = certs.join("catalog.yaml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(&edited, text.replacen("description:", "description: (edited)", 1)).unwrap();
    assert!(
        text.contains("description:"),
        "conf/catalog.yaml has a description to edit"
    );
    let reapplied = maas(&["apply", "-f", &edited.display().to_string()], &all)
        .output()
        .unwrap();
    assert!(
        reapplied.status.success(),
        "{}",
        String::from_utf8_lossy(&reapplied.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while catalog_changes().await <= before {
        assert!(
            Instant::now() < deadline,
            "the proxy heard no catalog change over TLS in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = http
        .get(format!("http://127.0.0.1:{proxy_port}/v1/models"))
        .bearer_auth("sk-maas-not-issued")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}
