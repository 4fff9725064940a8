//! Conformance cases for accounts, users, applications, keys and audit.

use time::Duration;

use super::{Fixture, open, seed_catalog};
use crate::error::StoreError;
use crate::model::{AccountBinding, ApplicationState, KeyHash, SsoIdentity, UserRole, UserState};
use crate::store::{
    Actor, ApplicationAction, ApplicationFilter, AuditQuery, LocalSignUp, NewAccount, NewApplication, NewKey, NewUser,
    Page, PlanChangeBy, Precondition, Store, UserUpdate,
};

async fn account(store: &Store, name: &str) -> String {
    store
        .create_account(NewAccount {
            name: name.into(),
            description: String::new(),
            sso: None,
        })
        .await
        .unwrap()
        .id
}

async fn app(store: &Store, account_id: &str, name: &str, plan: &str) -> crate::model::Application {
    store
        .create_application(NewApplication {
            account_id: account_id.into(),
            name: name.into(),
            description: String::new(),
            product: "granite".into(),
            plan: plan.into(),
        })
        .await
        .unwrap()
}

/// `local` at example.com (built, so no address is written out in the source).
pub(crate) fn email(local: &str) -> String {
    [local, "example.com"].join("@")
}

fn user(account_id: &str, email: &str) -> NewUser {
    NewUser {
        account_id: account_id.into(),
        email: email.into(),
        display_name: "Dev".into(),
        role: UserRole::Member,
        state: UserState::Active,
        sso: None,
        password_hash: None,
        email_verified: true,
    }
}

/// An application's plan and state change only by the store's rules: an
/// owner's move to a plan that needs approval waits for it (the plan and
/// its limits stay), an admin's is at once, and actions repeat harmlessly.
pub async fn plan_changes_and_actions_follow_one_rule<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    let acme = account(&store, "Acme").await;
    let live = app(&store, &acme, "chatbot", "standard").await;
    assert_eq!(live.state, ApplicationState::Live);
    let asked = store
        .change_plan(&live.id, "gated", PlanChangeBy::Owner, Precondition::Any)
        .await
        .unwrap();
    assert_eq!(
        (asked.plan.as_str(), asked.state, asked.requested_plan.as_deref()),
        ("standard", ApplicationState::Live, Some("gated"))
    );
    // The key still resolves to the plan in force.
    let key = store.create_key(&live.id, NewKey::default()).await.unwrap();
    let auth = store
        .lookup_key(&KeyHash::of(key.secret.expose()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(auth.plan.system_name, "standard");
    let approved = store
        .act_on_application(&live.id, ApplicationAction::Approve, Precondition::Any)
        .await
        .unwrap();
    assert_eq!(
        (approved.plan.as_str(), approved.requested_plan.as_deref()),
        ("gated", None)
    );
    let auth = store
        .lookup_key(&KeyHash::of(key.secret.expose()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(auth.plan.system_name, "gated");
    // Approving again changes nothing; resuming a live application neither.
    let again = store
        .act_on_application(&live.id, ApplicationAction::Approve, Precondition::Any)
        .await
        .unwrap();
    assert_eq!(again, approved);
    assert_eq!(
        store
            .act_on_application(&live.id, ApplicationAction::Resume, Precondition::Any)
            .await
            .unwrap(),
        approved
    );
    // Declining leaves the plan; declining with nothing asked is a conflict.
    let back = store
        .change_plan(&live.id, "standard", PlanChangeBy::Admin, Precondition::Any)
        .await
        .unwrap();
    assert_eq!(back.plan, "standard");
    store
        .change_plan(&live.id, "gated", PlanChangeBy::Owner, Precondition::Any)
        .await
        .unwrap();
    let declined = store
        .act_on_application(&live.id, ApplicationAction::Decline, Precondition::Any)
        .await
        .unwrap();
    assert_eq!((declined.plan.as_str(), declined.requested_plan), ("standard", None));
    assert!(matches!(
        store
            .act_on_application(&live.id, ApplicationAction::Decline, Precondition::Any)
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A pending application cannot be resumed, only approved.
    let pending = app(&store, &acme, "gated-app", "gated").await;
    assert!(matches!(
        store
            .act_on_application(&pending.id, ApplicationAction::Resume, Precondition::Any)
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A stale version is refused before any rule runs.
    assert!(matches!(
        store
            .act_on_application(&pending.id, ApplicationAction::Approve, Precondition::Matches("0000"))
            .await,
        Err(StoreError::PreconditionFailed { .. })
    ));
    let audit = store
        .audit_log(&AuditQuery {
            entity_id: Some(live.id.clone()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"request_plan") && actions.contains(&"approve"),
        "{actions:?}"
    );
}

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

pub async fn accounts_and_users<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let acme = store
        .create_account(NewAccount {
            name: "Acme Corp".into(),
            description: "d".into(),
            sso: None,
        })
        .await
        .unwrap();
    assert!(acme.id.starts_with("acc_"));
    assert_eq!(store.get_account(&acme.id).await.unwrap(), Some(acme.clone()));
    assert_eq!(
        store.find_account("acme corp").await.unwrap(),
        Some(acme.clone()),
        "names are case-insensitive"
    );
    assert!(matches!(
        store
            .create_account(NewAccount {
                name: "ACME CORP".into(),
                description: String::new(),
                sso: None,
            })
            .await,
        Err(StoreError::AlreadyExists { field: "name", .. })
    ));
    assert!(matches!(
        store
            .create_account(NewAccount {
                name: "  ".into(),
                description: String::new(),
                sso: None,
            })
            .await,
        Err(StoreError::Invalid(_))
    ));
    let renamed = store
        .update_account(&acme.id, Some("Acme Inc".into()), None)
        .await
        .unwrap();
    assert_eq!(store.find_account("Acme Inc").await.unwrap(), Some(renamed));
    assert_eq!(store.find_account("Acme Corp").await.unwrap(), None);

    let mut sso_user = user(&acme.id, &email("dev"));
    sso_user.sso = Some(SsoIdentity {
        issuer: "https://sso.example.com/realms/maas".into(),
        subject: "u-1".into(),
    });
    let dev = store.create_user(sso_user).await.unwrap();
    assert_eq!(
        store.find_user_by_email(&email("dev")).await.unwrap(),
        Some(dev.clone())
    );
    let identity = dev.sso.clone().unwrap();
    assert_eq!(
        store.find_user_by_sso(&identity).await.unwrap().map(|u| u.id),
        Some(dev.id.clone())
    );
    assert!(matches!(
        store.create_user(user(&acme.id, &email("DEV"))).await,
        Err(StoreError::AlreadyExists { field: "email", .. })
    ));
    assert!(matches!(
        store.create_user(user(&acme.id, "not-an-email")).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.create_user(user("acc_missing", &email("someone"))).await,
        Err(StoreError::NotFound { .. })
    ));

    let admin = store
        .update_user(
            &dev.id,
            UserUpdate {
                role: Some(UserRole::Admin),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(admin.role, UserRole::Admin);
    let other = account(&store, "Other").await;
    store.create_user(user(&other, &email("other"))).await.unwrap();
    assert_eq!(
        store.list_users(Some(&acme.id), &Page::first(10)).await.unwrap().items,
        [admin]
    );
    assert_eq!(store.list_users(None, &Page::first(10)).await.unwrap().items.len(), 2);

    // Pages follow creation order and hand over with `next`.
    for i in 0..5 {
        account(&store, &format!("Team {i}")).await;
    }
    let first = store.list_accounts(&Page::first(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let second = store
        .list_accounts(&Page {
            after: first.next.clone(),
            limit: 3,
        })
        .await
        .unwrap();
    let third = store
        .list_accounts(&Page {
            after: second.next.clone(),
            limit: 3,
        })
        .await
        .unwrap();
    let names: Vec<String> = [first.items, second.items, third.items]
        .concat()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names.len(), 7);
    assert_eq!(names[0], "Acme Inc");
    assert!(third.next.is_none());

    store.delete_user(&dev.id).await.unwrap();
    assert_eq!(store.find_user_by_email(&email("dev")).await.unwrap(), None);
    assert_eq!(store.find_user_by_sso(&identity).await.unwrap(), None);
    store
        .create_user(user(&acme.id, &email("dev")))
        .await
        .expect("the email is free again");
}

pub async fn applications_lifecycle<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    let acme = account(&store, "Acme").await;
    let live = app(&store, &acme, "Chatbot", "standard").await;
    assert_eq!(live.state, ApplicationState::Live);
    let pending = app(&store, &acme, "Gated", "gated").await;
    assert_eq!(
        pending.state,
        ApplicationState::Pending,
        "approval_required plans start pending"
    );
    assert!(matches!(
        store
            .create_application(NewApplication {
                account_id: acme.clone(),
                name: "chatbot".into(),
                description: String::new(),
                product: "granite".into(),
                plan: "standard".into(),
            })
            .await,
        Err(StoreError::AlreadyExists { field: "name", .. })
    ));
    assert!(matches!(
        store
            .create_application(NewApplication {
                account_id: acme.clone(),
                name: "x".into(),
                description: String::new(),
                product: "granite".into(),
                plan: "platinum".into(),
            })
            .await,
        Err(StoreError::Invalid(_))
    ));

    let approved = store
        .act_on_application(&pending.id, ApplicationAction::Approve, Precondition::Any)
        .await
        .unwrap();
    assert_eq!(approved.state, ApplicationState::Live);
    let moved = store
        .change_plan(&live.id, "gated", PlanChangeBy::Admin, Precondition::Any)
        .await
        .unwrap();
    assert_eq!(moved.plan, "gated");
    assert!(matches!(
        store.delete_plan("granite", "gated").await,
        Err(StoreError::Conflict(_))
    ));
    store
        .delete_plan("granite", "standard")
        .await
        .expect("no application is on standard any more");

    let other = account(&store, "Other").await;
    let foreign = app(&store, &other, "Chatbot", "gated").await;
    let by_account = store
        .list_applications(
            &ApplicationFilter {
                account_id: Some(acme.clone()),
                ..Default::default()
            },
            &Page::first(10),
        )
        .await
        .unwrap();
    assert_eq!(by_account.items.len(), 2);
    let by_product = store
        .list_applications(
            &ApplicationFilter {
                product: Some("granite".into()),
                ..Default::default()
            },
            &Page::first(10),
        )
        .await
        .unwrap();
    assert_eq!(by_product.items.len(), 3);
    store
        .act_on_application(&foreign.id, ApplicationAction::Suspend, Precondition::Any)
        .await
        .unwrap();
    let suspended = store
        .list_applications(
            &ApplicationFilter {
                state: Some(ApplicationState::Suspended),
                ..Default::default()
            },
            &Page::first(10),
        )
        .await
        .unwrap();
    assert_eq!(
        suspended.items.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        [foreign.id.as_str()]
    );

    let key = store.create_key(&live.id, NewKey::default()).await.unwrap();
    store.delete_account(&acme).await.unwrap();
    assert_eq!(
        store.get_application(&live.id).await.unwrap(),
        None,
        "applications go with their account"
    );
    assert_eq!(
        store.lookup_key(&key.secret.hash()).await.unwrap(),
        None,
        "and so do their keys"
    );
    assert_eq!(store.find_account("Acme").await.unwrap(), None);
    assert!(store.get_application(&foreign.id).await.unwrap().is_some());
}

pub async fn key_lookup_by_hash<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    let acme = account(&store, "Acme").await;
    let bot = app(&store, &acme, "bot", "standard").await;
    let issued = store
        .create_key(
            &bot.id,
            NewKey {
                label: "ci".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let secret = issued.secret.expose().to_owned();
    assert!(secret.starts_with("sk-maas-"));
    assert_eq!(issued.key.hash, KeyHash::of(&secret));
    assert_eq!(
        issued.key.masked(),
        format!("{}…{}", &secret[..12], &secret[secret.len() - 4..])
    );

    let context = store
        .lookup_key(&KeyHash::of(&secret))
        .await
        .unwrap()
        .expect("the key resolves");
    assert_eq!(context.key.id, issued.key.id);
    assert_eq!(context.application, bot);
    assert_eq!(context.account.name, "Acme");
    assert_eq!(context.plan.system_name, "standard");
    assert_eq!(context.plan.limits[0].value, 10);
    assert_eq!(store.lookup_key(&KeyHash::of("sk-maas-unknown")).await.unwrap(), None);

    // Not-live applications still resolve: the proxy tells the caller why it refuses.
    store
        .act_on_application(&bot.id, ApplicationAction::Suspend, Precondition::Any)
        .await
        .unwrap();
    let context = store.lookup_key(&KeyHash::of(&secret)).await.unwrap().unwrap();
    assert_eq!(context.application.state, ApplicationState::Suspended);

    let second = store.create_key(&bot.id, NewKey::default()).await.unwrap();
    let keys = store.application_keys(&bot.id).await.unwrap();
    assert_eq!(keys.len(), 2, "an application holds several keys");
    assert!(store.lookup_key(&second.secret.hash()).await.unwrap().is_some());
    assert!(matches!(
        store.create_key("app_missing", NewKey::default()).await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn revoked_and_expired_keys_are_not_found<F: Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    seed_catalog(&store).await;
    let acme = account(&store, "Acme").await;
    let bot = app(&store, &acme, "bot", "standard").await;

    let revoked = store.create_key(&bot.id, NewKey::default()).await.unwrap();
    assert!(store.lookup_key(&revoked.secret.hash()).await.unwrap().is_some());
    let record = store.revoke_key(&revoked.key.id).await.unwrap();
    assert!(record.revoked_at.is_some());
    assert_eq!(store.lookup_key(&revoked.secret.hash()).await.unwrap(), None);
    assert!(
        store
            .get_key(&revoked.key.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some(),
        "still listed"
    );

    let expires = clock_now(&store) + Duration::hours(1);
    let expiring = store
        .create_key(
            &bot.id,
            NewKey {
                label: String::new(),
                expires_at: Some(expires),
            },
        )
        .await
        .unwrap();
    clock.advance(Duration::minutes(59));
    assert!(store.lookup_key(&expiring.secret.hash()).await.unwrap().is_some());
    clock.advance(Duration::minutes(1));
    assert_eq!(
        store.lookup_key(&expiring.secret.hash()).await.unwrap(),
        None,
        "expired at the stroke of its expiry"
    );
    assert!(matches!(
        store
            .create_key(
                &bot.id,
                NewKey {
                    label: String::new(),
                    expires_at: Some(clock_now(&store))
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));

    let deleted = store.create_key(&bot.id, NewKey::default()).await.unwrap();
    store.delete_key(&deleted.key.id).await.unwrap();
    assert_eq!(store.lookup_key(&deleted.secret.hash()).await.unwrap(), None);
    assert_eq!(store.get_key(&deleted.key.id).await.unwrap(), None);
}

fn clock_now(store: &Store) -> time::OffsetDateTime {
    store.clock().now()
}

pub async fn key_rotation_overlaps<F: Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    seed_catalog(&store).await;
    let acme = account(&store, "Acme").await;
    let bot = app(&store, &acme, "bot", "standard").await;
    let old = store
        .create_key(
            &bot.id,
            NewKey {
                label: "prod".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let new = store.rotate_key(&old.key.id, Duration::minutes(10)).await.unwrap();
    assert_eq!(new.key.label, "prod");
    assert!(
        store.lookup_key(&old.secret.hash()).await.unwrap().is_some(),
        "the old key works during the grace period"
    );
    assert!(store.lookup_key(&new.secret.hash()).await.unwrap().is_some());
    clock.advance(Duration::minutes(10));
    assert_eq!(
        store.lookup_key(&old.secret.hash()).await.unwrap(),
        None,
        "and not after it"
    );
    assert!(store.lookup_key(&new.secret.hash()).await.unwrap().is_some());
    assert!(matches!(
        store.rotate_key(&old.key.id, Duration::minutes(1)).await,
        Err(StoreError::Conflict(_))
    ));
}

pub async fn audit_log_records_changes_without_secrets<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    let admin = store.as_actor(Actor::new("admin_token", "tok_1", Some("127.0.0.1".into())));
    let acme = account(&admin, "Acme").await;
    let bot = app(&admin, &acme, "bot", "standard").await;
    admin
        .act_on_application(&bot.id, ApplicationAction::Suspend, Precondition::Any)
        .await
        .unwrap();
    let issued = admin.create_key(&bot.id, NewKey::default()).await.unwrap();
    let mut local = user(&acme, &email("local"));
    local.password_hash = Some("$argon2id$v=19$secret-material".into());
    admin.create_user(local).await.unwrap();

    let app_entries = store
        .audit_log(&AuditQuery {
            entity: Some("application".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(app_entries.len(), 2);
    assert_eq!(app_entries[0].action, "suspend", "newest first, named by the action");
    assert_eq!(
        app_entries[0].actor,
        Actor::new("admin_token", "tok_1", Some("127.0.0.1".into()))
    );
    assert_eq!(app_entries[0].before.as_ref().unwrap()["state"], "live");
    assert_eq!(app_entries[0].after.as_ref().unwrap()["state"], "suspended");
    assert_eq!(app_entries[1].action, "create");

    let everything = store
        .audit_log(&AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        everything
            .iter()
            .any(|e| e.entity == "plan" && e.actor.kind == "system"),
        "catalog writes are audited too"
    );
    let dump = serde_json::to_string(&everything).unwrap();
    assert!(!dump.contains(issued.secret.expose()), "no key secret in the audit log");
    assert!(
        !dump.contains(&issued.key.hash.to_hex()),
        "no key hash in the audit log"
    );
    assert!(!dump.contains("secret-material"), "no password hash in the audit log");

    let page = store
        .audit_log(&AuditQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let next = store
        .audit_log(&AuditQuery {
            limit: 2,
            before: Some(page[1].id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next[0].id, everything[2].id, "pages continue where the last one ended");
}

/// Admin tokens: found by the hash of their secret, listed without it,
/// gone once deleted, and never in the audit log in clear or hashed.
pub async fn admin_tokens_round_trip<F: Fixture>(fixture: &F) {
    use crate::model::AdminScope;
    let (store, _) = open(fixture).await;
    let (token, secret) = store.create_admin_token(" ci ", AdminScope::Read).await.unwrap();
    assert_eq!(token.name, "ci");
    assert!(secret.expose().starts_with(crate::store::ADMIN_TOKEN_PREFIX));
    let found = store.lookup_admin_token(&KeyHash::of(secret.expose())).await.unwrap();
    assert_eq!(found.as_ref().map(|t| t.scope), Some(AdminScope::Read));
    assert!(
        store
            .lookup_admin_token(&KeyHash::of("maas-admin-wrong"))
            .await
            .unwrap()
            .is_none()
    );
    let (second, _) = store.create_admin_token("deploy", AdminScope::Write).await.unwrap();
    let listed: Vec<String> = store
        .list_admin_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(listed, ["ci", "deploy"]);
    assert!(matches!(
        store.create_admin_token("", AdminScope::Read).await,
        Err(StoreError::Invalid(_))
    ));
    store.delete_admin_token(&token.id).await.unwrap();
    assert!(
        store
            .lookup_admin_token(&KeyHash::of(secret.expose()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.delete_admin_token(&token.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.list_admin_tokens().await.unwrap(), [second]);
    let audit = store
        .audit_log(&crate::store::AuditQuery {
            entity: Some("admin_token".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let text = serde_json::to_string(&audit).unwrap();
    assert_eq!(audit.len(), 3, "two creations and a deletion");
    assert!(
        !text.contains(secret.expose()) && !text.contains(&token.hash.to_string()),
        "{text}"
    );
}
