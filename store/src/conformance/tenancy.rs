//! Conformance cases for accounts, users, applications, keys and audit.

use time::Duration;

use super::{Fixture, open, seed_catalog};
use crate::error::StoreError;
use crate::model::{ApplicationState, KeyHash, SsoIdentity, UserRole, UserState};
use crate::store::{
    Actor, ApplicationAction, ApplicationFilter, AuditQuery, NewAccount, NewApplication, NewKey, NewUser, Page,
    PlanChangeBy, Precondition, Store, UserUpdate,
};

pub(super) async fn account(store: &Store, name: &str) -> String {
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

pub(super) async fn app(store: &Store, account_id: &str, name: &str, plan: &str) -> crate::model::Application {
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

pub(super) fn user(account_id: &str, email: &str) -> NewUser {
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
    assert_eq!(context.key().unwrap().id, issued.key.id);
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

/// A key's last use only moves forward, to the minute, and goes with the
/// key: proxies flushing out of order, or after the key was deleted, can
/// neither set it back nor leave a record behind.
pub async fn key_uses_move_forward_and_go_with_the_key<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    let acme = account(&store, "Acme").await;
    let bot = app(&store, &acme, "bot", "standard").await;
    let used = store.create_key(&bot.id, NewKey::default()).await.unwrap().key.id;
    let idle = store.create_key(&bot.id, NewKey::default()).await.unwrap().key.id;
    let ids = vec![used.clone(), idle.clone(), "key_missing".to_owned()];
    assert_eq!(store.keys_last_used(&ids).await.unwrap(), vec![None, None, None]);

    let minute = |secs: i64| time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    let t = 1_800_000_000; // a whole minute
    store
        .record_key_uses(&[(used.clone(), t + 59), ("key_missing".to_owned(), t)])
        .await
        .unwrap();
    assert_eq!(
        store.keys_last_used(&ids).await.unwrap(),
        vec![Some(minute(t)), None, None],
        "rounded down to the minute; an unknown key gets no record"
    );
    store.record_key_uses(&[(used.clone(), t - 600)]).await.unwrap();
    assert_eq!(
        store.keys_last_used(&ids[..1]).await.unwrap(),
        vec![Some(minute(t))],
        "never back"
    );
    store
        .record_key_uses(&[(used.clone(), t + 61), (idle.clone(), t + 5)])
        .await
        .unwrap();
    assert_eq!(
        store.keys_last_used(&ids[..2]).await.unwrap(),
        vec![Some(minute(t + 60)), Some(minute(t))]
    );

    store.delete_key(&used).await.unwrap();
    assert_eq!(
        store.keys_last_used(&ids[..1]).await.unwrap(),
        vec![None],
        "deleted with its key"
    );
    store.record_key_uses(&[(used.clone(), t + 120)]).await.unwrap();
    assert_eq!(
        store.keys_last_used(&ids[..1]).await.unwrap(),
        vec![None],
        "a late use writes nothing"
    );
    store.delete_application(&bot.id).await.unwrap();
    assert_eq!(
        store.keys_last_used(&ids[1..2]).await.unwrap(),
        vec![None],
        "and with its application"
    );
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
