//! The portal over HTTP on a real store: local accounts, applications and
//! keys, and the web security rules (CSRF, escaping, redirects, cookies,
//! sessions shared by replicas, sign-in limits).

use maas_portal::PortalOptions;
use maas_store::model::KeyHash;
use maas_store::{StoreLocation, StoreOptions};
use reqwest::StatusCode;

mod harness;

use harness::{Portal, email, seed_catalog, text};

/// Creates an application on `plan` and returns its id.
async fn create_application(browser: &mut harness::Browser, name: &str, plan: &str) -> String {
    let answer = browser
        .submit("/applications/new", "/applications", &[("name", name), ("plan", plan)])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    answer.location().trim_start_matches("/applications/").to_owned()
}

/// The key secret shown on a page, if any.
fn shown_secret(body: &str) -> Option<String> {
    let start = body.find("data-copy=\"sk-maas-")? + "data-copy=\"".len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_signs_up_creates_an_application_and_gets_a_key() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let mut browser = portal.browser();
    let home = browser.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("Sign up"), "{}", home.body);

    let signed_up = browser.sign_up("Acme", &email("ada")).await;
    assert_eq!(signed_up.location(), "/models");
    let models = browser.get("/models").await;
    let shown = text(&models.body);
    assert!(
        shown.contains("Granite 8B") && shown.contains("http://localhost:8080/granite/v1"),
        "{shown}"
    );
    assert!(shown.contains("60 hits per minute"), "{shown}");
    assert!(!shown.contains("Internal"), "unpublished plans are not offered");
    assert!(
        models.body.contains("A model for &lt;code&gt; &amp; chat"),
        "descriptions are escaped"
    );

    let id = create_application(&mut browser, "chatbot", "granite/standard").await;
    let page = browser.get(&format!("/applications/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("Live") && page.body.contains("granite-8b"),
        "{}",
        page.body
    );
    assert!(shown_secret(&page.body).is_none(), "no key yet");

    // A key: shown once, stored as a hash, usable by the proxy.
    let csrf = page.hidden("csrf");
    let issued = browser
        .post(
            &format!("/applications/{id}/keys"),
            &[("csrf", &csrf), ("label", "laptop")],
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    assert_eq!(issued.headers["cache-control"], "no-store");
    let secret = shown_secret(&issued.body).expect("the new key is shown");
    let context = portal.store.lookup_key(&KeyHash::of(&secret)).await.unwrap().unwrap();
    assert_eq!(context.application.id, id);
    let again = browser.get(&format!("/applications/{id}")).await;
    assert!(!again.body.contains(&secret), "shown only once");
    assert!(
        again.body.contains(&context.key().unwrap().masked()),
        "listed by prefix and last 4"
    );

    // The same form sent again (a reload of the page that POST answered)
    // issues no second key: it leads to the application's page.
    let form = [("csrf", csrf.as_str()), ("label", "desk"), ("keys_seen", "1")];
    let path = format!("/applications/{id}/keys");
    let first = browser.post(&path, &form).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let reloaded = browser.post(&path, &form).await;
    assert_eq!(reloaded.status, StatusCode::SEE_OTHER, "{}", reloaded.body);
    assert_eq!(reloaded.location(), format!("/applications/{id}"));
    assert_eq!(portal.store.application_keys(&id).await.unwrap().len(), 2);
    let page = browser.get(&format!("/applications/{id}")).await;
    assert_eq!(page.hidden("keys_seen"), "2", "a fresh form counts both");
    let extra = shown_secret(&first.body).unwrap();
    let extra = portal
        .store
        .lookup_key(&KeyHash::of(&extra))
        .await
        .unwrap()
        .unwrap()
        .key()
        .unwrap()
        .clone();
    let revoked = browser
        .post(&format!("/keys/{}/revoke", extra.id), &[("csrf", &csrf)])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    // A rotation sent again rotates nothing more.
    let stale_rotation = browser
        .post(
            &format!("/keys/{}/rotate", context.key().unwrap().id),
            &[("csrf", &csrf), ("grace_hours", "24"), ("keys_seen", "1")],
        )
        .await;
    assert_eq!(stale_rotation.status, StatusCode::SEE_OTHER);
    assert_eq!(portal.store.application_keys(&id).await.unwrap().len(), 2);

    // Rotation: a new key, the old one keeps working for the grace period.
    let rotated = browser
        .post(
            &format!("/keys/{}/rotate", context.key().unwrap().id),
            &[("csrf", &csrf), ("grace_hours", "24")],
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let new_secret = shown_secret(&rotated.body).unwrap();
    assert_ne!(new_secret, secret);
    let old = portal.store.get_key(&context.key().unwrap().id).await.unwrap().unwrap();
    assert!(old.expires_at.is_some() && old.is_usable_at(time::OffsetDateTime::now_utc()));
    // Revocation: refused from now on.
    let new_key = portal
        .store
        .lookup_key(&KeyHash::of(&new_secret))
        .await
        .unwrap()
        .unwrap()
        .key()
        .unwrap()
        .clone();
    // The page's Revoke asks first (a page: no script runs here) and
    // revokes nothing until confirmed.
    let page = browser.get(&format!("/applications/{id}")).await;
    let ask = format!("/keys/{}/revoke", new_key.id);
    assert!(page.body.contains(&format!("href=\"{ask}\"")), "{}", page.body);
    let confirm = browser.get(&ask).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        text(&confirm.body).contains("Revoke this key?") && confirm.body.contains(&new_key.masked()),
        "{}",
        confirm.body
    );
    assert!(
        portal
            .store
            .get_key(&new_key.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    let revoked = browser.submit(&ask, &ask, &[]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    let new_key = portal.store.get_key(&new_key.id).await.unwrap().unwrap();
    assert!(new_key.revoked_at.is_some());
    let again = browser.get(&ask).await;
    assert_eq!(
        again.status,
        StatusCode::SEE_OTHER,
        "a revoked key has nothing to confirm"
    );

    // Statistics: every period and metric renders, with a chart and a CSV.
    for period in ["24h", "7d", "30d", "12m"] {
        for metric in ["hits", "tokens", "cost"] {
            let page = browser
                .get(&format!(
                    "/applications/{id}/statistics?period={period}&metric={metric}"
                ))
                .await;
            assert_eq!(page.status, StatusCode::OK, "{period} {metric}: {}", page.body);
            assert!(page.body.contains("<svg class=\"chart\""), "{period} {metric}");
            let csv = browser
                .get(&format!(
                    "/applications/{id}/statistics.csv?period={period}&metric={metric}"
                ))
                .await;
            assert_eq!(csv.status, StatusCode::OK);
            assert!(
                csv.body.starts_with("start,") && csv.body.lines().count() > 1,
                "{}",
                csv.body
            );
        }
    }
    let bad = browser.get(&format!("/applications/{id}/statistics?period=1y")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // A plan that needs approval leaves the application pending.
    let gated = create_application(&mut browser, "gated", "granite/premium").await;
    let page = browser.get(&format!("/applications/{gated}")).await;
    assert!(page.body.contains("Waiting for approval"), "{}", page.body);
    let list = browser.get("/applications").await;
    assert!(list.body.contains("chatbot") && list.body.contains("gated"));
    // Products and plans by their display names.
    let shown = text(&list.body);
    assert!(
        shown.contains("Granite 8B") && shown.contains("Standard") && shown.contains("Premium"),
        "{shown}"
    );
    assert!(!list.body.contains("<td>granite</td>"), "{}", list.body);
    // An unpublished plan cannot be chosen.
    let refused = browser
        .submit(
            "/applications/new",
            "/applications",
            &[("name", "x"), ("plan", "granite/internal")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("published plans"), "{}", refused.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_their_csrf_token_are_refused() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let mut browser = portal.browser();
    browser.sign_up("Acme", &email("ada")).await;
    for (path, fields) in [
        ("/applications", vec![("name", "x"), ("plan", "granite/standard")]),
        ("/sign-out", vec![]),
    ] {
        let missing = browser.post(path, &fields).await;
        assert_eq!(missing.status, StatusCode::FORBIDDEN, "{path} without a token");
        assert!(missing.body.contains("This form expired"), "{}", missing.body);
        let mut wrong = vec![("csrf", "0".repeat(64))];
        wrong.extend(fields.iter().map(|(k, v)| (*k, v.to_string())));
        let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(browser.post(path, &wrong).await.status, StatusCode::FORBIDDEN, "{path}");
    }
    let apps = browser.get("/applications").await;
    assert!(!apps.body.contains("/applications/app_"), "nothing was created");
    // Before sign-in too: the double-submit cookie must match the form.
    let mut stranger = portal.browser();
    let answer = stranger
        .post(
            "/sign-in",
            &[("email", &email("ada")), ("password", "correct horse battery staple")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_text_is_rendered_inert() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let mut browser = portal.browser();
    browser.sign_up("<img src=x onerror=alert(1)>", &email("eve")).await;
    let id = create_application(&mut browser, "<script>alert(1)</script>", "granite/standard").await;
    for path in [format!("/applications/{id}"), "/applications".to_owned()] {
        let page = browser.get(&path).await;
        assert!(!page.body.contains("<script>alert(1)"), "{path}: {}", page.body);
        assert!(!page.body.contains("<img src=x"), "{path}");
        assert!(
            text(&page.body).contains("<script>alert(1)</script>"),
            "{path}: shown as text"
        );
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        assert!(csp.contains("frame-ancestors 'none'"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_rotates_the_session_and_goes_only_to_own_paths() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let mut browser = portal.browser();
    browser.sign_up("Acme", &email("ada")).await;
    let first_session = browser.cookies["maas_session"].clone();
    let flags = browser
        .set_cookie_lines
        .iter()
        .find(|l| l.starts_with("maas_session=") && !l.starts_with("maas_session=;"))
        .unwrap()
        .clone();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=28800"] {
        assert!(flags.contains(flag), "{flag} in {flags}");
    }
    assert!(!flags.contains("Secure"), "plain http: {flags}");

    // Signed out, a page sends you to sign in and back.
    let signed_out = browser.submit("/applications", "/sign-out", &[]).await;
    assert_eq!(signed_out.location(), "/");
    assert!(!browser.cookies.contains_key("maas_session"));
    let redirect = browser.get("/applications/new").await;
    assert_eq!(redirect.status, StatusCode::SEE_OTHER);
    assert_eq!(redirect.location(), "/sign-in?next=/applications/new");

    for (next, expected) in [
        ("https://evil.example", "/applications"),
        ("//evil.example", "/applications"),
        ("/models", "/models"),
    ] {
        let answer = browser
            .submit(
                "/sign-in",
                "/sign-in",
                &[
                    ("email", &email("ada")),
                    ("password", "correct horse battery staple"),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location(), expected, "next={next}");
        let session = browser.cookies["maas_session"].clone();
        assert_ne!(session, first_session, "a new session id at every sign-in");
        browser.submit("/models", "/sign-out", &[]).await;
    }
    // The first session was ended at sign-out: its cookie is worthless.
    let mut replay = portal.browser();
    replay.cookies.insert("maas_session".into(), first_session);
    assert_eq!(replay.get("/applications").await.status, StatusCode::SEE_OTHER);

    // A wrong password: 401 and the form again, never a session.
    let wrong = browser
        .submit(
            "/sign-in",
            "/sign-in",
            &[("email", &email("ada")), ("password", "wrong password")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("do not match"));
    assert!(!browser.cookies.contains_key("maas_session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_limited() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let mut browser = portal.browser();
    browser.sign_up("Acme", &email("ada")).await;
    browser.submit("/models", "/sign-out", &[]).await;
    for attempt in 0..10 {
        let answer = browser
            .submit(
                "/sign-in",
                "/sign-in",
                &[("email", &email("ada")), ("password", "guess {attempt}")],
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let blocked = browser
        .submit(
            "/sign-in",
            "/sign-in",
            &[("email", &email("ada")), ("password", "correct horse battery staple")],
        )
        .await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = blocked.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    assert!(blocked.body.contains("Too many failed sign-ins"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_applications_do_not_exist_for_you() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let mut ada = portal.browser();
    ada.sign_up("Acme", &email("ada")).await;
    let id = create_application(&mut ada, "private", "granite/standard").await;
    let page = ada.get(&format!("/applications/{id}")).await;
    let csrf = page.hidden("csrf");
    let issued = ada.post(&format!("/applications/{id}/keys"), &[("csrf", &csrf)]).await;
    let secret = shown_secret(&issued.body).unwrap();
    let key = portal
        .store
        .lookup_key(&KeyHash::of(&secret))
        .await
        .unwrap()
        .unwrap()
        .key()
        .unwrap()
        .clone();

    let mut eve = portal.browser();
    eve.sign_up("Evil Corp", &email("eve")).await;
    assert_eq!(
        eve.get(&format!("/applications/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    let eve_csrf = eve.get("/applications").await.hidden("csrf");
    for path in [
        format!("/keys/{}/revoke", key.id),
        format!("/keys/{}/rotate", key.id),
        format!("/applications/{id}/keys"),
        format!("/applications/{id}/delete"),
    ] {
        assert!(!eve.get(&path).await.status.is_success(), "{path}");
        let answer = eve.post(&path, &[("csrf", &eve_csrf)]).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(answer.body.contains("No such"), "an error page: {}", answer.body);
    }
    let key = portal.store.get_key(&key.id).await.unwrap().unwrap();
    assert!(key.revoked_at.is_none() && key.expires_at.is_none(), "untouched");
    assert_eq!(portal.store.application_keys(&id).await.unwrap().len(), 1);
    assert!(
        portal.store.get_application(&id).await.unwrap().is_some(),
        "not deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_sessions_through_redis() {
    let url = std::env::var("MAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!(
        "maastest-portal-{}",
        maas_store::ids::hex(&maas_store::ids::random_bytes::<6>())
    );
    let location = StoreLocation::Redis {
        url,
        prefix,
        tls: Default::default(),
    };
    let open = || async {
        Store::open(&location, StoreOptions::default())
            .await
            .expect("Redis must run on MAAS_TEST_REDIS_URL (default 127.0.0.1:6379): apt install redis-server")
    };
    let first = open().await;
    seed_catalog(&first).await;
    let a = Portal::start(first, PortalOptions::default(), None).await;
    let b = Portal::start(open().await, PortalOptions::default(), None).await;
    let mut on_a = a.browser();
    on_a.sign_up("Acme", &email("ada")).await;
    let mut on_b = b.browser();
    on_b.cookies = on_a.cookies.clone();
    let page = on_b.get("/applications").await;
    assert_eq!(page.status, StatusCode::OK, "replica B knows replica A's session");
    assert!(page.body.contains("Acme"));
    // Signing out on B ends the session on A too.
    on_b.submit("/applications", "/sign-out", &[]).await;
    assert_eq!(on_a.get("/applications").await.status, StatusCode::SEE_OTHER);
}

use maas_store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_brand_override_templates_and_switch_local_accounts_off() {
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("home.html"),
        "{% extends \"base.html\" %}{% block content %}<h1>Welcome to {{ brand.name }}</h1>{% endblock %}",
    )
    .unwrap();
    let options = PortalOptions {
        templates_dir: Some(templates.path().to_owned()),
        local_accounts: false,
        secure_cookies: true,
        brand: maas_portal::Brand {
            name: "MaaS on OpenShift AI".into(),
            primary_color: "#ee0000".into(),
            ..maas_portal::Brand::default()
        },
        ..PortalOptions::default()
    };
    let portal = Portal::embedded(options.clone()).await;
    let mut browser = portal.browser();
    let home = browser.get("/").await;
    assert!(
        home.body.contains("<h1>Welcome to MaaS on OpenShift AI</h1>"),
        "{}",
        home.body
    );
    assert!(
        !home.body.contains("/sign-up"),
        "no sign-up link without local accounts"
    );
    assert!(
        browser.set_cookie_lines.iter().all(|l| l.contains("; Secure")),
        "{:?}",
        browser.set_cookie_lines
    );
    let css = browser.get("/assets/brand.css").await;
    assert!(css.body.contains("--brand: #ee0000"));
    assert_eq!(browser.get("/sign-up").await.status, StatusCode::NOT_FOUND);
    let missing = browser.get("/no/such/page").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("No such page.") && missing.headers.contains_key("content-security-policy"));

    // A broken override stops the start, naming file and line.
    std::fs::write(templates.path().join("models.html"), "line one\n{% for x in %}\n").unwrap();
    let error = match maas_portal::router(portal.store.clone(), options) {
        Ok(_) => panic!("a broken template was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("models.html:2:"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_callbacks_must_match_a_sign_in_started_here() {
    let options = PortalOptions {
        sso: Some(maas_portal::sso::SsoOptions {
            display_name: "Company SSO".into(),
            // Nothing listens here: discovery fails.
            issuer_url: "http://127.0.0.1:9/realms/maas".into(),
            client_id: "maas-portal".into(),
            client_secret: Some("secret".into()),
            scopes: vec!["openid".into()],
            account_claim: "org_name".into(),
            admin_claim: None,
            admin_value: None,
            auto_approve: true,
            token_auth: maas_portal::sso::TokenAuth::Auto,
            organization_change: maas_portal::sso::OrganizationChange::Move,
        }),
        ..PortalOptions::default()
    };
    let portal = Portal::embedded(options).await;
    let mut browser = portal.browser();
    let page = browser.get("/sign-in?next=/models").await;
    assert!(text(&page.body).contains("/sso/login?next=/models"), "{}", page.body);
    assert!(page.body.contains("Sign in with Company SSO"));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.ends_with("form-action 'self' http://127.0.0.1:9"), "{csp}");

    let down = browser.get("/sso/login").await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    assert!(down.body.contains("could not be reached"), "{}", down.body);

    // No sign-in started: refused.
    let stray = browser.get("/sso/callback?code=x&state=y").await;
    assert_eq!(stray.status, StatusCode::FORBIDDEN);
    // A started sign-in, answered with another state: refused, and used up.
    let mut record = maas_store::SessionRecord {
        user_id: None,
        created_at: time::OffsetDateTime::now_utc(),
        data: serde_json::Map::new(),
        user_epoch: 0,
    };
    record.data.insert("state".into(), serde_json::json!("expected-state"));
    let flow = "f".repeat(64);
    portal
        .store
        .put_session(&flow, &record, time::Duration::minutes(10))
        .await
        .unwrap();
    browser.cookies.insert("maas_sso".into(), flow.clone());
    let forged = browser.get("/sso/callback?code=x&state=forged").await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.body.contains("does not match"), "{}", forged.body);
    browser.cookies.insert("maas_sso".into(), flow.clone());
    let replay = browser.get("/sso/callback?code=x&state=expected-state").await;
    assert_eq!(replay.status, StatusCode::FORBIDDEN, "one use only");
    assert!(replay.body.contains("expired or was already used"), "{}", replay.body);
    assert!(!browser.cookies.contains_key("maas_session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_pages_carry_examples_and_an_api_reference() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let mut browser = portal.browser();
    let page = browser.get("/models/granite").await;
    assert_eq!(page.status, StatusCode::OK);
    let shown = text(&page.body);
    for example in ["curl", "python", "langchain", "node", "continue", "k6"] {
        assert!(shown.contains(&format!("data-example=\"{example}\"")), "{example}");
    }
    assert!(
        shown.contains("base_url=\"http://localhost:8080/granite/v1\""),
        "{shown}"
    );
    assert!(shown.contains("model=\"granite-8b\""));
    assert!(
        shown.contains("apiKey: ${{ secrets.MAAS_API_KEY }}"),
        "Continue's secret syntax"
    );
    assert!(
        shown
            .match_indices("sk-maas-")
            .all(|(i, _)| shown[i + 8..].starts_with('…')),
        "no key on the page, only the placeholder"
    );

    let document: serde_json::Value =
        serde_json::from_str(&browser.get("/models/granite/openapi.json").await.body).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["servers"][0]["url"], "http://localhost:8080/granite/v1");
    let model = &document["paths"]["/chat/completions"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(
        model["schema"]["properties"]["model"]["enum"],
        serde_json::json!(["granite-8b"])
    );
    assert_eq!(model["example"]["model"], "granite-8b");
    // Every endpoint the product serves (the OpenAI-compatible set here).
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    assert_eq!(
        paths,
        [
            "/chat/completions",
            "/completions",
            "/embeddings",
            "/models",
            "/responses"
        ],
        "{document}"
    );
    let responses = &document["paths"]["/responses"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(
        responses["schema"]["properties"]["model"]["enum"],
        serde_json::json!(["granite-8b"])
    );

    // The product page: each plan's answer cap, as the models list shows
    // it, and a copy button for every code block.
    let product_page = browser.get("/models/granite").await;
    assert!(
        text(&product_page.body).contains("at most 512 tokens per answer"),
        "{}",
        product_page.body
    );
    let blocks = product_page.body.matches("<pre class=\"example\"").count();
    assert!(blocks >= 6, "{}", product_page.body);
    for from in product_page.body.match_indices("data-copy-from=\"") {
        let id = &product_page.body[from.0 + 16..];
        let id = &id[..id.find('"').unwrap()];
        assert!(
            product_page.body.contains(&format!("id=\"{id}\"")),
            "{id} has its block"
        );
    }
    assert_eq!(product_page.body.matches("data-copy-from=").count(), blocks);

    let viewer = browser.get("/models/granite/api").await;
    assert_eq!(viewer.status, StatusCode::OK);
    let csp = viewer.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("connect-src 'self' http://localhost:8080"),
        "try-it reaches the gateway: {csp}"
    );
    assert!(csp.contains("script-src 'self';"), "still no inline script: {csp}");
    assert!(!viewer.body.contains("<script>"));
    assert!(text(&viewer.body).contains("data-spec=\"/models/granite/openapi.json\""));
    for asset in [
        "/assets/api-viewer/swagger-ui-bundle.js",
        "/assets/api-viewer/swagger-ui.css",
        "/assets/api-viewer.js",
    ] {
        assert_eq!(browser.get(asset).await.status, StatusCode::OK, "{asset}");
    }
    assert_eq!(browser.get("/models/nope").await.status, StatusCode::NOT_FOUND);
    // Other pages keep the strict policy.
    let csp = browser.get("/models").await.headers["content-security-policy"].clone();
    assert!(!csp.to_str().unwrap().contains("unsafe-inline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_page_lists_members_and_renames_the_organization() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let mut browser = portal.browser();
    browser.sign_up("Acme", &email("ada")).await;
    let page = browser.get("/account").await;
    assert!(
        text(&page.body).contains(&email("ada")) && page.body.contains("(you)"),
        "{}",
        page.body
    );
    let renamed = browser
        .submit(
            "/account",
            "/account",
            &[("name", "Acme Research"), ("description", "LLM apps")],
        )
        .await;
    assert_eq!(renamed.status, StatusCode::SEE_OTHER);
    assert!(browser.get("/applications").await.body.contains("Acme Research"));
    let refused = browser.post("/account", &[("name", "Evil")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "CSRF checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_for_kubernetes() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let mut probe = portal.browser();
    let live = probe.get("/healthz").await;
    assert_eq!((live.status, live.body.as_str()), (StatusCode::OK, "ok\n"));
    let ready = probe.get("/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (StatusCode::OK, "ready\n"));
}

/// The `value` of every radio button of `body` that is checked.
fn checked_radios(body: &str) -> Vec<String> {
    body.split("<input type=\"radio\"")
        .skip(1)
        .filter_map(|input| {
            let tag = &input[..input.find('>')?];
            let value = tag.split("value=\"").nth(1)?.split('"').next()?;
            tag.contains(" checked").then(|| value.replace("&#x2f;", "/"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_application_starts_on_one_plan_of_the_model_it_came_from() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let store = &portal.store;
    let product = serde_json::json!({"system_name": "llama", "name": "Llama 8B", "path_prefix": "/llama",
        "models": ["llama-8b"], "backend": "vllm"});
    store
        .put_product(serde_json::from_value(product).unwrap())
        .await
        .unwrap();
    for plan in [
        serde_json::json!({"product": "llama", "system_name": "free", "name": "Free", "published": true}),
        serde_json::json!({"product": "llama", "system_name": "pro", "name": "Pro", "published": true, "default": true}),
    ] {
        store.put_plan(serde_json::from_value(plan).unwrap()).await.unwrap();
    }
    store.promote("llama", maas_store::Environment::Staging).await.unwrap();
    store
        .promote("llama", maas_store::Environment::Production)
        .await
        .unwrap();
    let mut browser = portal.browser();
    browser.sign_up("Acme", &email("ada")).await;

    // Both the model's page and the models list link to a form for that model.
    for page in ["/models/llama", "/models"] {
        let body = browser.get(page).await.body;
        assert!(
            body.contains("href=\"/applications/new?product=llama\""),
            "{page}: {body}"
        );
    }
    let form = browser.get("/applications/new?product=llama").await;
    assert_eq!(
        checked_radios(&form.body),
        ["llama/pro"],
        "the model's default plan, alone"
    );
    let form = browser.get("/applications/new?product=granite").await;
    assert_eq!(checked_radios(&form.body), ["granite/standard"]);
    // Without a product, or with one not offered: still exactly one.
    for path in [
        "/applications/new",
        "/applications/new?product=nope",
        "/applications/new?product=%ZZ",
    ] {
        let form = browser.get(path).await;
        assert_eq!(form.status, StatusCode::OK, "{path}");
        assert_eq!(checked_radios(&form.body).len(), 1, "{path}: {}", form.body);
    }
    // A refused form keeps what was chosen.
    let refused = browser
        .submit(
            "/applications/new?product=llama",
            "/applications",
            &[("name", ""), ("plan", "llama/free")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert_eq!(checked_radios(&refused.body), ["llama/free"]);
}

/// The keys table says when each key was last used (what the proxies
/// record by the minute), and deleting an application asks first, then
/// takes its keys with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_show_their_last_use_and_deleting_an_application_asks_first() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let mut browser = portal.browser();
    browser.sign_up("Acme", &email("ada")).await;
    let id = create_application(&mut browser, "chatbot", "granite/standard").await;
    let page = browser.get(&format!("/applications/{id}")).await;
    let csrf = page.hidden("csrf");
    let issued = browser
        .post(&format!("/applications/{id}/keys"), &[("csrf", &csrf)])
        .await;
    let secret = shown_secret(&issued.body).unwrap();
    let key = portal
        .store
        .lookup_key(&KeyHash::of(&secret))
        .await
        .unwrap()
        .unwrap()
        .key()
        .unwrap()
        .clone();
    let row = |body: &str| {
        let at = body.find(&key.masked()).expect("the key is listed");
        text(&body[at..body[at..].find("</tr>").unwrap() + at])
    };
    let page = browser.get(&format!("/applications/{id}")).await;
    assert!(text(&page.body).contains("Last used"), "{}", page.body);
    let never = "<td><small>never</small></td>";
    assert_eq!(
        row(&page.body).matches(never).count(),
        2,
        "never used, never expires: {}",
        row(&page.body)
    );

    // 2026-11-26 11:30:42 UTC, as a proxy records it: by the minute.
    portal
        .store
        .record_key_uses(&[(key.id.clone(), 1_795_692_642)])
        .await
        .unwrap();
    let page = browser.get(&format!("/applications/{id}")).await;
    let used = row(&page.body);
    assert!(used.contains("<td><small>2026-11-26 11:30 UTC</small></td>"), "{used}");
    assert_eq!(used.matches(never).count(), 1, "{used}");

    let ask = format!("/applications/{id}/delete");
    assert!(page.body.contains(&format!("href=\"{ask}\"")), "{}", page.body);
    let confirm = browser.get(&ask).await;
    assert_eq!(confirm.status, StatusCode::OK);
    let shown = text(&confirm.body);
    assert!(
        shown.contains("Delete chatbot?") && shown.contains("1 working key stops working"),
        "{shown}"
    );
    assert!(
        portal.store.get_application(&id).await.unwrap().is_some(),
        "asking deletes nothing"
    );
    let deleted = browser.submit(&ask, &ask, &[]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert_eq!(deleted.location(), "/applications");
    assert!(portal.store.get_application(&id).await.unwrap().is_none());
    assert!(
        portal.store.lookup_key(&KeyHash::of(&secret)).await.unwrap().is_none(),
        "its key is gone"
    );
    assert!(!browser.get("/applications").await.body.contains("chatbot"));
    assert_eq!(
        browser.get(&ask).await.status,
        StatusCode::NOT_FOUND,
        "nothing left to confirm"
    );
    let audit = portal
        .store
        .audit_log(&maas_store::AuditQuery {
            entity_id: Some(id.clone()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        audit.iter().any(|e| e.action == "delete" && e.actor.kind == "user"),
        "the deletion is audited as the developer's: {audit:?}"
    );
}

/// A token application's traffic breaks down by the people who called as
/// it (their tokens' subjects), where a key application's shows keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_of_a_token_application_break_down_by_person() {
    use maas_store::{Breakdown, UsageRecord};

    let portal = Portal::embedded(PortalOptions::default()).await;
    let store = portal.store.clone();
    let mut browser = portal.browser();
    browser.sign_up("Acme", &email("ada")).await;
    let user = store.find_user_by_email(&email("ada")).await.unwrap().unwrap();
    let account = store.get_account(&user.account_id).await.unwrap().unwrap();
    let app = store
        .application_for_token_client(&account, "granite", "notebook", "standard")
        .await
        .unwrap();
    for subject in ["sub-grace", "sub-ada"] {
        store.note_token_user(&app.id, subject).await.unwrap();
    }
    let now = time::OffsetDateTime::now_utc();
    let records = vec![
        UsageRecord::new(&app.id, "hits", 9, now),
        UsageRecord::new(&app.id, &Breakdown::User("sub-ada").metric("hits"), 5, now),
        UsageRecord::new(&app.id, &Breakdown::User("sub-grace").metric("hits"), 3, now),
    ];
    store.record_usage_once("test", 1, &records).await.unwrap();
    let page = browser
        .get(&format!(
            "/applications/{}/statistics.csv?period=24h&metric=hits&by=key",
            app.id
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let header = page.body.lines().next().unwrap();
    assert_eq!(header, "start,sub-ada,sub-grace,Not attributed,total", "{}", page.body);
    let html = browser
        .get(&format!(
            "/applications/{}/statistics?period=24h&metric=hits&by=key",
            app.id
        ))
        .await;
    assert!(text(&html.body).contains("by person"), "{}", html.body);
}

/// Statistics break hits, tokens and cost down by key and by model as
/// well as by method, cost in the plan's currency, and the CSV says the
/// same; what no key or model accounts for shows as "Not attributed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_break_traffic_down_by_key_and_by_model() {
    use maas_store::{Breakdown, UsageRecord};

    let portal = Portal::embedded(PortalOptions::default()).await;
    let store = portal.store.clone();
    let mut plan = store.get_plan("granite", "standard").await.unwrap().unwrap();
    plan.currency = "EUR".into();
    plan.price_per_1k_prompt_tokens = serde_json::from_value(serde_json::json!("0.5")).unwrap();
    plan.price_per_1k_completion_tokens = serde_json::from_value(serde_json::json!("2")).unwrap();
    store.put_plan(plan).await.unwrap();
    let mut browser = portal.browser();
    browser.sign_up("Acme", &email("ada")).await;
    let id = create_application(&mut browser, "chatbot", "granite/standard").await;
    let laptop = store
        .create_key(
            &id,
            maas_store::NewKey {
                label: "laptop".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .key;
    let ci = store.create_key(&id, maas_store::NewKey::default()).await.unwrap().key;
    let now = time::OffsetDateTime::now_utc();
    let mut records = Vec::new();
    let mut add = |metric: String, value: u64| records.push(UsageRecord::new(&id, &metric, value, now));
    for (metric, total, on_laptop, on_ci) in [
        ("hits", 10, 6, 3),
        ("prompt_tokens", 1000, 600, 300),
        ("completion_tokens", 500, 300, 150),
    ] {
        add(metric.to_owned(), total);
        add(Breakdown::Key(&laptop.id).metric(metric), on_laptop);
        add(Breakdown::Key(&ci.id).metric(metric), on_ci);
        add(Breakdown::Model("granite-8b").metric(metric), on_laptop + on_ci);
    }
    store.record_usage_once("test", 1, &records).await.unwrap();

    let rows = |body: &str| -> Vec<(String, String)> {
        body.split("<tr>")
            .skip(2)
            .filter_map(|row| {
                let cells: Vec<&str> = row.split("<td").skip(2).collect();
                let name = cells.first()?.split('>').nth(1)?.split('<').next()?.to_owned();
                let total = cells.get(1)?.split('>').nth(1)?.split('<').next()?.to_owned();
                Some((text(&name), total))
            })
            .collect()
    };
    let page = |by: &str, metric: &str| format!("/applications/{id}/statistics?period=24h&metric={metric}&by={by}");
    let by_key = browser.get(&page("key", "hits")).await;
    assert_eq!(by_key.status, StatusCode::OK);
    let laptop_name = format!("laptop ({})", laptop.masked());
    assert_eq!(
        rows(&by_key.body),
        vec![
            (laptop_name.clone(), "6".into()),
            (ci.masked(), "3".into()),
            ("Not attributed".into(), "1".into())
        ],
        "{}",
        by_key.body
    );
    let by_model = browser.get(&page("model", "tokens")).await;
    assert_eq!(
        rows(&by_model.body),
        vec![
            ("granite-8b".into(), "1350".into()),
            ("Not attributed".into(), "150".into())
        ]
    );
    // Cost at the plan's prices, in its currency: 0.5 and 2 EUR per 1k.
    let cost = browser.get(&page("key", "cost")).await;
    let shown = text(&cost.body);
    assert!(shown.contains("amounts in EUR"), "{shown}");
    assert_eq!(
        rows(&cost.body)[0],
        (laptop_name.clone(), "EUR 0.9".into()),
        "0.3 + 0.6"
    );
    let csv = browser
        .get(&format!(
            "/applications/{id}/statistics.csv?period=24h&metric=cost&by=key"
        ))
        .await;
    let header = csv.body.lines().next().unwrap();
    assert_eq!(
        header,
        format!(
            "start,laptop ({}) (EUR),{} (EUR),Not attributed (EUR),total (EUR)",
            laptop.masked(),
            ci.masked()
        )
    );
    let totals = csv.body.lines().skip(1).fold([0.0f64; 4], |mut sum, line| {
        for (s, cell) in sum.iter_mut().zip(line.split(',').skip(1)) {
            *s += cell.parse::<f64>().unwrap();
        }
        sum
    });
    assert_eq!(
        totals.map(|t| (t * 1000.0).round() / 1000.0),
        [0.9, 0.45, 0.15, 1.5],
        "{}",
        csv.body
    );
    assert_eq!(
        browser.get(&page("team", "hits")).await.status,
        StatusCode::BAD_REQUEST,
        "an unknown breakdown"
    );

    // Once the plan prices its model apart, cost is the spend counted at
    // each request's prices (tokens alone cannot say which price was paid).
    let mut plan = store.get_plan("granite", "standard").await.unwrap().unwrap();
    plan.model_prices = serde_json::from_value(serde_json::json!({
        "granite-8b": {"price_per_1k_prompt_tokens": 5, "price_per_1k_completion_tokens": 20}
    }))
    .unwrap();
    store.put_plan(plan).await.unwrap();
    let spend = [
        UsageRecord::new(&id, "spend", 9_000_000_000, now),
        UsageRecord::new(&id, &Breakdown::Key(&laptop.id).metric("spend"), 6_000_000_000, now),
        UsageRecord::new(&id, &Breakdown::Model("granite-8b").metric("spend"), 7_500_000_000, now),
    ];
    store.record_usage_once("test", 2, &spend).await.unwrap();
    let by_kind = browser.get(&page("kind", "cost")).await;
    assert!(
        text(&by_kind.body).contains("EUR 9"),
        "the application's spend: {}",
        by_kind.body
    );
    assert_eq!(
        rows(&browser.get(&page("key", "cost")).await.body)[0],
        (laptop_name.clone(), "EUR 6".into()),
        "the key's spend"
    );
    assert_eq!(
        rows(&browser.get(&page("model", "cost")).await.body),
        vec![
            ("granite-8b".into(), "EUR 7.5".into()),
            ("Not attributed".into(), "EUR 1.5".into())
        ],
        "the model's spend, and what no model accounts for"
    );
}
