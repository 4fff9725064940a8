//! Class 14: claims from two sources. A provider says who someone is twice,
//! in the ID token and at the userinfo endpoint, and the two may differ or
//! one may be missing: an address and its verified flag come from the same
//! source, the organization is read from either, and a first sign-in that
//! cannot learn the organization is refused rather than guessed.

use serde_json::json;

use super::fixtures::{PortalProcess, company, email, sso_sign_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_is_verified_only_by_its_own_source_and_the_organization_is_never_guessed() {
    let (gw, _capture, idp, port) = company(
        json!({
            // The ID token names the boss's address, unverified; userinfo
            // vouches for mallory's own.
            "mallory": {
                "name": "Mallory", "org_name": "Mallory Org", "groups": [],
                "id_token": {"email": email("boss"), "email_verified": false},
                "userinfo": {"email": email("mallory"), "email_verified": true},
            },
            // Both name vera's address (spelled apart); only userinfo says
            // it is verified: it vouches for its own address, which is hers.
            "vera": {
                "name": "Vera", "org_name": "Vera Org", "groups": [],
                "id_token": {"email": email("vera"), "email_verified": null},
                "userinfo": {"email": email("vera").to_uppercase(), "email_verified": true},
            },
            // Userinfo is down; the ID token names the organization.
            "nora": {"email": email("nora"), "name": "Nora", "org_name": "Delta Corp", "groups": [], "userinfo": "fail"},
            // Userinfo is down and the ID token does not name one.
            "omar": {
                "email": email("omar"), "name": "Omar", "org_name": "Omega Corp", "groups": [],
                "userinfo": "fail", "id_token": {"org_name": null},
            },
        }),
        &[("OIDC_ID_TOKEN_CLAIMS", "scope")],
    )
    .await;
    let settings = format!(
        "admin:\n  admin_emails: [{}, {}]\n{}",
        email("boss"),
        email("vera"),
        idp.settings()
    );
    let portal = PortalProcess::start_at(&gw, port, &settings);

    let mallory = sso_sign_in(&portal.base, "mallory").await;
    assert!(mallory["session"].is_string(), "{mallory}");
    let user = gw
        .store
        .find_user_by_email(&email("boss"))
        .await
        .unwrap()
        .expect("the ID token's address");
    assert!(
        !user.email_verified,
        "userinfo's flag vouched for the ID token's address"
    );
    assert_eq!(
        user.role,
        maas_store::model::UserRole::Member,
        "an unverified address is no admin"
    );

    let vera = sso_sign_in(&portal.base, "vera").await;
    assert!(vera["session"].is_string(), "{vera}");
    let vera = gw.store.find_user_by_email(&email("vera")).await.unwrap().unwrap();
    assert!(vera.email_verified, "userinfo vouched for the same address");
    assert_eq!(vera.role, maas_store::model::UserRole::Admin);

    let nora = sso_sign_in(&portal.base, "nora").await;
    assert!(nora["session"].is_string(), "{nora}");
    let nora = gw.store.find_user_by_email(&email("nora")).await.unwrap().unwrap();
    let account = gw.store.get_account(&nora.account_id).await.unwrap().unwrap();
    assert_eq!(
        account.sso.map(|b| b.claim_value).as_deref(),
        Some("Delta Corp"),
        "the ID token's organization, not a personal account"
    );

    let omar = sso_sign_in(&portal.base, "omar").await;
    assert!(omar["session"].is_null(), "{omar}");
    let page = omar["body"].as_str().unwrap_or_default();
    assert!(page.contains("which organization"), "{page}");
    assert!(
        gw.store.find_user_by_email(&email("omar")).await.unwrap().is_none(),
        "no user bound to a guessed account"
    );
    // Once userinfo answers again, omar signs in to Omega Corp.
    idp.change_person(
        "omar",
        json!({"email": email("omar"), "name": "Omar", "org_name": "Omega Corp", "groups": []}),
    );
    let omar = sso_sign_in(&portal.base, "omar").await;
    assert!(omar["session"].is_string(), "{omar}");
    let omar = gw.store.find_user_by_email(&email("omar")).await.unwrap().unwrap();
    let account = gw.store.get_account(&omar.account_id).await.unwrap().unwrap();
    assert_eq!(account.sso.map(|b| b.claim_value).as_deref(), Some("Omega Corp"));
}
