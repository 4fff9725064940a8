//! The portal in front of the real gateway: a developer signs up in
//! headless Chromium, gets a key, calls the model with the official openai
//! npm SDK through the proxy, and the statistics page shows the tokens.

use std::net::SocketAddr;

use super::harness::{CATALOG, Gateway, free_port, node_dir, require_browser, run_json_script};

/// The portal in front of `gw` (its gateway URL), on a free port; its URL.
async fn serve_portal(gw: &Gateway, options: maas_portal::PortalOptions) -> String {
    let options = maas_portal::PortalOptions {
        gateway_url: gw.base().to_owned(),
        ..options
    };
    let app = maas_portal::router(gw.store.clone(), options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let portal = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap()
    });
    portal
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_gets_a_key_in_the_browser_and_sees_the_call_in_statistics() {
    let node_dir = require_browser(&["openai", "playwright-core"]);
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let portal = serve_portal(&gw, maas_portal::PortalOptions::default()).await;
    let shots = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/artifacts"));
    std::fs::create_dir_all(shots).unwrap();
    let email = ["ada", "example.com"].join("@");
    let script = format!("{node_dir}/portal_flow.mjs");
    let shots = shots.to_str().unwrap();
    let report = run_json_script("node", &[&script, &portal, shots, &email, "alpha/open", "chat-a"]).await;
    assert_eq!(report["errors"], serde_json::json!([]), "no console errors: {report}");
    let total = report["usage"]["total_tokens"].as_u64().unwrap();
    assert!(total > 0, "{report}");
    let statistics = &report["statistics"];
    assert_eq!(statistics["total_tokens"], total, "the page shows the tokens: {report}");
    assert_eq!(statistics["hits"], 1, "and the request: {report}");
    assert!(statistics["bars"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(
        report["operations"], 5,
        "the API reference lists the OpenAI-compatible operations: {report}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_sign_in_then_an_admin_approves_in_the_console() {
    use tokio::io::AsyncBufReadExt;

    let node_dir = require_browser(&["openai", "playwright-core", "oidc-provider"]);
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let portal = format!("http://{}", listener.local_addr().unwrap());
    let idp_port = free_port();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let mut idp = tokio::process::Command::new("node")
        .arg(format!("{node_dir}/oidc_provider.mjs"))
        .args([
            &idp_port.to_string(),
            "maas-portal",
            "test-client-secret",
            &format!("{portal}/sso/callback"),
            &format!("{portal}/"),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = tokio::io::BufReader::new(idp.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line()).await;
    assert!(
        matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"),
        "the OpenID provider did not start: {ready:?}"
    );

    let options = maas_portal::PortalOptions {
        public_url: portal.clone(),
        gateway_url: gw.base().to_owned(),
        sso: Some(maas_portal::sso::SsoOptions {
            display_name: "Company SSO".into(),
            issuer_url: issuer.clone(),
            client_id: "maas-portal".into(),
            client_secret: Some("test-client-secret".into()),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            account_claim: "org_name".into(),
            admin_claim: Some("groups".into()),
            admin_value: Some("maas-admins".into()),
            auto_approve: true,
            token_auth: maas_portal::sso::TokenAuth::Auto,
            organization_change: maas_portal::sso::OrganizationChange::Move,
        }),
        ..maas_portal::PortalOptions::default()
    };
    let app = maas_portal::router(gw.store.clone(), options).unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap()
    });
    let shots = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/artifacts"));
    std::fs::create_dir_all(shots).unwrap();
    let script = format!("{node_dir}/sso_flow.mjs");
    let shots = shots.to_str().unwrap();
    let report = run_json_script(
        "node",
        &[&script, &portal, shots, "alpha/open", "alpha/gated", "chat-a"],
    )
    .await;
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["ada_landed"], "/models", "{report}");
    assert_eq!(
        report["ada_header"], "Ada Lovelace · Acme Research",
        "claims mapped: {report}"
    );
    assert_eq!(
        report["statistics_total_tokens"], report["usage"]["total_tokens"],
        "{report}"
    );
    assert_eq!(report["gated_state"], "Waiting for approval", "{report}");
    assert_eq!(
        report["pending_call"]["status"], 403,
        "a pending application's key is refused: {report}"
    );
    assert!(
        report["pending_call"]["message"].as_str().unwrap().contains("approv"),
        "with the reason: {report}"
    );
    assert!(
        report["ada_admin_status"]
            .as_str()
            .unwrap()
            .starts_with("403 Not allowed"),
        "a developer gets 403 in the console: {report}"
    );
    assert_eq!(
        report["after_sign_out"], "/",
        "back from the provider's logout: {report}"
    );
    assert_eq!(report["root_landed"], "/admin", "{report}");
    assert!(
        report["approved_call_tokens"].as_u64().unwrap() > 0,
        "approved → served: {report}"
    );
    assert!(
        report["logout_page"].as_str().unwrap().contains("sign-out"),
        "signed out at the provider too: {report}"
    );

    let ada = gw
        .store
        .find_user_by_email(&["ada", "example.com"].join("@"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ada.sso.as_ref().unwrap().issuer, issuer);
    assert_eq!(ada.role, maas_store::model::UserRole::Member);
    let account = gw.store.get_account(&ada.account_id).await.unwrap().unwrap();
    assert_eq!(account.name, "Acme Research");
    let root = gw
        .store
        .find_user_by_email(&["root", "example.com"].join("@"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(root.role, maas_store::model::UserRole::Admin, "from the groups claim");
}

/// The text of the example `name` on a portal page, as a browser shows it.
fn example(html: &str, name: &str) -> String {
    let marker = format!("data-example=\"{name}\"><code>");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} example")) + marker.len();
    let end = html[start..].find("</code>").unwrap() + start;
    html[start..end]
        .replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_node_examples_on_a_product_page_run_as_shown() {
    super::harness::require_python_openai();
    let node_dir = node_dir(&["openai"]);
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let (app_id, key) = gw.app_key("examples-app", "alpha", "open").await;
    let portal = serve_portal(&gw, maas_portal::PortalOptions::default()).await;
    let html = gw
        .http
        .get(format!("{portal}/models/alpha"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("example.py");
    std::fs::write(&python, example(&html, "python")).unwrap();
    // Node resolves `openai` from the script's directory.
    let node = std::path::Path::new(node_dir).join(format!("example-{}.mjs", std::process::id()));
    std::fs::write(&node, example(&html, "node")).unwrap();
    for (program, script) in [("python3", python.as_path()), ("node", node.as_path())] {
        let output = tokio::process::Command::new(program)
            .arg(script)
            .env("MAAS_API_KEY", &key)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success() && !output.stdout.is_empty(),
            "{program} example:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let _ = std::fs::remove_file(&node);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        gw.stored(&app_id, "hits").await,
        2,
        "both examples went through the gateway"
    );
}

/// A team's workflows after day one, in headless Chromium at a desktop
/// width and a phone's (390 px): a key's last use as the gateway recorded
/// it, an invitation link, joining by it, roles, removal, a password
/// change, and the
/// confirmations before revoking and deleting; no page scrolls sideways.
/// Screenshots: target/artifacts/team-{width}-*.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_invites_joins_and_manages_itself_in_the_browser_at_desktop_and_phone_widths() {
    let node_dir = require_browser(&["openai", "playwright-core"]);
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let portal = serve_portal(&gw, maas_portal::PortalOptions::default()).await;
    let shots = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/artifacts"));
    std::fs::create_dir_all(shots).unwrap();
    let script = format!("{node_dir}/team_flow.mjs");
    let shots = shots.to_str().unwrap();
    for width in ["1280", "390"] {
        let tag = format!("w{width}");
        let report = run_json_script("node", &[&script, &portal, shots, width, &tag, "alpha/open", "chat-a"]).await;
        assert_eq!(
            report["errors"],
            serde_json::json!([]),
            "{width}: no console errors: {report}"
        );
        assert_eq!(
            report["overflow"],
            serde_json::json!([]),
            "{width}: pages that scroll sideways: {report}"
        );
        let last_used = report["last_used"].as_str().unwrap();
        assert!(
            last_used.starts_with("20") && last_used.ends_with(" UTC"),
            "{width}: the call through the gateway shows as the key's last use: {report}"
        );
        assert_eq!(report["revoke_question"], "Revoke this key?", "{report}");
        let by_key = report["hits_by_key"].as_array().unwrap();
        assert_eq!(by_key.len(), 1, "{width}: one key, nothing unattributed: {report}");
        assert_eq!(by_key[0][1], "1", "{width}: the one call: {report}");
        assert!(by_key[0][0].as_str().unwrap().starts_with("sk-maas-"), "{report}");
        assert_eq!(
            report["copied"], report["python_block"],
            "{width}: a code block copies whole"
        );
        assert!(
            report["copied"].as_str().unwrap().contains("from openai import OpenAI"),
            "{report}"
        );
        assert_eq!(report["join_heading"], format!("Join Acme {tag}"), "{report}");
        assert!(
            report["bob_sees"].as_str().unwrap().contains("Team assistant"),
            "{width}: a member sees the team's application: {report}"
        );
        assert_eq!(report["bob_can_invite"], 0, "{width}: members do not invite: {report}");
        assert_eq!(report["link_again"], true, "{width}: the link works once: {report}");
        assert_eq!(report["link_again_status"], 404, "{report}");
        assert_eq!(report["bob_role"], "owner", "{report}");
        assert_eq!(report["members_after"], 1, "{report}");
        assert_eq!(
            report["bob_signed_out"], true,
            "{width}: removed means signed out: {report}"
        );
        assert!(
            report["delete_question"]
                .as_str()
                .unwrap()
                .contains("1 working key stops working"),
            "{report}"
        );
        assert_eq!(report["apps_after"], false, "{report}");
        assert_eq!(report["sessions_listed"], 1, "{width}: {report}");
        assert!(
            report["password_notice"]
                .as_str()
                .unwrap()
                .contains("Your password is changed"),
            "{report}"
        );
        // The store agrees with the pages.
        let bob = report["bob"].as_str().unwrap();
        assert!(
            gw.store.find_user_by_email(bob).await.unwrap().is_none(),
            "{width}: Bob was removed"
        );
        let ada = gw
            .store
            .find_user_by_email(report["ada"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        let apps = gw
            .store
            .list_applications(
                &maas_store::ApplicationFilter {
                    account_id: Some(ada.account_id.clone()),
                    ..Default::default()
                },
                &maas_store::Page::default(),
            )
            .await
            .unwrap();
        assert!(apps.items.is_empty(), "{width}: the application was deleted");
        assert_eq!(ada.team_role, maas_store::model::TeamRole::Owner);
    }
}

/// Every page of the portal and the console at a desktop width and a
/// phone's: none scrolls sideways, the bar stays within two lines.
/// Screenshots: target/artifacts/pages-{width}-*.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_usable_at_desktop_and_phone_widths() {
    let node_dir = require_browser(&["playwright-core"]);
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let portal = serve_portal(&gw, maas_portal::PortalOptions::default()).await;
    let (app, key) = gw
        .app_key("A rather long application name for a phone", "alpha", "open")
        .await;
    assert_eq!(
        gw.chat(&format!("{}/alpha", gw.base()), &key, "chat-a").await.status(),
        200
    );
    let account = gw.store.get_application(&app).await.unwrap().unwrap().account_id;
    let email = ["ada.lovelace-with-a-long-address", "research.example.com"].join("@");
    let password = "correct horse battery staple";
    gw.store
        .create_user(maas_store::NewUser {
            account_id: account,
            email: email.clone(),
            display_name: "Ada Augusta King, Countess of Lovelace".into(),
            role: maas_store::model::UserRole::Admin,
            state: maas_store::model::UserState::Active,
            sso: None,
            password_hash: Some(maas_portal::accounts::hash_password(password.into()).await.unwrap()),
            email_verified: true,
        })
        .await
        .unwrap();
    let shots = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/artifacts"));
    std::fs::create_dir_all(shots).unwrap();
    let script = format!("{node_dir}/pages_flow.mjs");
    for width in ["1280", "390"] {
        let report = run_json_script(
            "node",
            &[
                &script,
                &portal,
                shots.to_str().unwrap(),
                width,
                &email,
                password,
                &app,
                "alpha",
            ],
        )
        .await;
        assert_eq!(report["errors"], serde_json::json!([]), "{width}: {report}");
        assert_eq!(report["visited"].as_array().unwrap().len(), 21, "{report}");
        assert_eq!(
            report["overflow"],
            serde_json::json!([]),
            "{width}: pages that scroll sideways: {report}"
        );
        let header = report["header_height"].as_f64().unwrap();
        assert!(header < 100.0, "{width}: the bar takes {header} px: {report}");
    }
}

/// An admin's console workflows in Chromium at a desktop width and a
/// phone's: a plan change and the traffic chart, the product editor (a
/// mistake shown by line, then a draft promoted to staging), the proxies'
/// live replicas, the audit log by who and when, and a password reset link
/// the developer uses. Screenshots: target/artifacts/console-{width}-*.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_works_through_the_console_at_desktop_and_phone_widths() {
    let node_dir = require_browser(&["playwright-core"]);
    let gw = Gateway::start(CATALOG, 1, "strict").await;
    let portal = serve_portal(&gw, maas_portal::PortalOptions::default()).await;
    let (app, key) = gw.app_key("console-walk", "alpha", "open").await;
    for _ in 0..3 {
        assert_eq!(
            gw.chat(&format!("{}/alpha", gw.base()), &key, "chat-a").await.status(),
            200
        );
    }
    let account = gw.store.get_application(&app).await.unwrap().unwrap().account_id;
    let password = "correct horse battery staple";
    let hash = maas_portal::accounts::hash_password(password.into()).await.unwrap();
    let person = |local: &str, role| maas_store::NewUser {
        account_id: account.clone(),
        email: [local, "example.com"].join("@"),
        display_name: local.to_owned(),
        role,
        state: maas_store::model::UserState::Active,
        sso: None,
        password_hash: Some(hash.clone()),
        email_verified: true,
    };
    let admin = gw
        .store
        .create_user(person("root", maas_store::model::UserRole::Admin))
        .await
        .unwrap();
    let developer = gw
        .store
        .create_user(person("dev", maas_store::model::UserRole::Member))
        .await
        .unwrap();
    // The proxy reports its replicas every few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while gw.store.proxy_reports().await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no proxy report within 15 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let shots = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/artifacts"));
    std::fs::create_dir_all(shots).unwrap();
    let script = format!("{node_dir}/console_flow.mjs");
    for (width, plan, new_password) in [
        ("1280", "gated", "violet otter lantern seventeen"),
        ("390", "open", "quartz meadow falcon ninety"),
    ] {
        let tag = format!("w{width}");
        let report = run_json_script(
            "node",
            &[
                &script,
                &portal,
                shots.to_str().unwrap(),
                width,
                &admin.email,
                password,
                &app,
                "alpha",
                plan,
                &developer.email,
                new_password,
                &tag,
            ],
        )
        .await;
        assert_eq!(report["errors"], serde_json::json!([]), "{width}: {report}");
        assert_eq!(report["overflow"], serde_json::json!([]), "{width}: {report}");
        assert_eq!(
            report["hits_total"], "3",
            "{width}: the chart counts the calls: {report}"
        );
        let stored = gw.store.get_application(&app).await.unwrap().unwrap();
        assert_eq!(stored.plan, plan, "{width}: {report}");
        assert!(
            report["plan_shown"]
                .as_str()
                .unwrap()
                .contains(&format!("alpha · {plan}")),
            "{report}"
        );
        assert!(
            report["editor_error"].as_str().unwrap().contains("products[0].backend"),
            "{width}: the mistake names its field: {report}"
        );
        let staged = gw
            .store
            .release("alpha", maas_store::Environment::Staging)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            staged.config.description,
            format!("Edited at {tag}"),
            "{width}: promoted to staging"
        );
        let produced = gw
            .store
            .release("alpha", maas_store::Environment::Production)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !produced.config.description.starts_with("Edited"),
            "production untouched"
        );
        assert!(
            report["backends"].as_str().unwrap().contains(" up "),
            "{width}: a live replica: {report}"
        );
        let audit = report["audit"].as_str().unwrap();
        assert!(
            audit.contains("root <root@example.com>") && audit.contains("change_plan application"),
            "{audit}"
        );
        assert_eq!(report["developer_signed_in"], true, "{report}");
    }
}
