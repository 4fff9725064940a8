//! Conformance cases for the applications of token clients: one per
//! (organization, product, client), made on the first call, following the
//! plan the token's groups give.

use super::tenancy::app;
use super::{Fixture, open, seed_catalog};
use crate::model::{AccountBinding, ApplicationState, AuthMethod, TokenPlanRule};
use crate::store::{ApplicationAction, ApplicationFilter, NewApplication, Page, Precondition};

/// A client's first calls, even at once, make one live application; the
/// same client in another organization gets its own; a group change
/// moves the plan; a suspended application stays suspended; a deleted
/// one is made again; someone's application holding the name is kept.
pub async fn token_clients_get_one_application_each<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    let acme = store
        .account_for_sso(
            &AccountBinding {
                issuer: "https://idp.example.com".into(),
                claim_value: "Acme".into(),
            },
            "Acme",
        )
        .await
        .unwrap();
    // Someone already named an application as the client's would be.
    let squatter = app(&store, &acme.id, "ci-bot (granite)", "standard").await;

    let calls = (0..8).map(|_| {
        let store = store.clone();
        let acme = acme.clone();
        tokio::spawn(async move {
            store
                .application_for_token_client(&acme, "granite", "ci-bot", "standard")
                .await
                .unwrap()
        })
    });
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "concurrent first calls made one application: {ids:?}");
    let made = store.get_application(&ids[0]).await.unwrap().unwrap();
    assert_ne!(made.id, squatter.id);
    assert_eq!(made.name, "ci-bot (granite) 2");
    assert_eq!(
        made.state,
        ApplicationState::Live,
        "the plan is gated, but token_plans approved it"
    );
    assert_eq!(made.token_client.as_deref(), Some("ci-bot"));
    assert_eq!(
        (made.plan.as_str(), made.account_id.as_str()),
        ("standard", acme.id.as_str())
    );
    let listed = store
        .list_applications(
            &ApplicationFilter {
                account_id: Some(acme.id.clone()),
                ..ApplicationFilter::default()
            },
            &Page::first(10),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);

    // The groups now give another plan: the application follows.
    let moved = store
        .application_for_token_client(&acme, "granite", "ci-bot", "gated")
        .await
        .unwrap();
    assert_eq!((moved.id.as_str(), moved.plan.as_str()), (made.id.as_str(), "gated"));
    assert_eq!(moved.state, ApplicationState::Live);

    // Another organization's client of the same id is another application.
    let globex = store
        .account_for_sso(
            &AccountBinding {
                issuer: "https://idp.example.com".into(),
                claim_value: "Globex".into(),
            },
            "Globex",
        )
        .await
        .unwrap();
    let theirs = store
        .application_for_token_client(&globex, "granite", "ci-bot", "standard")
        .await
        .unwrap();
    assert_ne!(theirs.id, made.id);
    assert_eq!(theirs.name, "ci-bot (granite)");

    // An admin's suspension holds.
    store
        .act_on_application(&made.id, ApplicationAction::Suspend, Precondition::Any)
        .await
        .unwrap();
    let again = store
        .application_for_token_client(&acme, "granite", "ci-bot", "gated")
        .await
        .unwrap();
    assert_eq!(
        (again.id.as_str(), again.state),
        (made.id.as_str(), ApplicationState::Suspended)
    );

    // The people who called as it are noted once each, for statistics.
    for user in ["grace", "ada", "grace"] {
        store.note_token_user(&made.id, user).await.unwrap();
    }
    assert_eq!(store.token_users(&made.id, 10).await.unwrap(), ["ada", "grace"]);
    assert_eq!(store.token_users(&made.id, 1).await.unwrap(), ["ada"]);

    // Deleted, it is made again on the next call, with nobody noted.
    store.delete_application(&made.id).await.unwrap();
    assert!(store.token_users(&made.id, 10).await.unwrap().is_empty());
    store.note_token_user(&made.id, "late").await.unwrap();
    assert!(
        store.token_users(&made.id, 10).await.unwrap().is_empty(),
        "a deleted application notes no one"
    );
    let remade = store
        .application_for_token_client(&acme, "granite", "ci-bot", "standard")
        .await
        .unwrap();
    assert_ne!(remade.id, made.id);
    assert_eq!(remade.state, ApplicationState::Live);
    assert_eq!(
        store.get_application(&squatter.id).await.unwrap().unwrap().name,
        "ci-bot (granite)"
    );
    assert!(
        store
            .application_for_token_client(&acme, "granite", "ci-bot", "no-such-plan")
            .await
            .is_err(),
        "a plan the product lacks is refused"
    );

    // A product of tokens only has no subscriptions with keys: its token
    // clients' applications are the only ones.
    // (Rules name plans, plans name their product: the product first.)
    let mut tokens_only = super::product("omega", "vllm");
    store.put_product(tokens_only.clone()).await.unwrap();
    store
        .put_plan(super::plan("omega", "open", serde_json::json!([])))
        .await
        .unwrap();
    tokens_only.auth = vec![AuthMethod::Oidc];
    tokens_only.token_plans = vec![TokenPlanRule {
        group: None,
        plan: "open".into(),
    }];
    store.put_product(tokens_only).await.unwrap();
    let refused = store
        .create_application(NewApplication {
            account_id: acme.id.clone(),
            name: "keyed".into(),
            description: String::new(),
            product: "omega".into(),
            plan: "open".into(),
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("access tokens"), "{refused}");
    let made = store
        .application_for_token_client(&acme, "omega", "ci-bot", "open")
        .await
        .unwrap();
    assert_eq!(made.token_client.as_deref(), Some("ci-bot"));
}
