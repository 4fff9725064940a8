//! The admin console over HTTP on a real store: only admins get in; they
//! approve applications, manage users, promote and roll back products, and
//! every change is in the audit log under their name.

use maas_portal::PortalOptions;
use maas_store::model::ApplicationState;
use maas_store::{AuditQuery, Environment};
use reqwest::StatusCode;

mod harness;

use harness::{Portal, email, text};

const PAGES: [&str; 5] = [
    "/admin",
    "/admin/applications",
    "/admin/accounts",
    "/admin/products",
    "/admin/audit",
];

fn options() -> PortalOptions {
    PortalOptions {
        admin_emails: vec![email("root")],
        ..PortalOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_get_into_the_console() {
    let portal = Portal::embedded(options()).await;
    let mut stranger = portal.browser();
    for page in PAGES {
        let answer = stranger.get(page).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{page}");
        assert!(answer.location().starts_with("/sign-in?next=/admin"), "{page}");
    }
    let mut member = portal.browser();
    member.sign_up("Acme", &email("ada")).await;
    let developer_page = member.get("/applications").await;
    assert!(
        !developer_page.body.contains("href=\"/admin\""),
        "no admin link for members"
    );
    let csrf = developer_page.hidden("csrf");
    for page in PAGES {
        let answer = member.get(page).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{page}");
        assert!(answer.body.contains("for administrators"), "{page}: an error page");
    }
    let user = portal.store.find_user_by_email(&email("ada")).await.unwrap().unwrap();
    for action in [
        "/admin/applications/app_x/approve".to_owned(),
        "/admin/keys/key_x/revoke".to_owned(),
        format!("/admin/users/{}/make-admin", user.id),
        "/admin/products/granite/promote".to_owned(),
        "/admin/products/granite/rollback".to_owned(),
        "/admin/applications/app_x/plan".to_owned(),
    ] {
        let answer = member
            .post(
                &action,
                &[("csrf", &csrf), ("environment", "production"), ("version", "1")],
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{action}");
    }
    let user = portal.store.get_user(&user.id).await.unwrap().unwrap();
    assert_eq!(user.role, maas_store::model::UserRole::Member, "nothing changed");

    let mut admin = portal.browser();
    admin.sign_up("Operators", &email("root")).await;
    for page in PAGES {
        let answer = admin.get(page).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{page}: admin_emails do not make a local sign-up an admin"
        );
    }
    portal.make_admin(&email("root")).await;
    for page in PAGES {
        let answer = admin.get(page).await;
        assert_eq!(answer.status, StatusCode::OK, "{page}: {}", answer.body);
    }
    assert!(admin.get("/models").await.body.contains("href=\"/admin\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_approves_suspends_and_manages_users() {
    let portal = Portal::embedded(options()).await;
    let mut developer = portal.browser();
    developer.sign_up("Acme", &email("ada")).await;
    let created = developer
        .submit(
            "/applications/new",
            "/applications",
            &[("name", "gated app"), ("plan", "granite/premium")],
        )
        .await;
    let id = created.location().trim_start_matches("/applications/").to_owned();
    let app = portal.store.get_application(&id).await.unwrap().unwrap();
    assert_eq!(app.state, ApplicationState::Pending);

    let mut admin = portal.browser();
    admin.sign_up("Operators", &email("root")).await;
    portal.make_admin(&email("root")).await;
    let overview = admin.get("/admin").await;
    assert!(
        overview.body.contains("gated app"),
        "pending on the overview: {}",
        overview.body
    );
    let pending = admin.get("/admin/applications?state=pending").await;
    assert!(pending.body.contains("gated app") && pending.body.contains("Acme"));
    let csrf = pending.hidden("csrf");
    let version = pending.hidden("version");
    let approved = admin
        .post(
            &format!("/admin/applications/{id}/approve"),
            &[("csrf", &csrf), ("version", &version)],
        )
        .await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    let app = portal.store.get_application(&id).await.unwrap().unwrap();
    assert_eq!(app.state, ApplicationState::Live);
    let fresh = |page: &harness::Answer| page.hidden("version");
    let version = fresh(&admin.get(&format!("/admin/applications/{id}")).await);
    let again = admin
        .post(
            &format!("/admin/applications/{id}/approve"),
            &[("csrf", &csrf), ("version", &version)],
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::SEE_OTHER,
        "approving a live application changes nothing, as in the admin API"
    );
    assert_eq!(portal.store.get_application(&id).await.unwrap().unwrap(), app);
    let page = developer.get(&format!("/applications/{id}")).await;
    assert!(page.body.contains("Live"), "the developer sees it live");

    admin
        .post(
            &format!("/admin/applications/{id}/suspend"),
            &[("csrf", &csrf), ("version", &version)],
        )
        .await;
    let app = portal.store.get_application(&id).await.unwrap().unwrap();
    assert_eq!(app.state, ApplicationState::Suspended);
    let version = fresh(&admin.get(&format!("/admin/applications/{id}")).await);
    let refused = admin
        .post(
            &format!("/admin/applications/{id}/approve"),
            &[("csrf", &csrf), ("version", &version)],
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::CONFLICT,
        "a suspended application is resumed, not approved"
    );

    // The application's page: its keys, revocable by the admin.
    let issued = portal.store.create_key(&id, Default::default()).await.unwrap();
    let detail = admin.get(&format!("/admin/applications/{id}")).await;
    assert!(detail.body.contains(&issued.key.masked()), "{}", detail.body);
    assert!(!detail.body.contains(issued.secret.expose()), "never the secret");
    let revoked = admin
        .post(&format!("/admin/keys/{}/revoke", issued.key.id), &[("csrf", &csrf)])
        .await;
    assert_eq!(revoked.location(), format!("/admin/applications/{id}"));
    let key = portal.store.get_key(&issued.key.id).await.unwrap().unwrap();
    assert!(key.revoked_at.is_some());

    // The audit log names the admin and where they were.
    let root = portal.store.find_user_by_email(&email("root")).await.unwrap().unwrap();
    let entries = portal
        .store
        .audit_log(&AuditQuery {
            entity: Some("application".into()),
            entity_id: Some(id.clone()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(entries[0].actor.id, root.id);
    assert_eq!(entries[0].actor.kind, "user");
    assert_eq!(entries[0].actor.ip.as_deref(), Some("127.0.0.1"));
    // The console names who by name and email, and filters by who, what and when.
    let audit = admin.get("/admin/audit?entity=application").await;
    let shown = text(&audit.body);
    assert!(shown.contains(&format!("Ada <{}>", email("root"))), "{shown}");
    assert!(!shown.contains(&format!("user {}", root.id)), "names, not ids: {shown}");
    let rows = |body: &str| body.matches("<tr><td><small>").count();
    let by_root = admin.get(&format!("/admin/audit?actor={}", email("root"))).await;
    let by_ada = admin.get(&format!("/admin/audit?actor={}", email("ada"))).await;
    let by_nobody = admin.get(&format!("/admin/audit?actor={}", email("nobody"))).await;
    assert!(rows(&by_root.body) > 0 && rows(&by_ada.body) > 0, "{}", by_ada.body);
    assert!(
        !text(&by_root.body).contains(&format!("Ada <{}>", email("ada"))),
        "only root's"
    );
    assert_eq!(rows(&by_nobody.body), 0, "an unknown email matches nothing");
    let by_object = admin.get(&format!("/admin/audit?entity_id={id}")).await;
    assert_eq!(rows(&by_object.body), entries.len().min(100), "{}", by_object.body);
    let today = time::OffsetDateTime::now_utc().date();
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let (today, yesterday) = (
        today.format(&format).unwrap(),
        today.previous_day().unwrap().format(&format).unwrap(),
    );
    let dated = admin
        .get(&format!("/admin/audit?entity_id={id}&from={today}&to={today}"))
        .await;
    assert_eq!(rows(&dated.body), rows(&by_object.body));
    let before = admin.get(&format!("/admin/audit?entity_id={id}&to={yesterday}")).await;
    assert_eq!(rows(&before.body), 0, "nothing before today");
    assert_eq!(
        admin.get("/admin/audit?from=26/11/2026").await.status,
        StatusCode::BAD_REQUEST
    );

    // Users: disable the developer, who is then signed out everywhere.
    let ada = portal.store.find_user_by_email(&email("ada")).await.unwrap().unwrap();
    admin
        .post(&format!("/admin/users/{}/disable", ada.id), &[("csrf", &csrf)])
        .await;
    assert_eq!(developer.get("/applications").await.status, StatusCode::SEE_OTHER);
    let own = admin
        .post(&format!("/admin/users/{}/disable", root.id), &[("csrf", &csrf)])
        .await;
    assert_eq!(own.status, StatusCode::BAD_REQUEST, "no locking yourself out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_promotes_with_a_diff_and_rolls_back() {
    let portal = Portal::embedded(options()).await;
    let mut admin = portal.browser();
    admin.sign_up("Operators", &email("root")).await;
    portal.make_admin(&email("root")).await;
    let page = admin.get("/admin/products").await;
    assert!(page.body.contains("Staging serves the draft."), "{}", page.body);
    let shown = text(&page.body);
    assert!(
        shown.contains("v1-chat-completions, v1-completions"),
        "methods in force: {shown}"
    );
    assert!(
        shown.contains("<code>/v1/chat/completions</code>"),
        "mapping rules: {shown}"
    );
    assert!(
        shown.contains(
            "<tr class=\"\"><th>Stream usage</th><td>continuous</td><td>continuous</td><td>continuous</td></tr>"
        ),
        "policies, in each environment: {shown}"
    );
    let backends = admin.get("/admin/backends").await;
    assert!(text(&backends.body).contains("http://127.0.0.1:9"), "{}", backends.body);

    let mut draft = portal.store.get_product("granite").await.unwrap().unwrap();
    draft.description = "Now with tools".into();
    draft.models.push("granite-8b-tools".into());
    portal.store.put_product(draft).await.unwrap();
    let page = admin.get("/admin/products").await;
    let shown = text(&page.body);
    // Plainly which value is the draft's, staging's and production's.
    assert!(
        shown.contains(
            "<tr class=\"differs\"><th>Models</th><td>granite-8b, granite-8b-tools</td><td>granite-8b</td><td>granite-8b</td></tr>"
        ),
        "{shown}"
    );
    assert!(shown.contains("Staging <small>(version 1)</small>"), "{shown}");
    assert!(
        shown.contains("<code>description</code>") && shown.contains("Now with tools"),
        "{shown}"
    );
    let csrf = page.hidden("csrf");

    for environment in ["staging", "production"] {
        let answer = admin
            .post(
                "/admin/products/granite/promote",
                &[("csrf", &csrf), ("environment", environment)],
            )
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    }
    let served = |env| {
        let store = portal.store.clone();
        async move { store.release("granite", env).await.unwrap().unwrap() }
    };
    assert_eq!(
        served(Environment::Production).await.config.description,
        "Now with tools"
    );
    let developer_view = admin.get("/models").await;
    assert!(
        developer_view.body.contains("Now with tools"),
        "developers see production"
    );

    let answer = admin
        .post(
            "/admin/products/granite/rollback",
            &[("csrf", &csrf), ("environment", "production"), ("version", "1")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let production = served(Environment::Production).await;
    assert_eq!(production.version, 1);
    assert_ne!(production.config.description, "Now with tools");
    assert_eq!(
        served(Environment::Staging).await.version,
        2,
        "staging keeps the new version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_page_shows_what_each_proxy_reported() {
    use maas_store::{BackendReport, ProxyReport, ReplicaLoadReport, ReplicaReport};
    let portal = Portal::embedded(options()).await;
    let mut admin = portal.browser();
    admin.sign_up("Operators", &email("root")).await;
    portal.make_admin(&email("root")).await;
    let page = admin.get("/admin/backends").await;
    assert!(text(&page.body).contains("No proxy has reported yet."), "{}", page.body);

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let replica = |url: &str, up, in_flight| ReplicaReport {
        url: url.into(),
        up,
        in_flight,
        load: None,
        last_error: None,
        last_error_at: None,
    };
    for (proxy, in_flight) in [("gw-a 0.0.0.0:8080", 7), ("gw-b 0.0.0.0:8080", 2)] {
        let report = ProxyReport {
            proxy: proxy.into(),
            reported_at: 0,
            catalog_revision: 3,
            backends: vec![BackendReport {
                backend: "vllm".into(),
                queued: 4,
                replicas: vec![
                    ReplicaReport {
                        load: Some(ReplicaLoadReport {
                            waiting: 1,
                            running: 30,
                            kv_cache_percent: 41.5,
                            age_ms: 150,
                        }),
                        ..replica("http://127.0.0.1:9", true, in_flight)
                    },
                    ReplicaReport {
                        last_error: Some("connect: Connection refused <script>".into()),
                        last_error_at: Some(now - 12),
                        ..replica("http://10.0.0.2:8000", false, 0)
                    },
                ],
            }],
        };
        portal.store.report_proxy(report).await.unwrap();
    }
    let page = admin.get("/admin/backends").await;
    assert_eq!(page.status, StatusCode::OK);
    let live = text(&page.body);
    let live = &live[live.find("Live state").expect("a live section")..];
    for shown in [
        "gw-a 0.0.0.0:8080",
        "gw-b 0.0.0.0:8080",
        "30 running · 1 waiting · KV cache 41.5 %",
        "connect: Connection refused <script>",
    ] {
        assert!(live.contains(shown), "`{shown}` in {live}");
    }
    assert!(page.body.contains("Connection refused &lt;script&gt;"), "escaped");
    assert!(live.contains("12 s ago") || live.contains("13 s ago"), "{live}");
    assert_eq!(live.matches(">up<").count(), 2, "{live}");
    assert_eq!(live.matches(">down<").count(), 2, "{live}");
    assert!(
        live.contains(">7<") && live.contains(">2<"),
        "each proxy's in-flight count: {live}"
    );
    assert!(!live.contains("No proxy has reported yet."));
}

/// An application's console page shows its traffic and lets the admin
/// move it to another plan, by the store's one rule for admins (at once),
/// only as the admin saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_an_applications_traffic_and_changes_its_plan() {
    use maas_store::UsageRecord;

    let portal = Portal::embedded(options()).await;
    let mut developer = portal.browser();
    developer.sign_up("Acme", &email("ada")).await;
    let created = developer
        .submit(
            "/applications/new",
            "/applications",
            &[("name", "bot"), ("plan", "granite/standard")],
        )
        .await;
    let id = created.location().trim_start_matches("/applications/").to_owned();
    let now = time::OffsetDateTime::now_utc();
    let records = [
        UsageRecord::new(&id, "hits", 4, now),
        UsageRecord::new(&id, "prompt_tokens", 120, now),
        UsageRecord::new(&id, "completion_tokens", 30, now),
    ];
    portal.store.record_usage_once("test", 1, &records).await.unwrap();
    let mut admin = portal.browser();
    admin.sign_up("Operators", &email("root")).await;
    portal.make_admin(&email("root")).await;

    let path = format!("/admin/applications/{id}");
    let page = admin.get(&path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<svg class=\"chart\""), "a traffic chart");
    assert!(
        page.body.contains("<strong class=\"traffic-total\">150</strong>"),
        "7 days of tokens: {}",
        page.body
    );
    let hits = admin.get(&format!("{path}?period=24h&metric=hits")).await;
    assert!(
        hits.body.contains("<strong class=\"traffic-total\">4</strong>"),
        "{}",
        hits.body
    );
    assert_eq!(
        admin.get(&format!("{path}?metric=votes")).await.status,
        StatusCode::BAD_REQUEST
    );

    // Premium needs approval from a developer; an admin's move is at once.
    let version = page.hidden("version");
    let csrf = page.hidden("csrf");
    let moved = admin
        .post(
            &format!("{path}/plan"),
            &[("csrf", &csrf), ("version", &version), ("plan", "premium")],
        )
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER, "{}", moved.body);
    let app = portal.store.get_application(&id).await.unwrap().unwrap();
    assert_eq!((app.plan.as_str(), app.requested_plan.as_deref()), ("premium", None));
    // The page the admin looked at is stale now: nothing is done.
    let stale = admin
        .post(
            &format!("{path}/plan"),
            &[("csrf", &csrf), ("version", &version), ("plan", "standard")],
        )
        .await;
    assert_eq!(stale.location(), format!("{path}?changed=1"));
    assert_eq!(
        portal.store.get_application(&id).await.unwrap().unwrap().plan,
        "premium"
    );
    let version = admin.get(&path).await.hidden("version");
    let unknown = admin
        .post(
            &format!("{path}/plan"),
            &[("csrf", &csrf), ("version", &version), ("plan", "platinum")],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    let audit = portal
        .store
        .audit_log(&AuditQuery {
            entity_id: Some(id.clone()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor.kind == "user" && e.after.as_ref().is_some_and(|a| a["plan"] == "premium")),
        "audited as the admin's: {audit:?}"
    );
}

/// Products and plans edit in the console as one YAML draft, checked as
/// `maas apply` checks a file: mistakes shown on the form with line and
/// field, nothing promoted, only at the version opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_edits_a_product_and_its_plans_as_a_draft() {
    let portal = Portal::embedded(options()).await;
    let store = portal.store.clone();
    let mut admin = portal.browser();
    admin.sign_up("Operators", &email("root")).await;
    portal.make_admin(&email("root")).await;
    let products = admin.get("/admin/products").await;
    assert!(products.body.contains("href=\"/admin/products/granite/edit\""));
    let page = admin.get("/admin/products/granite/edit").await;
    assert_eq!(page.status, StatusCode::OK);
    let textarea = |body: &str| {
        let start = body.find("<textarea name=\"yaml\"").unwrap();
        let start = body[start..].find('>').unwrap() + start + 1;
        let end = body[start..].find("</textarea>").unwrap() + start;
        text(&body[start..end])
    };
    let yaml = textarea(&page.body);
    assert!(
        yaml.contains("system_name: granite") && yaml.contains("system_name: standard"),
        "{yaml}"
    );
    let version = page.hidden("version");
    let csrf = page.hidden("csrf");

    // A mistake the file format catches: its line and field.
    let typo = yaml.replacen("value: 60", "value: sixty", 1);
    let refused = admin
        .post(
            "/admin/products/granite/edit",
            &[("csrf", &csrf), ("version", &version), ("yaml", &typo)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let line = typo.lines().position(|l| l.contains("value: sixty")).unwrap() + 1;
    let shown = text(&refused.body);
    assert!(shown.contains(&format!("line {line}: <code>plans[")), "{shown}");
    assert!(textarea(&refused.body).contains("value: sixty"), "the text is kept");
    // A mistake the store catches (a backend nobody has), at its line.
    let lost = yaml.replacen("backend: vllm", "backend: nowhere", 1);
    let refused = admin
        .post(
            "/admin/products/granite/edit",
            &[("csrf", &csrf), ("version", &version), ("yaml", &lost)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let line = lost.lines().position(|l| l.contains("backend: nowhere")).unwrap() + 1;
    assert!(
        text(&refused.body).contains(&format!("line {line}: <code>products[0].backend</code>")),
        "{}",
        refused.body
    );
    // Aliases that multiply (a "billion laughs"), where the document takes
    // any value (a product's `openapi`), are refused, quickly.
    let mut laughs = String::from(
        "products:\n- system_name: granite\n  backend: vllm\n  models: [granite-8b]\n  openapi:\n    a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (name, previous) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        let nine = vec![format!("*{previous}"); 9].join(",");
        laughs.push_str(&format!("    {name}: &{name} [{nine}]\n"));
    }
    let started = std::time::Instant::now();
    let refused = admin
        .post(
            "/admin/products/granite/edit",
            &[("csrf", &csrf), ("version", &version), ("yaml", &laughs)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text(&refused.body).contains("repetition limit exceeded"),
        "{}",
        refused.body
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Another product's name is not edited here.
    let renamed = yaml.replacen("system_name: granite", "system_name: basalt", 1);
    let refused = admin
        .post(
            "/admin/products/granite/edit",
            &[("csrf", &csrf), ("version", &version), ("yaml", &renamed)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text(&refused.body).contains("exactly one product, `granite`"),
        "{}",
        refused.body
    );

    // A good edit: a limit and a price change, saved as a draft.
    let edited = yaml.replacen("value: 60", "value: 30", 1).replacen(
        "system_name: standard",
        "system_name: standard\n  price_per_1k_prompt_tokens: '0.25'",
        1,
    );
    let saved = admin
        .post(
            "/admin/products/granite/edit",
            &[("csrf", &csrf), ("version", &version), ("yaml", &edited)],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let plan = store.get_plan("granite", "standard").await.unwrap().unwrap();
    assert_eq!(plan.limits[0].value, 30);
    assert_eq!(plan.price_per_1k_prompt_tokens.to_string(), "0.25");
    // The page opened before is stale now.
    let stale = admin
        .post(
            "/admin/products/granite/edit",
            &[("csrf", &csrf), ("version", &version), ("yaml", &edited)],
        )
        .await;
    assert_eq!(stale.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text(&stale.body).contains("changed since you opened it"),
        "{}",
        stale.body
    );

    // Members cannot.
    let mut member = portal.browser();
    member.sign_up("Acme", &email("ada")).await;
    let csrf = member.get("/applications").await.hidden("csrf");
    let answer = member
        .post(
            "/admin/products/granite/edit",
            &[("csrf", &csrf), ("version", &version), ("yaml", &edited)],
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        member.get("/admin/products/granite/edit").await.status,
        StatusCode::FORBIDDEN
    );
}
