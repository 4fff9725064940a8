//! Class 5: organisation take-over. Company sign-in joins only the account
//! bound to its provider and organization claim, never one a stranger
//! created with the same name; local sign-up can neither create nor join
//! the bound one.

use serde_json::json;

use super::fixtures::{PortalProcess, Visitor, company, email, sign_up_and_in, sso_sign_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn company_sign_in_never_joins_a_lookalike_organization() {
    let (gw, _capture, idp, port) = company(
        json!({
            "grace": {"email": email("grace"), "name": "Grace", "org_name": "Acme Research", "groups": []},
            "eve": {"email": email("eve"), "name": "Eve", "org_name": "Beta Corp", "groups": []},
            "hal": {"email": email("hal"), "name": "Hal", "org_name": "Hal Labs", "groups": []},
        }),
        &[],
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
    let stranger_account = gw.store.get_account(&stranger_user.account_id).await.unwrap().unwrap();
    assert_eq!(
        (account.shown_name(), stranger_account.shown_name()),
        ("Acme Research", "Acme Research"),
        "the same name, two accounts: the binding decides"
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
    sign_up_and_in(&mut copycat, &account.name, &email("copycat")).await;
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

/// The actions the audit log holds on `entity` `id`, newest first.
async fn audited(store: &maas_store::Store, entity: &str, id: &str) -> Vec<String> {
    let query = maas_store::AuditQuery {
        entity: Some(entity.into()),
        entity_id: Some(id.into()),
        limit: 20,
        ..maas_store::AuditQuery::default()
    };
    store
        .audit_log(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// The sign-in's portal session, or a panic naming where the sign-in ended.
fn session_of(report: &serde_json::Value) -> &str {
    report["session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {report}"))
}

/// Whether a portal visitor still holds a signed-in session: the
/// applications page answers rather than sending them to sign in.
async fn signed_in(visitor: &mut Visitor) -> bool {
    visitor.get("/applications").await.status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_change_at_the_provider_moves_or_refuses_the_user() {
    let person = |who: &str, org: &str| json!({"email": email(who), "name": who, "org_name": org, "groups": []});
    let (gw, _capture, idp, port) = company(
        json!({
            "kim": person("kim", "Acme Research"),
            "lou": person("lou", "Acme Research"),
            "pat": {"email": email("pat"), "name": "Pat", "groups": []},
        }),
        &[],
    )
    .await;
    let portal = PortalProcess::start_at(&gw, port, &idp.settings());

    // kim of Acme Research makes an application.
    let mut before = Visitor::with_session(&portal.base, session_of(&sso_sign_in(&portal.base, "kim").await));
    let application = before.create_application("kept", "tinyllama/open").await;
    let kim = gw.store.find_user_by_email(&email("kim")).await.unwrap().unwrap();
    let acme = kim.account_id.clone();
    assert!(signed_in(&mut before).await);

    // The provider moves kim to Beta Corp: the next sign-in lands there.
    idp.change_person("kim", person("kim", "Beta Corp"));
    let mut after = Visitor::with_session(&portal.base, session_of(&sso_sign_in(&portal.base, "kim").await));
    let moved = gw.store.find_user_by_email(&email("kim")).await.unwrap().unwrap();
    assert_ne!(moved.account_id, acme, "kim left Acme Research");
    let beta = gw.store.get_account(&moved.account_id).await.unwrap().unwrap();
    assert_eq!(beta.sso.map(|b| b.claim_value).as_deref(), Some("Beta Corp"));
    assert!(!signed_in(&mut before).await, "the session in Acme Research ended");
    assert!(signed_in(&mut after).await);
    assert_eq!(
        after.get(&format!("/applications/{application}")).await.status,
        404,
        "Acme's application is not kim's any more"
    );
    let kept = gw.store.get_application(&application).await.unwrap().unwrap();
    assert_eq!(kept.account_id, acme, "the application and its keys stay with Acme");
    let audit = audited(&gw.store, "user", &kim.id).await;
    assert!(audit.iter().any(|a| a == "move"), "{audit:?}");

    // The same organization again is no change, nor is a list of
    // organizations that holds it, whatever its order: the session stays.
    idp.change_person(
        "kim",
        json!({"email": email("kim"), "name": "kim", "org_name": ["Acme Research", "Beta Corp"], "groups": []}),
    );
    let again = sso_sign_in(&portal.base, "kim").await;
    assert!(again["session"].is_string(), "{again}");
    assert!(signed_in(&mut after).await);
    let still = gw.store.find_user_by_email(&email("kim")).await.unwrap().unwrap();
    assert_eq!(still.account_id, moved.account_id);

    // A personal account (no organization claim) whose email changes at
    // the provider is still the same person's: no move.
    sso_sign_in(&portal.base, "pat").await;
    let pat = gw.store.find_user_by_email(&email("pat")).await.unwrap().unwrap();
    idp.change_person(
        "pat",
        json!({"email": email("pat-renamed"), "name": "Pat", "groups": []}),
    );
    let renamed = sso_sign_in(&portal.base, "pat").await;
    assert!(renamed["session"].is_string(), "{renamed}");
    let pat_after = gw.store.get_user(&pat.id).await.unwrap().unwrap();
    assert_eq!(pat_after.account_id, pat.account_id);

    // With `organization_change: refuse`, the sign-in is refused with a
    // page naming both organizations, and the old sessions end too.
    drop(portal);
    let settings = format!("{}  organization_change: refuse\n", idp.settings());
    let portal = PortalProcess::start_at(&gw, port, &settings);
    let mut lou = Visitor::with_session(&portal.base, session_of(&sso_sign_in(&portal.base, "lou").await));
    let lou_user = gw.store.find_user_by_email(&email("lou")).await.unwrap().unwrap();
    assert!(signed_in(&mut lou).await);
    idp.change_person("lou", person("lou", "Gamma Labs"));
    let refused = sso_sign_in(&portal.base, "lou").await;
    assert!(refused["session"].is_null(), "{refused}");
    let page = refused["body"].as_str().unwrap_or_default();
    assert!(page.contains("Gamma Labs") && page.contains("Acme Research"), "{page}");
    assert!(!signed_in(&mut lou).await, "the session in Acme Research ended");
    let stayed = gw.store.get_user(&lou_user.id).await.unwrap().unwrap();
    assert_eq!(stayed.account_id, lou_user.account_id, "refused, not moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_whose_members_disagree_is_bound_by_an_admin_not_by_the_first_sign_in() {
    let (gw, _capture, idp, port) = company(
        json!({
            "uma": {"email": email("uma"), "name": "Uma", "org_name": "Uma Works", "groups": []},
            "vic": {"email": email("vic"), "name": "Vic", "org_name": "Vic Industries", "groups": []},
        }),
        &[],
    )
    .await;
    let portal = PortalProcess::start_at(&gw, port, &idp.settings());

    // An account from before accounts were bound, holding people of two
    // organizations.
    let legacy = gw
        .store
        .create_account(maas_store::NewAccount {
            name: "Shared Legacy".into(),
            description: String::new(),
            sso: None,
        })
        .await
        .unwrap();
    for login in ["uma", "vic"] {
        gw.store
            .create_user(maas_store::NewUser {
                account_id: legacy.id.clone(),
                email: email(login),
                display_name: login.into(),
                role: maas_store::model::UserRole::Member,
                state: maas_store::model::UserState::Active,
                sso: Some(maas_store::model::SsoIdentity {
                    issuer: idp.issuer.clone(),
                    subject: login.into(),
                }),
                password_hash: None,
                email_verified: true,
            })
            .await
            .unwrap();
    }
    let bound = || async { gw.store.get_account(&legacy.id).await.unwrap().unwrap().sso };

    // Whoever signs in first does not bind it to their organization.
    session_of(&sso_sign_in(&portal.base, "uma").await);
    assert_eq!(bound().await, None, "vic's organization is not known yet");
    let mut vic = Visitor::with_session(&portal.base, session_of(&sso_sign_in(&portal.base, "vic").await));
    assert_eq!(bound().await, None, "its members disagree");

    // An admin sees why, and splits it keeping Uma Works.
    let mut admin = Visitor::with_session(&portal.base, session_of(&sso_sign_in(&portal.base, "root").await));
    let page = admin.get("/admin/accounts").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("its members disagree")
            && page.body.contains("Uma Works")
            && page.body.contains("Vic Industries"),
        "{}",
        page.body
    );
    let split = admin
        .submit(
            "/admin/accounts",
            &format!("/admin/accounts/{}/split", legacy.id),
            &[("organization", "Uma Works")],
        )
        .await;
    assert_eq!(split.status, 303, "{}", split.body);
    assert_eq!(bound().await.map(|b| b.claim_value).as_deref(), Some("Uma Works"));
    let vic_user = gw.store.find_user_by_email(&email("vic")).await.unwrap().unwrap();
    let vic_account = gw.store.get_account(&vic_user.account_id).await.unwrap().unwrap();
    assert_eq!(
        vic_account.sso.map(|b| b.claim_value).as_deref(),
        Some("Vic Industries")
    );
    assert!(!signed_in(&mut vic).await, "vic's session in the shared account ended");

    // Binding by hand a bound account, or to an organization nobody there
    // was named, is refused with a page that says so.
    let again = admin
        .submit(
            "/admin/accounts",
            &format!("/admin/accounts/{}/bind", legacy.id),
            &[("organization", "Vic Industries")],
        )
        .await;
    assert!(again.status >= 400, "{}", again.status);
    assert_eq!(bound().await.map(|b| b.claim_value).as_deref(), Some("Uma Works"));
    let audit = audited(&gw.store, "account", &legacy.id).await;
    assert!(audit.iter().any(|a| a == "bind"), "{audit:?}");
}
