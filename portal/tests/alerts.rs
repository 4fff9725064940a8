//! Budget alerts leave for a real webhook receiver: signed (checked by
//! Python's own `hmac`), retried after failures, sent once per threshold
//! and period although two control-plane loops scan at once; and they show
//! in the portal for the organization's members and in the console.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use maas_portal::PortalOptions;
use maas_portal::budget_alerts::{AlertOptions, Webhook, run};
use maas_store::model::{Budget, BudgetMode, BudgetPeriod, Money, SPEND};
use maas_store::{DeliveryState, NewApplication, Precondition, UsageRecord};

mod harness;

use harness::{Portal, email, text};

const SECRET: &str = "whsec-test-secret";

#[derive(Default)]
struct Receiver {
    /// Every call: its alert id, signature header and body.
    calls: Vec<(String, String, Vec<u8>)>,
    /// Calls answered 503 before the receiver accepts.
    failures_left: usize,
}

async fn receive(
    State(receiver): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut receiver = receiver.lock().unwrap();
    receiver
        .calls
        .push((header("x-maas-alert-id"), header("x-maas-signature"), body.to_vec()));
    if receiver.failures_left > 0 {
        receiver.failures_left -= 1;
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Whether `signature` signs `body` with [`SECRET`], as a receiver written
/// in Python would check it.
fn python_verifies(signature: &str, body: &[u8]) -> bool {
    let script = "import hmac, hashlib, sys\n\
                  sig, body = sys.argv[1], sys.stdin.buffer.read()\n\
                  parts = dict(p.split('=', 1) for p in sig.split(','))\n\
                  mac = hmac.new(sys.argv[2].encode(), parts['t'].encode() + b'.' + body, hashlib.sha256).hexdigest()\n\
                  sys.exit(0 if hmac.compare_digest(mac, parts['v1']) else 1)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, signature, SECRET])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the receiver's check (install python3)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait().unwrap().success()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "waited 20 s for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_signed_retried_and_sent_once_per_threshold() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let store = portal.store.clone();
    let mut member = portal.browser();
    member.sign_up("Acme", &email("ada")).await;
    let user = store.find_user_by_email(&email("ada")).await.unwrap().unwrap();
    let account = store.get_account(&user.account_id).await.unwrap().unwrap();
    let mut stranger = portal.browser();
    stranger.sign_up("Globex", &email("eve")).await;
    let before = member.get("/applications").await;
    assert!(!before.body.contains("budget-alert"), "no banner before any alert");
    let app = store
        .create_application(NewApplication {
            account_id: account.id.clone(),
            name: "bot".into(),
            description: String::new(),
            product: "granite".into(),
            plan: "standard".into(),
        })
        .await
        .unwrap();
    let budget = Budget {
        amount: Money::parse("1").unwrap(),
        period: BudgetPeriod::Day,
        mode: BudgetMode::Soft,
        alert_at_percent: vec![50, 100],
        set_by: Default::default(),
    };
    store
        .set_application_budgets(&app.id, vec![budget], Precondition::Any)
        .await
        .unwrap();

    let receiver = Arc::new(Mutex::new(Receiver {
        failures_left: 2,
        ..Receiver::default()
    }));
    let hook = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });
    let options = AlertOptions {
        webhook: Some(Webhook {
            url,
            secret: SECRET.into(),
        }),
        interval: Duration::from_millis(100),
        max_attempts: 5,
    };
    // Two control planes scan and send at once.
    tokio::spawn(run(store.clone(), options.clone()));
    tokio::spawn(run(store.clone(), options));

    let spend = |nanos: u64| {
        let store = store.clone();
        let app = app.id.clone();
        async move {
            let now = time::OffsetDateTime::now_utc();
            store
                .record_usage(&[UsageRecord::new(&app, SPEND, nanos, now)])
                .await
                .unwrap();
        }
    };
    spend(600_000_000).await;
    // Refused twice, then accepted: three calls, 1 s and 2 s apart.
    let started = Instant::now();
    wait_for("the receiver to accept the 50 % alert", || {
        receiver.lock().unwrap().calls.len() >= 3
    })
    .await;
    let took = started.elapsed();
    // The sender records the delivery once the receiver has answered: a
    // moment after the receiver counted the call.
    let mut alerts = store.budget_alerts(Some(&account.id), 10).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alerts
        .first()
        .is_some_and(|alert| alert.delivery.state != DeliveryState::Delivered)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        alerts = store.budget_alerts(Some(&account.id), 10).await.unwrap();
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let first = &alerts[0];
    assert_eq!(first.threshold_percent, 50);
    assert_eq!(
        (first.delivery.state, first.delivery.attempts),
        (DeliveryState::Delivered, 3)
    );
    assert!(took >= Duration::from_secs(3), "backed off 1 s then 2 s, took {took:?}");
    {
        let receiver = receiver.lock().unwrap();
        assert_eq!(receiver.calls.len(), 3, "retried twice, then delivered");
        for (id, signature, body) in &receiver.calls {
            assert_eq!(id, &first.id);
            assert!(python_verifies(signature, body), "a valid signature: {signature}");
            assert!(!python_verifies(signature, b"{\"tampered\":true}"), "bound to the body");
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(json["type"], "budget.alert");
            assert_eq!(json["scope"], "application");
            assert_eq!(json["threshold_percent"], 50);
            assert_eq!(json["spent"], 0.6);
            assert!(json.get("delivery").is_none(), "{json}");
        }
    }

    spend(500_000_000).await;
    wait_for("the 100 % alert", || receiver.lock().unwrap().calls.len() >= 4).await;
    // More rounds of both loops send nothing more.
    tokio::time::sleep(Duration::from_millis(700)).await;
    {
        let receiver = receiver.lock().unwrap();
        assert_eq!(receiver.calls.len(), 4, "each threshold once");
        let hundred: serde_json::Value = serde_json::from_slice(&receiver.calls[3].2).unwrap();
        assert_eq!(
            (hundred["threshold_percent"].as_u64(), hundred["spent"].as_f64()),
            (Some(100), Some(1.1))
        );
    }

    // The organization's members see the highest threshold reached, and
    // where the budget stands; another organization sees nothing.
    let page = member.get("/applications").await;
    let banner = "Application bot has spent 100 % of its daily budget: 1.1 of 1 USD.";
    assert!(text(&page.body).contains(banner), "{}", page.body);
    assert!(!page.body.contains("has spent 50 %"), "only the highest threshold");
    let page = member.get(&format!("/applications/{}", app.id)).await;
    let body = text(&page.body);
    assert!(body.contains(banner) && body.contains("<h2>Budgets</h2>"), "{body}");
    assert!(
        body.contains("1 USD daily") && body.contains("1.1 USD") && body.contains("(alerts only)"),
        "{body}"
    );
    assert!(!text(&stranger.get("/applications").await.body).contains("budget-alert"));
    // The console lists both alerts with their delivery.
    portal.make_admin(&email("eve")).await;
    let console = stranger.get("/admin/alerts").await;
    assert_eq!(console.status, reqwest::StatusCode::OK, "{}", console.body);
    let body = text(&console.body);
    assert_eq!(body.matches(">delivered<").count(), 2, "{body}");
    assert!(
        body.contains("<td>3</td>") && !body.contains("last: answered"),
        "{body}"
    );
}

/// An admin sets an application's budgets in the console; its owner adds
/// one of their own on the application's page and cannot remove the
/// admin's; a bad row and a stale page are refused with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_and_owners_set_budgets_through_the_forms() {
    let portal = Portal::embedded(PortalOptions::default()).await;
    let store = portal.store.clone();
    let mut owner = portal.browser();
    owner.sign_up("Acme", &email("ada")).await;
    let user = store.find_user_by_email(&email("ada")).await.unwrap().unwrap();
    let app = store
        .create_application(NewApplication {
            account_id: user.account_id.clone(),
            name: "bot".into(),
            description: String::new(),
            product: "granite".into(),
            plan: "standard".into(),
        })
        .await
        .unwrap();
    let mut admin = portal.browser();
    admin.sign_up("Operators", &email("root")).await;
    portal.make_admin(&email("root")).await;

    let page = admin.get(&format!("/admin/applications/{}", app.id)).await;
    assert!(
        page.body.contains("Set this application&#x27;s budgets")
            || page.body.contains("Set this application's budgets"),
        "{}",
        page.body
    );
    let (csrf, version) = (page.hidden("csrf"), page.hidden("version"));
    let saved = admin
        .post(
            &format!("/admin/applications/{}/budgets", app.id),
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("amount_0", "10"),
                ("period_0", "month"),
                ("mode_0", "hard"),
                ("alerts_0", "50, 80"),
                ("amount_1", ""),
                ("period_1", "day"),
            ],
        )
        .await;
    assert_eq!(saved.status, reqwest::StatusCode::SEE_OTHER, "{}", saved.body);
    let stored = store.get_application(&app.id).await.unwrap().unwrap().budgets;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].amount.to_string(), stored[0].alert_at_percent.clone()),
        ("10".to_owned(), vec![50, 80])
    );
    let stale = admin
        .post(
            &format!("/admin/applications/{}/budgets", app.id),
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("amount_0", "99"),
                ("period_0", "month"),
            ],
        )
        .await;
    assert_eq!(
        stale.status,
        reqwest::StatusCode::CONFLICT,
        "the page was read before the change"
    );

    let page = owner.get(&format!("/applications/{}", app.id)).await;
    let body = text(&page.body);
    assert!(
        body.contains("Add budgets of your own") && body.contains("10 USD monthly"),
        "{body}"
    );
    let (csrf, version) = (page.hidden("csrf"), page.hidden("version"));
    let bad = owner
        .post(
            &format!("/applications/{}/budgets", app.id),
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("amount_0", "2"),
                ("period_0", "year"),
            ],
        )
        .await;
    assert_eq!(bad.status, reqwest::StatusCode::BAD_REQUEST);
    assert!(
        text(&bad.body).contains("Row 1: `year` is not a period"),
        "{}",
        bad.body
    );
    let added = owner
        .post(
            &format!("/applications/{}/budgets", app.id),
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("amount_0", "2"),
                ("period_0", "day"),
                ("mode_0", "hard"),
            ],
        )
        .await;
    assert_eq!(added.status, reqwest::StatusCode::SEE_OTHER, "{}", added.body);
    let page = owner.get(&format!("/applications/{}", app.id)).await;
    assert!(text(&page.body).contains("(set by an owner)"), "{}", page.body);
    let version = page.hidden("version");
    let emptied = owner
        .post(
            &format!("/applications/{}/budgets", app.id),
            &[("csrf", &csrf), ("version", &version)],
        )
        .await;
    assert_eq!(emptied.status, reqwest::StatusCode::SEE_OTHER);
    let stored = store.get_application(&app.id).await.unwrap().unwrap().budgets;
    assert_eq!(stored.len(), 1, "the owner's went, the admin's stays: {stored:?}");
    assert_eq!(stored[0].set_by, maas_store::model::BudgetAuthor::Admin);
    // The organization's budgets from the console, and a key's.
    let page = admin.get(&format!("/admin/applications/{}", app.id)).await;
    let body = text(&page.body);
    let account_version = maas_store::etag(&store.get_account(&user.account_id).await.unwrap().unwrap());
    assert!(
        body.contains(&account_version),
        "the organization's form carries its version"
    );
    let csrf = page.hidden("csrf");
    let back = format!("/admin/applications/{}", app.id);
    let saved = admin
        .post(
            &format!("/admin/applications/{}/organization-budgets", app.id),
            &[
                ("csrf", &csrf),
                ("version", &account_version),
                ("amount_0", "50"),
                ("period_0", "week"),
            ],
        )
        .await;
    assert_eq!(saved.status, reqwest::StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(saved.location(), back);
    let account = store.get_account(&user.account_id).await.unwrap().unwrap();
    assert_eq!(account.budgets.len(), 1);
    let key = store
        .create_key(&app.id, maas_store::NewKey::default())
        .await
        .unwrap()
        .key;
    let page = admin.get(&format!("/admin/keys/{}/budgets", key.id)).await;
    assert_eq!(page.status, reqwest::StatusCode::OK, "{}", page.body);
    let saved = admin
        .post(
            &format!("/admin/keys/{}/budgets", key.id),
            &[("csrf", &page.hidden("csrf")), ("amount_0", "3"), ("period_0", "total")],
        )
        .await;
    assert_eq!(saved.status, reqwest::StatusCode::SEE_OTHER, "{}", saved.body);
    let page = owner.get(&format!("/keys/{}/budgets", key.id)).await;
    let body = text(&page.body);
    assert!(
        body.contains("Budgets of your own") && body.contains("3 USD total"),
        "{body}"
    );
    let saved = owner
        .post(
            &format!("/keys/{}/budgets", key.id),
            &[("csrf", &page.hidden("csrf")), ("amount_0", "1"), ("period_0", "day")],
        )
        .await;
    assert_eq!(saved.status, reqwest::StatusCode::SEE_OTHER, "{}", saved.body);
    let budgets = store.get_key(&key.id).await.unwrap().unwrap().budgets;
    assert_eq!(budgets.len(), 2, "the admin's and the owner's: {budgets:?}");
    let page = owner.get(&format!("/applications/{}", app.id)).await;
    let body = text(&page.body);
    assert!(
        body.contains("50 USD weekly"),
        "the organization's budget shows: {body}"
    );

    // Another organization's owner finds no such application.
    let mut stranger = portal.browser();
    stranger.sign_up("Globex", &email("eve")).await;
    let page = stranger.get("/applications").await;
    let csrf = page.hidden("csrf");
    let foreign = stranger
        .post(
            &format!("/applications/{}/budgets", app.id),
            &[("csrf", &csrf), ("version", &version)],
        )
        .await;
    assert_eq!(foreign.status, reqwest::StatusCode::NOT_FOUND);
    let foreign = stranger.get(&format!("/keys/{}/budgets", key.id)).await;
    assert_eq!(
        foreign.status,
        reqwest::StatusCode::NOT_FOUND,
        "another organization's key"
    );
}
