//! Conformance cases for a user's own account: their sessions listed and
//! ended, password changes and an admin's one-time reset links.

use time::Duration;

use super::tenancy::{account, email, user};
use super::{Fixture, open};
use crate::error::StoreError;
use crate::model::SsoIdentity;
use crate::store::{SessionRecord, Store};

async fn session(store: &Store, user: &crate::model::User, id: &str, agent: &str) {
    let record = SessionRecord::signed_in(user, Default::default());
    store.put_session(id, &record, Duration::hours(8)).await.unwrap();
    store
        .list_session(user, id, Some("192.0.2.7".into()), agent, Duration::hours(8))
        .await
        .unwrap();
}

/// A user sees their open sessions (never their ids), ends one, and a
/// password change ends them all; other users' sessions are not theirs.
pub async fn users_list_and_end_their_own_sessions<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    let acme = account(&store, "Acme").await;
    let ada = store.create_user(user(&acme, &email("ada"))).await.unwrap();
    let bob = store.create_user(user(&acme, &email("bob"))).await.unwrap();
    session(&store, &ada, "laptop-session", "Firefox\u{7}").await;
    session(&store, &ada, "phone-session", "Safari").await;
    session(&store, &bob, "bob-session", "Chrome").await;
    let listed = store.user_sessions(&ada).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].is_session("laptop-session") && listed[1].is_session("phone-session"));
    assert_eq!(listed[0].agent, "Firefox", "control characters dropped");
    assert_eq!(listed[0].ip.as_deref(), Some("192.0.2.7"));
    assert!(
        !serde_json::to_string(&listed).unwrap().contains("laptop-session"),
        "never the id"
    );

    // Bob cannot end Ada's session by its handle.
    assert!(!store.end_user_session(&bob, &listed[1].handle).await.unwrap());
    assert!(store.get_session("phone-session").await.unwrap().is_some());
    assert!(store.end_user_session(&ada, &listed[1].handle).await.unwrap());
    assert!(store.get_session("phone-session").await.unwrap().is_none());
    // Signed out elsewhere: drops out of the list.
    store.delete_session("laptop-session").await.unwrap();
    assert!(store.user_sessions(&ada).await.unwrap().is_empty());

    session(&store, &ada, "again", "Firefox").await;
    let ada = store.change_password(&ada, "$argon2id$new".into()).await.unwrap();
    assert_eq!(ada.password_hash.as_deref(), Some("$argon2id$new"));
    let audit = store
        .audit_log(&crate::store::AuditQuery {
            entity_id: Some(ada.id.clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit[0].action, "change_password");
    assert!(
        !serde_json::to_string(&audit).unwrap().contains("argon2id"),
        "no hash in the audit log"
    );
    assert!(store.session_with_user("again").await.unwrap().is_none(), "ended");
    assert!(store.user_sessions(&ada).await.unwrap().is_empty());
    assert_eq!(store.user_sessions(&bob).await.unwrap().len(), 1, "Bob's stay");
}

/// An admin's reset link works once, until it expires; a newer one
/// replaces it; it ends the user's sessions; company sign-in users get
/// none.
pub async fn password_reset_links_work_once<F: Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    let acme = account(&store, "Acme").await;
    let mut new = user(&acme, &email("ada"));
    new.password_hash = Some("$argon2id$old".into());
    let ada = store.create_user(new).await.unwrap();
    session(&store, &ada, "ada-session", "Firefox").await;

    let first = store.issue_password_reset(&ada.id, Duration::days(1)).await.unwrap();
    assert!(first.starts_with("pwr-"));
    let second = store.issue_password_reset(&ada.id, Duration::days(1)).await.unwrap();
    assert_eq!(store.password_reset_user(&first).await.unwrap(), None, "replaced");
    assert_eq!(store.password_reset_user(&second).await.unwrap().unwrap().id, ada.id);
    let reset = store.reset_password(&second, "$argon2id$reset".into()).await.unwrap();
    assert_eq!(reset.password_hash.as_deref(), Some("$argon2id$reset"));
    assert!(
        store.session_with_user("ada-session").await.unwrap().is_none(),
        "sessions end"
    );
    assert!(matches!(
        store.reset_password(&second, "$argon2id$again".into()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.reset_password("pwr-made-up", "$argon2id$x".into()).await,
        Err(StoreError::NotFound { .. })
    ));

    let late = store.issue_password_reset(&ada.id, Duration::hours(1)).await.unwrap();
    clock.advance(Duration::hours(1));
    assert!(matches!(
        store.reset_password(&late, "$argon2id$late".into()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.issue_password_reset(&ada.id, Duration::days(8)).await,
        Err(StoreError::Invalid(_))
    ));

    let mut company = user(&acme, &email("cid"));
    company.sso = Some(SsoIdentity {
        issuer: "https://idp.example".into(),
        subject: "cid".into(),
    });
    let cid = store.create_user(company).await.unwrap();
    assert!(matches!(
        store.issue_password_reset(&cid.id, Duration::days(1)).await,
        Err(StoreError::Conflict(_))
    ));
}
