//! The `maas` binary end to end: check, apply, export, up --demo.

use std::path::Path;
use std::process::{Command, Output};

use maas_store::model::KeyHash;
use maas_store::{Store, StoreLocation, StoreOptions};

fn maas(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_maas"));
    command
        .current_dir(dir)
        .args(args)
        .env_remove("MAAS_REDIS_URL")
        .env_remove("MAAS_CONFIG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the maas binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn repo_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name).display().to_string()
}

#[test]
fn check_accepts_the_shipped_files() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["conf/maas.yaml", "conf/catalog.yaml", "conf/catalog.demo.yaml"] {
        let output = maas(dir.path(), &["check", "-f", &repo_file(file)], &[]);
        assert!(output.status.success(), "{file}: {}", stderr(&output));
        assert!(stdout(&output).contains(": ok ("), "{}", stdout(&output));
    }
    // Rules that reach past metering are named.
    let output = maas(dir.path(), &["check", "-f", &repo_file("conf/catalog.yaml")], &[]);
    let printed = stdout(&output);
    assert!(
        printed.contains("note: product `granite-7b-instruct` mapping_rules[6] (POST /tokenize): `unmetered: true`"),
        "{printed}"
    );
    assert_eq!(
        printed.matches("note: ").count(),
        2,
        "tokenize and detokenize: {printed}"
    );
}

#[test]
fn check_prints_file_line_field_reason_for_each_kind_of_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(repo_file("conf/catalog.yaml")).unwrap();
    // (mistake, edit of the shipped catalog, expected line prefix)
    let cases: [(&str, &str, &str, &str); 6] = [
        (
            "unknown field",
            "    health_path: /health",
            "    health_path: /health\n    helth_path: /x",
            "broken.yaml:13: backends[0].helth_path: unknown field `helth_path`",
        ),
        (
            "wrong type",
            "      connect_ms: 3000",
            "      connect_ms: soon",
            "broken.yaml:14: backends[0].timeouts.connect_ms: invalid type",
        ),
        (
            "unknown variant",
            "{metric: hits, period: minute, value: 60}",
            "{metric: hits, period: minutely, value: 60}",
            "broken.yaml:77: plans[0].limits[0].period: unknown variant `minutely`",
        ),
        (
            "dangling reference",
            "    backend: vllm-granite",
            "    backend: vllm-mistral",
            "broken.yaml:36: products[0].backend: no backend named `vllm-mistral`",
        ),
        (
            "non-positive limit",
            "{metric: hits, period: minute, value: 600}",
            "{metric: hits, period: minute, value: 0}",
            "broken.yaml:90: plans[1].limits[0].value: must be at least 1",
        ),
        (
            "syntax",
            "    models: [granite-7b-instruct]",
            "    models: [granite-7b-instruct",
            "broken.yaml:",
        ),
    ];
    for (mistake, from, to, expected) in cases {
        assert!(
            good.contains(from),
            "{mistake}: the shipped catalog changed, update this test"
        );
        let path = dir.path().join("broken.yaml");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let output = maas(dir.path(), &["check", "-f", "broken.yaml"], &[]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{mistake}: a broken file fails the check"
        );
        let printed = stderr(&output);
        assert!(
            printed.starts_with(expected),
            "{mistake}: expected `{expected}…`, got:\n{printed}"
        );
    }
    let path = dir.path().join("maas.yaml");
    std::fs::write(&path, "proxy:\n  listen: 0.0.0.0:8080\n  lisen: 0.0.0.0:1\n").unwrap();
    let output = maas(dir.path(), &["check", "-f", "maas.yaml"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("maas.yaml:3: proxy.lisen: unknown field `lisen`"),
        "{}",
        stderr(&output)
    );
}

fn wait_for(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn admin_request(method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "{method} /admin/api/v1{path} HTTP/1.1\r\nHost: localhost\r\n{authorization}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `maas portal` on the embedded store in `dir/data`, listening on `port`.
fn portal_command(dir: &Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_maas"));
    command
        .current_dir(dir)
        .arg("portal")
        .env_remove("MAAS_REDIS_URL")
        .env_remove("MAAS_CONFIG")
        .env("MAAS_DATA_DIR", "data")
        .env("MAAS_PORTAL_LISTEN", format!("127.0.0.1:{port}"))
        .env("MAAS_LOG_LEVEL", "warn");
    command
}

#[test]
fn portal_serves_the_admin_api_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = portal_command(dir.path(), port)
        .env("MAAS_ADMIN_TOKEN", "cli-admin-token")
        .spawn()
        .unwrap();
    wait_for(port, "maas portal");
    let address = format!("127.0.0.1:{port}");
    let body = r#"{"urls":["http://127.0.0.1:8000"]}"#;
    let refused = http(&address, &admin_request("PUT", "/backends/vllm", None, body));
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let created = http(
        &address,
        &admin_request("PUT", "/backends/vllm", Some("cli-admin-token"), body),
    );
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    assert!(created.to_ascii_lowercase().contains("etag: \""), "{created}");
    let status = Command::new("kill").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "maas portal exits 0 on SIGTERM");
    // What the API wrote is in the store.
    let exported = maas(
        dir.path(),
        &["export", "-o", "exported.yaml"],
        &[("MAAS_DATA_DIR", "data")],
    );
    assert!(exported.status.success(), "{}", stderr(&exported));
    let yaml = std::fs::read_to_string(dir.path().join("exported.yaml")).unwrap();
    assert!(
        yaml.contains("vllm") && yaml.contains("http://127.0.0.1:8000"),
        "{yaml}"
    );
}

/// `apply`, `create-key`, `set-role` and `export` work while a server holds
/// the embedded store (through its socket), and on their own once it
/// stopped, also past a socket a dead server left; a store held by a
/// process that takes no commands gets a message that says what to do.
#[test]
fn store_commands_run_beside_a_server_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = [("MAAS_DATA_DIR", "data")];
    let mut child = portal_command(dir.path(), port)
        .env("MAAS_ADMIN_TOKEN", "cli-admin-token")
        .spawn()
        .unwrap();
    wait_for(port, "maas portal");
    let socket = dir.path().join("data/maas.sock");
    assert!(socket.exists(), "the server listens for commands on data/maas.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the store's owner may send commands");

    let applied = maas(dir.path(), &["apply", "-f", &repo_file("conf/catalog.demo.yaml")], &env);
    assert!(applied.status.success(), "{}", stderr(&applied));
    assert!(
        stdout(&applied).contains("created product granite"),
        "{}",
        stdout(&applied)
    );
    // The running server sees the write at once.
    let products = http(
        &format!("127.0.0.1:{port}"),
        &admin_request("GET", "/products", Some("cli-admin-token"), ""),
    );
    assert!(products.contains("granite"), "{products}");

    let issued = maas(
        dir.path(),
        &["create-key", "--app", "Demo/demo-app", "--label", "beside"],
        &env,
    );
    assert!(issued.status.success(), "{}", stderr(&issued));
    let key = stdout(&issued).trim().to_owned();
    assert!(key.starts_with("sk-maas-"), "the secret alone on stdout: {key}");
    assert!(stderr(&issued).contains("shown once"), "{}", stderr(&issued));

    let missing = maas(
        dir.path(),
        &["set-role", "--email", "nobody@example.com", "admin"],
        &env,
    );
    assert!(!missing.status.success());
    assert_eq!(
        stderr(&missing).trim(),
        "error: no user with the email `nobody@example.com`"
    );

    let exported = maas(dir.path(), &["export", "--tenants", "-o", "beside.yaml"], &env);
    assert!(exported.status.success(), "{}", stderr(&exported));
    let yaml = std::fs::read_to_string(dir.path().join("beside.yaml")).unwrap();
    assert!(yaml.contains("demo-app"), "{yaml}");

    let status = Command::new("kill").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "maas portal exits 0 on SIGTERM");
    assert!(!socket.exists(), "the socket goes with the server");

    // A socket a killed server left behind: the command opens the store.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let alone = maas(dir.path(), &["export", "--tenants"], &env);
    assert!(alone.status.success(), "{}", stderr(&alone));
    assert_eq!(stdout(&alone), yaml, "the same store either way");
    block_on(async {
        let store = open_embedded(dir.path()).await;
        let context = store.lookup_key(&KeyHash::of(&key)).await.unwrap();
        assert_eq!(
            context.expect("the key issued beside the server").application.name,
            "demo-app"
        );

        // Held by a process that takes no commands (this test): say so.
        std::fs::remove_file(&socket).unwrap();
        let held = maas(dir.path(), &["export"], &env);
        assert!(!held.status.success());
        let said = stderr(&held);
        assert!(
            said.contains("another maas process holds the store in data") && said.contains("stop it"),
            "{said}"
        );
    });
}

/// Starts `maas portal` on a fresh port without `MAAS_ADMIN_TOKEN`, waits
/// until it listens, stops it, and returns what it printed.
fn portal_run_without_a_token(dir: &std::path::Path, during: impl FnOnce(&str)) -> String {
    let port = free_port();
    let child = portal_command(dir, port)
        .env_remove("MAAS_ADMIN_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(port, "maas portal");
    during(&format!("127.0.0.1:{port}"));
    let status = Command::new("kill").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "maas portal exits 0 on SIGTERM");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_bootstrap_admin_token_is_printed_once_and_kept_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let first = portal_run_without_a_token(dir.path(), |_| {});
    let token = first
        .lines()
        .skip_while(|line| !line.contains("bootstrap token"))
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no bootstrap token printed:\n{first}"))
        .to_owned();
    assert!(token.len() >= 40, "{token}");
    // Only its hash is stored.
    let data = std::fs::read_dir(dir.path().join("data")).unwrap();
    for file in data {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token is in the store in clear"
        );
    }
    // A second start prints no token, and the first one still works.
    let second = portal_run_without_a_token(dir.path(), |address| {
        let listed = http(address, &admin_request("GET", "/tokens", Some(&token), ""));
        assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
        assert!(listed.contains("\"bootstrap\""), "{listed}");
        let refused = http(address, &admin_request("GET", "/tokens", Some("guess"), ""));
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    });
    assert!(!second.contains(&token), "printed once:\n{second}");
    assert!(second.contains("1 token(s) in the store"), "{second}");
}

/// apply → export → apply changes nothing, on the store `env` selects.
fn apply_export_apply(env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let first = maas(dir.path(), &["apply", "-f", &repo_file("conf/catalog.demo.yaml")], env);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("created product granite"), "{}", stdout(&first));

    let exported = maas(dir.path(), &["export", "--tenants", "-o", "exported.yaml"], env);
    assert!(exported.status.success(), "{}", stderr(&exported));
    let check = maas(dir.path(), &["check", "-f", "exported.yaml"], env);
    assert!(
        check.status.success(),
        "the export is a valid catalog: {}",
        stderr(&check)
    );

    let second = maas(dir.path(), &["apply", "-f", "exported.yaml"], env);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second).contains("no changes: the store already matches"),
        "{}",
        stdout(&second)
    );

    // --prune with a smaller catalog deletes what the file no longer lists.
    let demo = std::fs::read_to_string(repo_file("conf/catalog.demo.yaml")).unwrap();
    let start = demo.find("  - product: granite\n    system_name: premium").unwrap();
    let end = demo[start..].find("\naccounts:").unwrap() + start;
    std::fs::write(
        dir.path().join("smaller.yaml"),
        format!("{}{}", &demo[..start], &demo[end..]),
    )
    .unwrap();
    let pruned = maas(dir.path(), &["apply", "-f", "smaller.yaml", "--prune"], env);
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    assert_eq!(
        stdout(&pruned)
            .lines()
            .filter(|l| l.contains("deleted"))
            .collect::<Vec<_>>(),
        ["  deleted plan granite/premium"]
    );
}

#[test]
fn apply_export_apply_is_a_no_op_on_the_embedded_store() {
    let data = tempfile::tempdir().unwrap();
    apply_export_apply(&[("MAAS_DATA_DIR", data.path().to_str().unwrap())]);
}

#[test]
fn apply_export_apply_is_a_no_op_on_redis() {
    let url = std::env::var("MAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!(
        "maastest-cli-{}",
        maas_store::ids::hex(&maas_store::ids::random_bytes::<6>())
    );
    apply_export_apply(&[("MAAS_REDIS_URL", &url), ("MAAS_REDIS_PREFIX", &prefix)]);
    block_on(async {
        let backend = maas_store::backend::redis::RedisBackend::connect(&url, &prefix, &Default::default())
            .await
            .unwrap();
        backend.destroy_all_data().await.unwrap();
    });
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// The embedded store a test's `maas` runs wrote under `dir/data`.
async fn open_embedded(dir: &Path) -> Store {
    let location = StoreLocation::Embedded {
        data_dir: dir.join("data"),
    };
    Store::open(&location, StoreOptions::default()).await.unwrap()
}

use maas_store::conformance::servers::free_port;

/// One HTTP/1.1 exchange on a fresh connection; the whole reply.
fn http(address: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// The value of cookie `name` set by a raw HTTP `reply`.
fn set_cookie(reply: &str, name: &str) -> Option<String> {
    reply
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .filter_map(|l| l.split_once(':').map(|(_, v)| v.trim()))
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

/// The demo admin signs in to the portal with `password` and opens the
/// admin console.
fn demo_admin_signs_in(address: &str, email: &str, password: &str) {
    let page = http(
        address,
        "GET /sign-in HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let csrf = set_cookie(&page, "maas_csrf").expect("a CSRF cookie");
    let body = format!(
        "csrf={csrf}&email={}&password={}&next=%2Fadmin",
        email.replace('@', "%40"),
        password.trim()
    );
    let signed_in = http(
        address,
        &format!(
            "POST /sign-in HTTP/1.1\r\nHost: localhost\r\nCookie: maas_csrf={csrf}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(signed_in.starts_with("HTTP/1.1 303"), "{signed_in}");
    let session = set_cookie(&signed_in, "maas_session").expect("a session");
    let console = http(
        address,
        &format!(
            "GET /admin HTTP/1.1\r\nHost: localhost\r\nCookie: maas_session={session}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(
        console.starts_with("HTTP/1.1 200") && console.contains("Overview"),
        "{console}"
    );
}

/// What one `maas up --demo` run printed and answered.
struct DemoRun {
    printed: String,
    /// The key the run printed, else the one it was given.
    key: String,
    /// The reply to the curl example it printed.
    reply: String,
    /// The portal's model page of TinyLlama.
    model_page: String,
}

/// Runs `maas up --demo` on fresh ports (as flags) until it prints its
/// curl example, makes that request with the key it printed (or `known`),
/// signs in as the demo admin, stops it with SIGTERM.
fn run_up_demo(dir: &Path, known: Option<&str>, admin_password: &mut Option<String>) -> DemoRun {
    use std::io::{BufRead, BufReader};
    let (proxy, metrics, sim, portal) = (free_port(), free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_maas"))
        .current_dir(dir)
        .args(["up", "--demo", "--data-dir", "data"])
        .args(["--listen", &format!("127.0.0.1:{proxy}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--sim-listen", &format!("127.0.0.1:{sim}")])
        .args(["--portal-listen", &format!("127.0.0.1:{portal}")])
        .env_remove("MAAS_REDIS_URL")
        .env_remove("MAAS_CONFIG")
        .env_remove("MAAS_PROXY_PUBLIC_URL")
        .env_remove("MAAS_PORTAL_PUBLIC_URL")
        .env("MAAS_ADMIN_TOKEN", "demo-admin-token")
        .env("MAAS_LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("Hello!") {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "maas up stopped early:\n{printed}"
        );
        printed.push_str(&line);
    }
    let key = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sk-maas-"))
        .map(str::to_owned)
        .or_else(|| known.map(str::to_owned))
        .unwrap_or_else(|| panic!("no demo key printed:\n{printed}"));
    let gateway = format!("http://127.0.0.1:{proxy}");
    assert!(
        printed.contains(&format!("{gateway}/tinyllama/v1")),
        "the endpoints follow --listen:\n{printed}"
    );
    assert!(
        printed.contains(&format!("curl {gateway}/v1/chat/completions")),
        "the curl example follows --listen:\n{printed}"
    );
    assert!(
        printed.contains(&format!("http://127.0.0.1:{portal}/sign-in")),
        "the portal's address follows --portal-listen:\n{printed}"
    );
    assert!(!printed.contains("localhost:8080"), "{printed}");
    let body = r#"{"model":"tinyllama-1.1b-chat","messages":[{"role":"user","content":"Hello!"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The listener may open a moment after the banner.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", proxy)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the proxy never listened");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let reply = http(&format!("127.0.0.1:{proxy}"), &request);
    // The admin API runs beside the proxy.
    wait_for(portal, "the admin API");
    let products = http(
        &format!("127.0.0.1:{portal}"),
        &admin_request("GET", "/products", Some("demo-admin-token"), ""),
    );
    assert!(
        products.starts_with("HTTP/1.1 200") && products.contains("tinyllama"),
        "{products}"
    );
    let model_page = http(
        &format!("127.0.0.1:{portal}"),
        "GET /models/tinyllama HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .replace("&#x2f;", "/");
    let admin = printed
        .lines()
        .find(|l| l.starts_with("portal admin (demo"))
        .unwrap_or_else(|| panic!("no demo admin printed:\n{printed}"));
    if admin_password.is_none() {
        let (_, password) = admin.rsplit_once(": ").unwrap().1.split_once(" / ").unwrap();
        *admin_password = Some(password.trim().to_owned());
    } else {
        assert!(admin.contains("kept"), "{admin}");
    }
    demo_admin_signs_in(
        &format!("127.0.0.1:{portal}"),
        "admin@demo.local",
        admin_password.as_deref().unwrap(),
    );
    let status = Command::new("kill").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "maas up exits 0 on SIGTERM");
    DemoRun {
        printed,
        key,
        reply,
        model_page,
    }
}

#[test]
fn up_help_lists_the_listen_settings_and_their_variables() {
    let dir = tempfile::tempdir().unwrap();
    let help = stdout(&maas(dir.path(), &["up", "--help"], &[]));
    for (flag, variable) in [
        ("--listen", "MAAS_PROXY_LISTEN"),
        ("--metrics-listen", "MAAS_METRICS_LISTEN"),
        ("--portal-listen", "MAAS_PORTAL_LISTEN"),
        ("--sim-listen", "MAAS_SIM_LISTEN"),
        ("--public-url", "MAAS_PROXY_PUBLIC_URL"),
        ("--portal-public-url", "MAAS_PORTAL_PUBLIC_URL"),
        ("--data-dir", "MAAS_DATA_DIR"),
    ] {
        assert!(
            help.contains(flag) && help.contains(variable),
            "{flag} / {variable}:\n{help}"
        );
    }
    let refused = maas(dir.path(), &["up", "--public-url", "ftp://example.com"], &[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--public-url (proxy.public_url): `ftp://example.com` is not an http(s) URL"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn up_demo_serves_a_completion_with_the_key_it_prints_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut password = None;
    let first = run_up_demo(dir.path(), None, &mut password);
    let reply = &first.reply;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"usage\""), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("x-ratelimit-remaining-requests: 59"),
        "{reply}"
    );
    assert!(
        first.model_page.contains(&format!(
            "{}/tinyllama/v1",
            first
                .printed
                .split("curl ")
                .nth(1)
                .unwrap()
                .split("/v1/")
                .next()
                .unwrap()
        )),
        "the model page shows the gateway's real address:\n{}",
        first.model_page
    );
    assert!(!first.model_page.contains("localhost:8080"), "{}", first.model_page);

    // An operator's edits between runs.
    block_on(async {
        let store = open_embedded(dir.path()).await;
        let mut plan = store.get_plan("tinyllama", "free").await.unwrap().unwrap();
        plan.limits[0].value = 30;
        store.put_plan(plan).await.unwrap();
        store.flush().await.unwrap();
    });

    let second = run_up_demo(dir.path(), Some(&first.key), &mut password);
    assert!(
        second.reply.starts_with("HTTP/1.1 200"),
        "the first key still works: {}",
        second.reply
    );
    assert!(
        !second.printed.lines().any(|l| l.trim().starts_with("sk-maas-")),
        "no new key when one is kept:\n{}",
        second.printed
    );
    assert!(
        second.printed.contains("kept from an earlier run"),
        "{}",
        second.printed
    );
    assert!(second.printed.contains("kept as they are:"), "{}", second.printed);
    assert!(second.printed.contains("plan tinyllama/free"), "{}", second.printed);

    block_on(async {
        let store = open_embedded(dir.path()).await;
        let plan = store.get_plan("tinyllama", "free").await.unwrap().unwrap();
        assert_eq!(plan.limits[0].value, 30, "the edit survives a second `up --demo`");
        let context = store
            .lookup_key(&KeyHash::of(&first.key))
            .await
            .unwrap()
            .expect("the printed key still works");
        assert_eq!(context.application.name, "demo-app");
        assert_eq!(context.plan.system_name, "free");
        // Usage queued at SIGTERM was written before exit.
        let now = time::OffsetDateTime::now_utc();
        let hits = store
            .usage(
                &context.application.id,
                "hits",
                maas_store::period::Period::Eternity,
                now,
            )
            .await
            .unwrap();
        assert_eq!(hits, 2, "one completion per run");
        let tokens = store
            .usage(
                &context.application.id,
                "total_tokens",
                maas_store::period::Period::Eternity,
                now,
            )
            .await
            .unwrap();
        assert!(tokens > 0);
        let raw = std::fs::read(dir.path().join("data/maas.redb")).unwrap();
        assert!(
            !raw.windows(first.key.len()).any(|w| w == first.key.as_bytes()),
            "the key is not stored in clear"
        );
    });
}

#[test]
fn sim_models_file_mistakes_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo_file("loadtest/sim/sim.example.yaml")).unwrap();
    let broken = example.replacen("error_rate: 0.01", "error_rate: 1.5", 1);
    std::fs::write(dir.path().join("sim.yaml"), broken).unwrap();
    let output = maas(
        dir.path(),
        &["sim", "--models", "sim.yaml", "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("sim.yaml:15: models[1].failures.error_rate: must be between 0 and 1"),
        "{}",
        stderr(&output)
    );
    std::fs::write(dir.path().join("typo.yaml"), "models:\n  - id: m\n    itl: 5\n").unwrap();
    let output = maas(dir.path(), &["sim", "--models", "typo.yaml"], &[]);
    assert!(
        stderr(&output).contains("typo.yaml:3: models[0].itl: unknown field `itl`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn sim_serves_until_terminated() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_maas"))
        .current_dir(dir.path())
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--models",
            &repo_file("loadtest/sim/sim.example.yaml"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect(&line)
        .to_owned();
    assert!(line.contains("load-test"), "{line}");
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // SIGTERM: a clean stop with status 0.
    let status = Command::new("kill").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "maas sim exits 0 on SIGTERM");
}

#[test]
fn create_key_prints_a_working_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("MAAS_DATA_DIR", "data")];
    let applied = maas(dir.path(), &["apply", "-f", &repo_file("conf/catalog.demo.yaml")], &env);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let created = maas(
        dir.path(),
        &["create-key", "--app", "Demo/demo-app", "--label", "ci"],
        &env,
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let secret = stdout(&created).trim().to_owned();
    assert!(secret.starts_with("sk-maas-") && !secret.contains('\n'), "{secret}");
    assert!(stderr(&created).contains("plan free"), "{}", stderr(&created));
    let missing = maas(dir.path(), &["create-key", "--app", "Demo/nope"], &env);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("account `Demo` has no application named `nope`"),
        "{}",
        stderr(&missing)
    );
    block_on(async {
        let store = open_embedded(dir.path()).await;
        let context = store
            .lookup_key(&KeyHash::of(&secret))
            .await
            .unwrap()
            .expect("the key works");
        assert_eq!(context.key().unwrap().label, "ci");
    });
}

/// What the store refuses of a file is said once, at the file's line:
/// a clash with an object only the store has, an application moved to
/// another product.
#[test]
fn apply_errors_name_the_file_line_and_field_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("MAAS_DATA_DIR", "data")];
    let applied = maas(dir.path(), &["apply", "-f", &repo_file("conf/catalog.demo.yaml")], &env);
    assert!(applied.status.success(), "{}", stderr(&applied));

    std::fs::write(
        dir.path().join("clash.yaml"),
        "backends:\n  - system_name: other-sim\n    urls: [http://127.0.0.1:8000]\nproducts:\n  - system_name: other\n    \
         path_prefix: /tinyllama\n    models: [other-model]\n    backend: other-sim\n",
    )
    .unwrap();
    let clash = maas(dir.path(), &["apply", "-f", "clash.yaml"], &env);
    assert!(!clash.status.success());
    assert_eq!(
        stderr(&clash).trim(),
        "error: clash.yaml:6: products[0].path_prefix: `/tinyllama` is already the prefix of product `tinyllama`"
    );

    let demo = std::fs::read_to_string(repo_file("conf/catalog.demo.yaml")).unwrap();
    let at = demo.rfind("    product: tinyllama\n    plan: free").unwrap();
    let moved = format!(
        "{}    product: granite\n    plan: standard{}",
        &demo[..at],
        &demo[at + "    product: tinyllama\n    plan: free".len()..]
    );
    std::fs::write(dir.path().join("moved.yaml"), &moved).unwrap();
    let line = moved[..moved.rfind("product: granite").unwrap()].lines().count();
    let refused = maas(dir.path(), &["apply", "-f", "moved.yaml"], &env);
    assert!(!refused.status.success());
    let said = stderr(&refused);
    assert_eq!(said.lines().count(), 1, "said once: {said}");
    assert!(
        said.starts_with(&format!(
            "error: moved.yaml:{line}: applications[0].product: application `demo-app`"
        )),
        "{said}"
    );
}
