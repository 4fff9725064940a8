//! The portal in front of the real gateway: a developer signs up in
//! headless Chromium, gets a key, calls the model with the official openai
//! npm SDK through the proxy, and the statistics page shows the tokens.

use std::net::SocketAddr;

use super::harness::{CATALOG, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_gets_a_key_in_the_browser_and_sees_the_call_in_statistics() {
    let node_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");
    let installed = ["openai", "playwright-core"].iter().all(|p| {
        std::path::Path::new(node_dir)
            .join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
    });
    assert!(
        installed && std::path::Path::new("/usr/bin/chromium").exists(),
        "this test needs Debian's chromium and the npm packages of tests/node: \
         `apt-get install chromium && npm ci --prefix tests/node` (.ci/run does both)"
    );
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let options = maas_portal::PortalOptions {
        gateway_url: gw.base().to_owned(),
        ..maas_portal::PortalOptions::default()
    };
    let app = maas_portal::router(gw.store.clone(), options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let portal = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap()
    });
    let shots = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/artifacts"));
    std::fs::create_dir_all(shots).unwrap();
    let email = ["ada", "example.com"].join("@");
    let output = tokio::process::Command::new("node")
        .arg(format!("{node_dir}/portal_flow.mjs"))
        .args([portal.as_str(), shots.to_str().unwrap(), &email, "alpha/open", "chat-a"])
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["errors"], serde_json::json!([]), "no console errors: {report}");
    let total = report["usage"]["total_tokens"].as_u64().unwrap();
    assert!(total > 0, "{report}");
    let statistics = &report["statistics"];
    assert_eq!(statistics["total_tokens"], total, "the page shows the tokens: {report}");
    assert_eq!(statistics["hits"], 1, "and the request: {report}");
    assert!(statistics["bars"].as_u64().unwrap() >= 1, "{report}");
    // The numbers on the page are the store's.
    let user = gw.store.find_user_by_email(&email).await.unwrap().unwrap();
    let apps = gw
        .store
        .list_applications(
            &maas_store::ApplicationFilter {
                account_id: Some(user.account_id),
                ..Default::default()
            },
            &maas_store::Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(gw.stored(&apps.items[0].id, "total_tokens").await, total);
}
