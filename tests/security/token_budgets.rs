//! Token budgets hold whatever a request looks like: every content type,
//! every spelling of the path, the shared endpoint, every way to ask for
//! more tokens, all at once against a plan with B tokens; on Redis (two
//! strict proxies) and on the embedded store (`maas up`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::fixtures::{CONTENT_TYPES, gateway};
use super::raw_http::{post_typed, send};
use crate::harness::{free_port, spawn_sim};

/// The plan's budget (catalog.yaml, `budget/two-thousand`).
const BUDGET: u64 = 2000;

/// Every variant: a path spelling × a way to ask for tokens, each with
/// one of the content types that used to skip the checks.
fn variants() -> Vec<(String, Option<&'static str>, String)> {
    let paths = [
        "/budget/v1/chat/completions",
        "/budget/v1/chat/completions/.",
        "/budget/v1/chat/completions;x=1",
        "/budget//v1/chat/completions/",
        "/budget/v1/%63hat/completions",
        "/budget/v1/x/../chat/completions",
        "/v1/chat/completions",
    ];
    let asks = [
        r#""max_tokens":200"#,
        r#""max_tokens":200,"stream":true"#,
        r#""max_completion_tokens":0,"max_tokens":5000"#,
        r#""stream":true"#,
        r#""max_tokens":null,"max_completion_tokens":300,"stream":true,"stream_options":{"include_usage":false}"#,
    ];
    let mut all = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        for (j, ask) in asks.iter().enumerate() {
            let body =
                format!(r#"{{"model":"stream-a",{ask},"messages":[{{"role":"user","content":"Hello there"}}]}}"#);
            all.push((path.to_string(), CONTENT_TYPES[(i + j) % CONTENT_TYPES.len()], body));
        }
    }
    all
}

/// Sends every variant at once, spread over `bases`; the statuses.
async fn storm(bases: &[String], key: &str) -> Vec<u16> {
    let requests = variants()
        .into_iter()
        .enumerate()
        .map(|(i, (path, content_type, body))| {
            let base = bases[i % bases.len()].clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                let answer = send(&base, &post_typed(&path, &key, content_type, body.as_bytes())).await;
                if answer.status != 200 {
                    let error = answer.error();
                    assert_eq!(answer.status, 429, "{path} {content_type:?}: {error}");
                }
                answer.status
            })
        });
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    statuses
}

fn check(statuses: &[u16], spent: u64, served: u64) {
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        spent <= BUDGET,
        "spent {spent} of a {BUDGET}-token budget ({admitted} admitted)"
    );
    assert!(served <= BUDGET, "the model server generated {served} of {BUDGET}");
    assert!(
        admitted >= 3 && spent >= BUDGET / 4,
        "the budget was used: {admitted} admitted, {spent} spent"
    );
    eprintln!(
        "{} variants at once: {admitted} admitted, {spent} of {BUDGET} tokens spent",
        statuses.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_variants_never_overrun_the_budget_on_redis() {
    let (gw, _capture) = gateway(2).await;
    let (app, key) = gw.app_key("budget-app", "budget", "two-thousand").await;
    let bases: Vec<String> = gw.proxies.iter().map(|p| p.base.clone()).collect();
    let statuses = storm(&bases, &key).await;
    // Settled after the answers: wait until the store has what was served.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut spent, mut served);
    loop {
        spent = gw.stored(&app, "total_tokens").await;
        let usage = gw.sim_usage(&app).await;
        served = usage["prompt_tokens"].as_u64().unwrap_or(0) + usage["completion_tokens"].as_u64().unwrap_or(0);
        if spent == served || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(spent, served, "billed exactly what was served");
    check(&statuses, spent, served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_variants_never_overrun_the_budget_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, sim_base) = spawn_sim(dir.path());
    let catalog = dir.path().join("catalog.yaml");
    std::fs::write(
        &catalog,
        format!(
            "backends:\n  - {{system_name: sim, urls: [\"{sim_base}\"]}}\n\
             products:\n  - {{system_name: budget, path_prefix: /budget, models: [stream-a], backend: sim}}\n\
             plans:\n  - product: budget\n    system_name: two-thousand\n    \
             limits: [{{metric: total_tokens, period: eternity, value: {BUDGET}}}]\n\
             accounts:\n  - {{name: Budget}}\n\
             applications:\n  - {{account: Budget, name: budget-app, product: budget, plan: two-thousand}}\n"
        ),
    )
    .unwrap();
    let maas = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_maas"))
            .args(args)
            .env("MAAS_DATA_DIR", dir.path().join("data"))
            .env_remove("MAAS_CONFIG")
            .env_remove("MAAS_REDIS_URL")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "maas {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    maas(&["apply", "-f", catalog.to_str().unwrap()]);
    let key = maas(&["create-key", "--app", "Budget/budget-app"]);
    let (proxy_port, portal_port) = (free_port(), free_port());
    let mut up = Command::new(env!("CARGO_BIN_EXE_maas"))
        .arg("up")
        .env("MAAS_DATA_DIR", dir.path().join("data"))
        .env("MAAS_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
        .env("MAAS_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("MAAS_PORTAL_LISTEN", format!("127.0.0.1:{portal_port}"))
        .env("MAAS_ADMIN_TOKEN", "budget-test-admin-token")
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
    let statuses = storm(&[format!("http://127.0.0.1:{proxy_port}")], &key).await;
    // SIGTERM: the proxy drains, writes its usage and flushes the store.
    let sent = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exited = up.wait().unwrap();
    assert!(exited.success(), "maas up stopped cleanly: {exited}");
    let store = maas_store::Store::open(
        &maas_store::StoreLocation::Embedded {
            data_dir: dir.path().join("data"),
        },
        maas_store::StoreOptions::default(),
    )
    .await
    .unwrap();
    let account = store.find_account("Budget").await.unwrap().unwrap();
    let app = store
        .find_application(&account.id, "budget-app")
        .await
        .unwrap()
        .unwrap();
    let spent = store
        .usage(
            &app.id,
            "total_tokens",
            maas_store::period::Period::Eternity,
            time::OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    let usage: serde_json::Value = reqwest::get(format!("{sim_base}/sim/usage"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let served = &usage["applications"][&app.id];
    let served = served["prompt_tokens"].as_u64().unwrap_or(0) + served["completion_tokens"].as_u64().unwrap_or(0);
    let _ = sim.kill();
    let _ = sim.wait();
    assert_eq!(spent, served, "billed exactly what was served");
    check(&statuses, spent, served);
}
