//! Class 4: sign-up that made admins. `admin.admin_emails` grants the role
//! only to a company identity whose provider verified the address; a
//! local account becomes an admin only through an admin (console, admin
//! API) or `maas set-role` on the server; and whoever signs up first with
//! someone's address cannot lock its owner out of company sign-in.

use serde_json::json;

use super::fixtures::{
    Idp, PortalProcess, STRONG_PASSWORD, Visitor, admin_api, email, gateway, sign_up_and_in, sso_sign_in,
};
use crate::harness::free_port;

async fn is_admin(visitor: &mut Visitor) -> bool {
    let page = visitor.get("/admin").await;
    assert!(matches!(page.status, 200 | 403), "/admin: {}", page.status);
    page.status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_verified_company_identities_are_admins_by_email() {
    let (gw, _capture) = gateway(0).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(
        &base,
        json!({
            "boss": {"email": email("boss"), "name": "The Boss", "org_name": "Platform Team", "groups": []},
            "sly": {"email": email("sly"), "email_verified": false, "name": "Sly", "org_name": "Sly Org", "groups": []},
        }),
    )
    .await;
    let settings = format!(
        "admin:\n  admin_emails: [{}, {}]\n{}",
        email("boss"),
        email("sly"),
        idp.settings()
    );
    let portal = PortalProcess::start_at(&gw, port, &settings);

    // A stranger signs up locally with the owner's address: a member, no more.
    let mut mallory = Visitor::new(&portal.base);
    sign_up_and_in(&mut mallory, "Platform Team", &email("boss")).await;
    assert!(!is_admin(&mut mallory).await, "local sign-up is never an admin");
    let session = mallory.session().unwrap().to_owned();
    let http = reqwest::Client::new();
    for (method, path) in [(reqwest::Method::GET, "/products"), (reqwest::Method::POST, "/tokens")] {
        let response = http
            .request(method.clone(), format!("{}/admin/api/v1{path}", portal.base))
            .header("cookie", format!("maas_session={session}"))
            .json(&json!({"name": "mine", "scope": "write"}))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(response.status().as_u16(), 401 | 403),
            "{method} {path}: {}",
            response.status()
        );
    }

    // The owner signs in through the company: admin, and the impostor is out.
    let boss = sso_sign_in(&portal.base, "boss").await;
    let session = boss["session"]
        .as_str()
        .unwrap_or_else(|| panic!("the owner signs in: {boss}"));
    assert!(
        is_admin(&mut Visitor::with_session(&portal.base, session)).await,
        "verified and listed: admin"
    );
    let mut again = Visitor::new(&portal.base);
    let page = again
        .submit(
            "/sign-in",
            "/sign-in",
            &[("email", &email("boss")), ("password", STRONG_PASSWORD)],
        )
        .await;
    assert_eq!(page.status, 401, "the impostor's password no longer opens anything");
    assert!(
        mallory.get("/applications").await.status != 200,
        "nor does the impostor's session"
    );

    // Listed but not verified by the provider: a member.
    let sly = sso_sign_in(&portal.base, "sly").await;
    let session = sly["session"].as_str().unwrap_or_else(|| panic!("sly signs in: {sly}"));
    assert!(
        !is_admin(&mut Visitor::with_session(&portal.base, session)).await,
        "unverified: not an admin"
    );
    // The provider's group claim still makes admins.
    let root = sso_sign_in(&portal.base, "root").await;
    assert!(
        is_admin(&mut Visitor::with_session(
            &portal.base,
            root["session"].as_str().unwrap()
        ))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_or_the_server_makes_a_local_account_an_admin() {
    let (gw, _capture) = gateway(0).await;
    let portal = PortalProcess::start(&gw, &format!("admin:\n  admin_emails: [{}]\n", email("carol")));
    let mut carol = Visitor::new(&portal.base);
    sign_up_and_in(&mut carol, "Carol Co", &email("carol")).await;
    assert!(
        !is_admin(&mut carol).await,
        "listed, but a local sign-up proves nothing"
    );
    let user = gw.store.find_user_by_email(&email("carol")).await.unwrap().unwrap();
    let (status, body) = admin_api(
        &portal.base,
        reqwest::Method::PATCH,
        &format!("/users/{}", user.id),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(is_admin(&mut carol).await, "an admin made her one");

    let mut dave = Visitor::new(&portal.base);
    sign_up_and_in(&mut dave, "Dave Co", &email("dave")).await;
    assert!(!is_admin(&mut dave).await);
    let (ok, stderr) = super::fixtures::maas_cli(&gw, &["set-role", "--email", &email("dave"), "admin"]);
    assert!(ok, "{stderr}");
    assert!(is_admin(&mut dave).await, "the server's CLI made him one");
    let (ok, stderr) = super::fixtures::maas_cli(&gw, &["set-role", "--email", &email("nobody"), "admin"]);
    assert!(!ok && stderr.contains("no user"), "{stderr}");
}
