//! Conformance cases for who belongs to which account: company sign-in
//! and account bindings, moved users, mixed accounts, local sign-up.

use time::Duration;

use super::tenancy::{account, app, email, user};
use super::{Fixture, open, seed_catalog};
use crate::error::StoreError;
use crate::model::{AccountBinding, SsoIdentity, UserRole, UserState};
use crate::store::{AuditQuery, LocalSignUp, NewAccount, NewUser, Page, UserUpdate};

/// Company sign-in joins the account bound to its provider and claim
/// value, never one that only shares the name; a verified email frees an
/// unverified holder's.
pub async fn company_sign_in_joins_only_bound_accounts<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let binding = AccountBinding {
        issuer: "https://idp.example.com".into(),
        claim_value: "Acme Research".into(),
    };
    // A stranger signs up first with the organization's name.
    let squatter = store
        .create_account(NewAccount {
            name: "Acme Research".into(),
            description: String::new(),
            sso: None,
        })
        .await
        .unwrap();
    store
        .create_user(NewUser {
            email_verified: false,
            ..user(&squatter.id, &email("ada"))
        })
        .await
        .unwrap();
    let bound = store.account_for_sso(&binding, "Acme Research").await.unwrap();
    assert_ne!(bound.id, squatter.id, "the squatter's account is not joined");
    assert_eq!(bound.name, "Acme Research (SSO)");
    assert_eq!(bound.sso.as_ref(), Some(&binding));
    assert_eq!(
        store.account_for_sso(&binding, "Acme Research").await.unwrap().id,
        bound.id
    );
    assert_eq!(
        store.find_account_by_binding(&binding).await.unwrap().unwrap().id,
        bound.id
    );
    // The same value from another provider is another organization.
    let other = AccountBinding {
        issuer: "https://other.example.com".into(),
        ..binding.clone()
    };
    assert_ne!(
        store.account_for_sso(&other, "Acme Research").await.unwrap().id,
        bound.id
    );
    // An account company sign-in made before accounts were bound is bound
    // by its member's claim at sign-in, never found by its name: a member
    // of another organization who renamed theirs to "Legacy" gains nothing.
    let legacy = account(&store, "Legacy").await;
    let sso = SsoIdentity {
        issuer: binding.issuer.clone(),
        subject: "legacy-1".into(),
    };
    let legacy_user = store
        .create_user(NewUser {
            sso: Some(sso),
            ..user(&legacy, &email("legacy"))
        })
        .await
        .unwrap();
    let legacy_binding = AccountBinding {
        issuer: binding.issuer.clone(),
        claim_value: "Legacy".into(),
    };
    let lookalike = store.account_for_sso(&legacy_binding, "Legacy").await.unwrap();
    assert_ne!(lookalike.id, legacy, "the name alone never binds");
    store.delete_account(&lookalike.id).await.unwrap();
    let legacy_account = store.get_account(&legacy).await.unwrap().unwrap();
    // Only once the provider named the organization for every member.
    assert_eq!(
        store.adopt_binding(&legacy_account, &legacy_binding).await.unwrap().sso,
        None
    );
    let stated = UserUpdate {
        stated_organization: Some("Legacy".into()),
        ..UserUpdate::default()
    };
    store.update_user(&legacy_user.id, stated).await.unwrap();
    let adopted = store.adopt_binding(&legacy_account, &legacy_binding).await.unwrap();
    assert_eq!(adopted.sso.as_ref(), Some(&legacy_binding));
    assert_eq!(
        store.account_for_sso(&legacy_binding, "Legacy").await.unwrap().id,
        legacy
    );
    // A bound account keeps its binding; a taken binding is not copied.
    let again = store.adopt_binding(&adopted, &binding).await.unwrap();
    assert_eq!(again.sso.as_ref(), Some(&legacy_binding));
    let other_account = account(&store, "Other Legacy").await;
    let other_account = store.get_account(&other_account).await.unwrap().unwrap();
    assert_eq!(store.adopt_binding(&other_account, &binding).await.unwrap().sso, None);
    // An account with a local member (one company sign-in once joined by
    // name) is not adopted.
    let mixed_binding = AccountBinding {
        issuer: binding.issuer.clone(),
        claim_value: "Mixed".into(),
    };
    assert_eq!(store.adopt_binding(&squatter, &mixed_binding).await.unwrap().sso, None);
    // A local sign-up's unverified email yields to a verified identity.
    let released = store.release_unverified_email(&email("ada")).await.unwrap().unwrap();
    assert_eq!(released.state, UserState::Disabled);
    assert!(released.password_hash.is_none() && released.email.ends_with("@email.invalid"));
    assert!(store.find_user_by_email(&email("ada")).await.unwrap().is_none());
    // A vouched-for email stays.
    assert!(
        store
            .release_unverified_email(&email("legacy"))
            .await
            .unwrap()
            .is_none()
    );
    // A local sign-up's organization is never refused for existing, and
    // its members see it as they named it.
    let sign_up = |email: String| LocalSignUp {
        organization: "acme research".into(),
        display_name: "Someone".into(),
        email,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
    };
    store.sign_up(sign_up(email("signs-up"))).await.unwrap();
    let signed_up = store.find_user_by_email(&email("signs-up")).await.unwrap().unwrap();
    let named = store.get_account(&signed_up.account_id).await.unwrap().unwrap();
    assert_eq!(named.shown_name(), "acme research");
    assert_ne!(named.name, "acme research", "admins' name is its own");
    assert!(!signed_up.email_verified && signed_up.role == UserRole::Member);
    // A taken email: the same answer, nothing written but the audit entry.
    let accounts_before = store.list_accounts(&Page::default()).await.unwrap().items.len();
    store.sign_up(sign_up(email("signs-up"))).await.unwrap();
    assert_eq!(
        store.list_accounts(&Page::default()).await.unwrap().items.len(),
        accounts_before
    );
    assert_eq!(
        store.find_user_by_email(&email("signs-up")).await.unwrap().unwrap(),
        signed_up
    );
    let taken = store
        .audit_log(&AuditQuery {
            entity: Some("sign_up".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = taken.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["sign_up_taken", "sign_up"], "newest first");
    assert!(!taken[0].entity_id.contains('@'), "no address in the log");
    // Members rename what they see; the unique name stays.
    let renamed = store
        .update_account_as_member(&named.id, "Acme R&D".into(), "ours".into())
        .await
        .unwrap();
    assert_eq!(
        (renamed.shown_name(), renamed.name.as_str()),
        ("Acme R&D", named.name.as_str())
    );
    assert!(matches!(
        store
            .create_account(NewAccount {
                name: "x".into(),
                description: "d".repeat(2001),
                sso: None,
            })
            .await,
        Err(StoreError::Invalid(_))
    ));
}

/// An unbound account whose members' provider names different
/// organizations (or none yet) is never bound by a sign-in; an admin binds
/// it by hand, or splits it: the others move to their organization's
/// account.
pub async fn mixed_accounts_are_bound_or_split_by_hand<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let mixed = account(&store, "Mixed Legacy").await;
    let issuer = "https://idp.example.com".to_owned();
    let member = |login: &str| NewUser {
        sso: Some(SsoIdentity {
            issuer: issuer.clone(),
            subject: login.into(),
        }),
        ..user(&mixed, &email(login))
    };
    let uma = store.create_user(member("uma")).await.unwrap();
    let vic = store.create_user(member("vic")).await.unwrap();
    let wes = store.create_user(member("wes")).await.unwrap();
    let states = |organization: &str| UserUpdate {
        stated_organization: Some(organization.into()),
        ..UserUpdate::default()
    };
    store.update_user(&uma.id, states("Acme")).await.unwrap();
    let vic = store.update_user(&vic.id, states("Beta")).await.unwrap();
    let acme = AccountBinding {
        issuer: issuer.clone(),
        claim_value: "Acme".into(),
    };
    let beta = AccountBinding {
        issuer: issuer.clone(),
        claim_value: "Beta".into(),
    };
    let account_now = || async { store.get_account(&mixed).await.unwrap().unwrap() };
    assert_eq!(
        store.adopt_binding(&account_now().await, &acme).await.unwrap().sso,
        None
    );
    assert_eq!(
        store.adopt_binding(&account_now().await, &beta).await.unwrap().sso,
        None
    );

    // Split, keeping Acme: vic moves to Beta's account, wes (no evidence) stays.
    let session = crate::store::SessionRecord::signed_in(&vic, serde_json::Map::new());
    store
        .put_session("vic-before-split", &session, Duration::hours(1))
        .await
        .unwrap();
    let (bound, moved) = store.split_account(&account_now().await, &acme).await.unwrap();
    assert_eq!(bound.sso.as_ref(), Some(&acme));
    assert_eq!(
        moved.iter().map(|u| u.id.clone()).collect::<Vec<_>>(),
        vec![vic.id.clone()]
    );
    let beta_account = store
        .find_account_by_binding(&beta)
        .await
        .unwrap()
        .expect("Beta's account");
    assert_eq!(
        store.get_user(&vic.id).await.unwrap().unwrap().account_id,
        beta_account.id
    );
    assert_eq!(store.get_user(&wes.id).await.unwrap().unwrap().account_id, mixed);
    assert_eq!(store.get_user(&uma.id).await.unwrap().unwrap().account_id, mixed);
    assert!(store.session_with_user("vic-before-split").await.unwrap().is_none());

    // By hand: a bound account, or a binding another account holds, is refused.
    assert!(matches!(
        store.bind_account(&bound, &beta).await,
        Err(StoreError::Conflict(_))
    ));
    let other = account(&store, "Other Mixed").await;
    let other = store.get_account(&other).await.unwrap().unwrap();
    assert!(matches!(
        store.bind_account(&other, &acme).await,
        Err(StoreError::Conflict(_))
    ));
    let gamma = AccountBinding {
        issuer,
        claim_value: "Gamma".into(),
    };
    assert_eq!(store.bind_account(&other, &gamma).await.unwrap().sso, Some(gamma));
}

/// A user the provider moved to another organization changes account in
/// one write: the member lists follow, the application stays with its
/// account, every session opened before ends, and the audit log says
/// `move`. Ending sessions alone works the same way.
pub async fn moved_users_change_account_and_lose_their_sessions<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    let from = account(&store, "Old Org").await;
    let to = account(&store, "New Org").await;
    let created = store.create_user(user(&from, &email("mover"))).await.unwrap();
    let application = app(&store, &from, "left-behind", "standard").await;
    let session = crate::store::SessionRecord::signed_in(&created, serde_json::Map::new());
    store
        .put_session("before-move", &session, Duration::hours(1))
        .await
        .unwrap();
    assert!(store.session_with_user("before-move").await.unwrap().is_some());

    let to_account = store.get_account(&to).await.unwrap().unwrap();
    let moved = store.move_user(&created, &to_account).await.unwrap();
    assert_eq!(moved.account_id, to);
    assert_eq!(store.get_user(&created.id).await.unwrap().unwrap(), moved);
    let members = |account: String| {
        let store = store.clone();
        async move {
            store
                .list_users(Some(&account), &Page::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|u| u.id)
                .collect::<Vec<_>>()
        }
    };
    assert!(members(from.clone()).await.is_empty());
    assert_eq!(members(to.clone()).await, vec![created.id.clone()]);
    let kept = store.get_application(&application.id).await.unwrap().unwrap();
    assert_eq!(kept.account_id, from, "applications stay with their account");
    assert!(
        store.session_with_user("before-move").await.unwrap().is_none(),
        "a session of the old account ended"
    );
    let after = crate::store::SessionRecord::signed_in(&moved, serde_json::Map::new());
    store
        .put_session("after-move", &after, Duration::hours(1))
        .await
        .unwrap();
    assert!(store.session_with_user("after-move").await.unwrap().is_some());
    // A stale copy of the user is refused, not written over.
    assert!(matches!(
        store.move_user(&created, &to_account).await,
        Err(StoreError::Conflict(_))
    ));

    let ended = store.end_sessions(&moved).await.unwrap();
    assert_eq!(ended.account_id, to);
    assert!(store.session_with_user("after-move").await.unwrap().is_none());
    let actions: Vec<String> = store
        .audit_log(&AuditQuery {
            entity: Some("user".into()),
            entity_id: Some(created.id.clone()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.contains(&"move".to_owned()) && actions.contains(&"end_sessions".to_owned()),
        "{actions:?}"
    );
}
