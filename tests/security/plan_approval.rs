//! Class 3: a plan change that skipped approval. The rule is the store's,
//! written once: an owner's move to a plan that needs approval is a
//! request, and the application keeps its plan (and its limits) until an
//! admin approves; admin API and console take the same actions with the
//! same answers.

use std::time::Duration;

use maas_store::model::ApplicationState;

use super::fixtures::{PortalProcess, Visitor, admin_api, email, gateway, maas_cli, sign_up_and_in};
use crate::harness::leave_room_in_this_minute;

/// `action` on the application as the console's page shows it now.
async fn console_act(admin: &mut Visitor, id: &str, action: &str) -> super::fixtures::Page {
    let page = admin.get(&format!("/admin/applications/{id}")).await;
    let version = page
        .hidden("version")
        .unwrap_or_else(|| panic!("the console shows the version: {}", page.body));
    let csrf = page.hidden("csrf").expect("a form");
    admin
        .post(
            &format!("/admin/applications/{id}/{action}"),
            &[("csrf", &csrf), ("version", &version)],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_needs_approval_is_asked_for_not_taken() {
    let (gw, _capture) = gateway(1).await;
    let portal = PortalProcess::start(&gw, "");
    let mut dev = Visitor::new(&portal.base);
    sign_up_and_in(&mut dev, "Acme", &email("owner")).await;
    let id = dev.create_application("bot", "tinyllama/standard").await;
    let app_path = format!("/applications/{id}");
    let key = gw
        .store
        .create_key(&id, maas_store::NewKey::default())
        .await
        .unwrap()
        .secret
        .into_string();

    // The owner asks for premium: the application stays live on standard.
    let asked = dev
        .submit(&app_path, &format!("{app_path}/plan"), &[("plan", "premium")])
        .await;
    assert_eq!(asked.status, 303, "{}", asked.body);
    let app = gw.store.get_application(&id).await.unwrap().unwrap();
    assert_eq!(
        (app.plan.as_str(), app.state, app.requested_plan.as_deref()),
        ("standard", ApplicationState::Live, Some("premium"))
    );
    let page = dev.get(&app_path).await;
    assert!(
        page.body.contains("You asked for premium"),
        "the owner sees the request"
    );
    // Standard's limit (2 a minute) still applies to the key.
    leave_room_in_this_minute(Duration::from_secs(10)).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            gw.chat(&format!("{}/tinyllama", gw.base()), &key, "chat-a")
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429], "standard's limits until approved");

    // Approved through the admin API: premium, at once.
    let (status, approved) = admin_api(
        &portal.base,
        reqwest::Method::POST,
        &format!("/applications/{id}/approve"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(
        (approved["plan"].as_str(), approved.get("requested_plan")),
        (Some("premium"), None)
    );
    // Approving again is a no-op in both places, not a conflict in one.
    let (status, again) = admin_api(
        &portal.base,
        reqwest::Method::POST,
        &format!("/applications/{id}/approve"),
        None,
    )
    .await;
    assert_eq!((status, &again), (200, &approved));
    let (ok, stderr) = maas_cli(&gw, &["set-role", "--email", &email("owner"), "admin"]);
    assert!(ok, "{stderr}");
    let console = console_act(&mut dev, &id, "approve").await;
    assert_eq!(
        console.status, 303,
        "the console's answer to the same no-op: {}",
        console.body
    );
    let console = console_act(&mut dev, &id, "resume").await;
    assert_eq!(console.status, 303, "resuming a live application: {}", console.body);
    let (status, _) = admin_api(
        &portal.base,
        reqwest::Method::POST,
        &format!("/applications/{id}/resume"),
        None,
    )
    .await;
    assert_eq!(status, 200, "the same in the admin API");
    let (status, error) = admin_api(
        &portal.base,
        reqwest::Method::POST,
        &format!("/applications/{id}/decline"),
        None,
    )
    .await;
    assert_eq!(status, 409, "nothing to decline: {error}");
    let console = console_act(&mut dev, &id, "decline").await;
    assert_eq!(console.status, 409, "the same in the console");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_choose_only_published_plans_of_their_own_applications() {
    let (gw, _capture) = gateway(0).await;
    let portal = PortalProcess::start(&gw, "");
    let mut dev = Visitor::new(&portal.base);
    sign_up_and_in(&mut dev, "Acme", &email("dev")).await;
    let id = dev.create_application("gated", "tinyllama/premium").await;
    let app_path = format!("/applications/{id}");
    assert_eq!(
        gw.store.get_application(&id).await.unwrap().unwrap().state,
        ApplicationState::Pending
    );
    // An unpublished plan, a plan of another product, a made-up plan: refused, nothing changes.
    for plan in ["unlisted", "open-of-other", "no-such-plan"] {
        let answer = dev
            .submit(&app_path, &format!("{app_path}/plan"), &[("plan", plan)])
            .await;
        assert!(matches!(answer.status, 400 | 422), "{plan}: {}", answer.status);
    }
    let app = gw.store.get_application(&id).await.unwrap().unwrap();
    assert_eq!((app.plan.as_str(), app.state), ("premium", ApplicationState::Pending));
    // Moving a pending application to a plan without approval makes it live, as if made on it.
    let moved = dev
        .submit(&app_path, &format!("{app_path}/plan"), &[("plan", "standard")])
        .await;
    assert_eq!(moved.status, 303);
    let app = gw.store.get_application(&id).await.unwrap().unwrap();
    assert_eq!((app.plan.as_str(), app.state), ("standard", ApplicationState::Live));
    // Back to premium: a request again, not a way back to pending and not premium.
    dev.submit(&app_path, &format!("{app_path}/plan"), &[("plan", "premium")])
        .await;
    let app = gw.store.get_application(&id).await.unwrap().unwrap();
    assert_eq!(
        (app.plan.as_str(), app.requested_plan.as_deref()),
        ("standard", Some("premium"))
    );
    // Another account's application is not found.
    let mut stranger = Visitor::new(&portal.base);
    sign_up_and_in(&mut stranger, "Elsewhere", &email("stranger")).await;
    let answer = stranger
        .submit("/applications", &format!("{app_path}/plan"), &[("plan", "standard")])
        .await;
    assert_eq!(answer.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_approves_what_the_admin_saw_not_what_is_asked_since() {
    let (gw, _capture) = gateway(0).await;
    let portal = PortalProcess::start(&gw, "");
    let mut dev = Visitor::new(&portal.base);
    sign_up_and_in(&mut dev, "Switcher", &email("switcher")).await;
    let id = dev.create_application("bot", "tinyllama/standard").await;
    let app_path = format!("/applications/{id}");
    let ask = |plan: &'static str| (app_path.clone(), plan);
    let (path, plan) = ask("premium");
    assert_eq!(
        dev.submit(&path, &format!("{path}/plan"), &[("plan", plan)])
            .await
            .status,
        303
    );

    // The admin opens the request for premium...
    let mut admin = Visitor::new(&portal.base);
    sign_up_and_in(&mut admin, "Operators", &email("reviewer")).await;
    let (ok, stderr) = maas_cli(&gw, &["set-role", "--email", &email("reviewer"), "admin"]);
    assert!(ok, "{stderr}");
    let page = admin.get(&format!("/admin/applications/{id}")).await;
    assert!(page.body.contains("Approve premium"), "{}", page.body);
    let (csrf, version) = (page.hidden("csrf").unwrap(), page.hidden("version").unwrap());

    // ...the developer switches the request to unlimited meanwhile...
    let (path, plan) = ask("unlimited");
    assert_eq!(
        dev.submit(&path, &format!("{path}/plan"), &[("plan", plan)])
            .await
            .status,
        303
    );

    // ...and "Approve premium" approves nothing: the console shows the new request.
    let approved = admin
        .post(
            &format!("/admin/applications/{id}/approve"),
            &[("csrf", &csrf), ("version", &version)],
        )
        .await;
    assert_eq!(approved.status, 303, "{}", approved.body);
    let shown = approved.location.clone().unwrap_or_default();
    assert!(
        shown.ends_with(&format!("/admin/applications/{id}?changed=1")),
        "{shown}"
    );
    let app = gw.store.get_application(&id).await.unwrap().unwrap();
    assert_eq!(
        (app.plan.as_str(), app.requested_plan.as_deref()),
        ("standard", Some("unlimited")),
        "nothing approved"
    );
    let page = admin.get(&shown).await;
    assert!(
        page.body.contains("changed while you were looking") && page.body.contains("Approve unlimited"),
        "{}",
        page.body
    );
    // Suspending or declining with the old version changes nothing either.
    for action in ["suspend", "decline"] {
        let stale = admin
            .post(
                &format!("/admin/applications/{id}/{action}"),
                &[("csrf", &csrf), ("version", &version)],
            )
            .await;
        assert_eq!(stale.status, 303, "{action}");
        assert_eq!(gw.store.get_application(&id).await.unwrap().unwrap(), app, "{action}");
    }
    // A form without the version is refused.
    let bare = admin
        .post(&format!("/admin/applications/{id}/approve"), &[("csrf", &csrf)])
        .await;
    assert!(bare.status >= 400, "{}", bare.status);
    assert_eq!(gw.store.get_application(&id).await.unwrap().unwrap(), app);
    // Reviewed again, it is approved as now seen.
    let page = admin.get(&shown).await;
    let approved = admin
        .post(
            &format!("/admin/applications/{id}/approve"),
            &[
                ("csrf", &page.hidden("csrf").unwrap()),
                ("version", &page.hidden("version").unwrap()),
            ],
        )
        .await;
    assert_eq!(approved.status, 303);
    let app = gw.store.get_application(&id).await.unwrap().unwrap();
    assert_eq!((app.plan.as_str(), app.requested_plan), ("unlimited", None));
}
