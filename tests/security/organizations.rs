//! Class 5: organisation take-over. Company sign-in joins only the account
//! bound to its provider and organization claim, never one a stranger
//! created with the same name; local sign-up can neither create nor join
//! the bound one.

use serde_json::json;

use super::fixtures::{Idp, PortalProcess, Visitor, email, gateway, sign_up_and_in, sso_sign_in};
use crate::harness::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn company_sign_in_never_joins_a_lookalike_organization() {
    let (gw, _capture) = gateway(0).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(
        &base,
        json!({
            "grace": {"email": email("grace"), "name": "Grace", "org_name": "Acme Research", "groups": []},
            "eve": {"email": email("eve"), "name": "Eve", "org_name": "Beta Corp", "groups": []},
            "hal": {"email": email("hal"), "name": "Hal", "org_name": "Hal Labs", "groups": []},
        }),
    )
    .await;
    let portal = PortalProcess::start_at(&gw, port, &idp.settings());

    // A stranger takes the organization's name first and makes an application.
    let mut stranger = Visitor::new(&portal.base);
    sign_up_and_in(&mut stranger, "Acme Research", &email("stranger")).await;
    let bait = stranger.create_application("bait", "tinyllama/open").await;

    // ada of Acme Research (the provider's people) signs in: another account.
    let ada = sso_sign_in(&portal.base, "ada").await;
    let mut ada = Visitor::with_session(&portal.base, ada["session"].as_str().unwrap_or_else(|| panic!("{ada}")));
    let page = ada.get("/applications").await;
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains(&bait) && !page.body.contains("bait"),
        "the stranger's application is not hers"
    );
    assert_eq!(ada.get(&format!("/applications/{bait}")).await.status, 404);
    let ada_user = gw.store.find_user_by_email(&email("ada")).await.unwrap().unwrap();
    let stranger_user = gw.store.find_user_by_email(&email("stranger")).await.unwrap().unwrap();
    assert_ne!(ada_user.account_id, stranger_user.account_id);
    let account = gw.store.get_account(&ada_user.account_id).await.unwrap().unwrap();
    assert_eq!(
        account.sso.as_ref().map(|b| b.claim_value.as_str()),
        Some("Acme Research")
    );
    assert_eq!(
        account.name, "Acme Research (SSO)",
        "the name was taken; the binding decides"
    );

    // ada's application is hers alone; the stranger cannot see it either.
    let real = ada.create_application("real", "tinyllama/open").await;
    assert_eq!(stranger.get(&format!("/applications/{real}")).await.status, 404);

    // A colleague from the same organization joins ada's account.
    let grace = sso_sign_in(&portal.base, "grace").await;
    assert!(grace["session"].is_string(), "{grace}");
    let grace_user = gw.store.find_user_by_email(&email("grace")).await.unwrap().unwrap();
    assert_eq!(grace_user.account_id, ada_user.account_id);

    // Local sign-up with the bound account's name gets an account of its own.
    let mut copycat = Visitor::new(&portal.base);
    sign_up_and_in(&mut copycat, "Acme Research (SSO)", &email("copycat")).await;
    let copycat_user = gw.store.find_user_by_email(&email("copycat")).await.unwrap().unwrap();
    assert_ne!(copycat_user.account_id, ada_user.account_id);
    assert_eq!(copycat.get(&format!("/applications/{real}")).await.status, 404);

    // An account from before accounts were bound, renamed by its member
    // after another organization: the name wins nothing; the member's own
    // sign-in binds it to the organization the provider names for her.
    let legacy = gw
        .store
        .create_account(maas_store::NewAccount {
            name: "Hal Labs".into(),
            description: String::new(),
            sso: None,
        })
        .await
        .unwrap();
    gw.store
        .create_user(maas_store::NewUser {
            account_id: legacy.id.clone(),
            email: email("eve"),
            display_name: "Eve".into(),
            role: maas_store::model::UserRole::Member,
            state: maas_store::model::UserState::Active,
            sso: Some(maas_store::model::SsoIdentity {
                issuer: idp.issuer.clone(),
                subject: "eve".into(),
            }),
            password_hash: None,
            email_verified: true,
        })
        .await
        .unwrap();
    let hal = sso_sign_in(&portal.base, "hal").await;
    assert!(hal["session"].is_string(), "{hal}");
    let hal_user = gw.store.find_user_by_email(&email("hal")).await.unwrap().unwrap();
    assert_ne!(hal_user.account_id, legacy.id, "never joined by name");
    let eve = sso_sign_in(&portal.base, "eve").await;
    assert!(eve["session"].is_string(), "{eve}");
    let adopted = gw.store.get_account(&legacy.id).await.unwrap().unwrap();
    assert_eq!(adopted.sso.map(|b| b.claim_value).as_deref(), Some("Beta Corp"));
}
