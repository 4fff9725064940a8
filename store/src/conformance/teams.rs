//! Conformance cases for teams: invitations, roles, removal.

use time::Duration;

use super::tenancy::{account, app, email, user};
use super::{Fixture, open, seed_catalog};
use crate::error::StoreError;
use crate::model::{AccountBinding, TeamRole};
use crate::store::{Joined, NewAccount, NewMember, Store};

fn newcomer(local: &str) -> NewMember {
    NewMember {
        email: email(local),
        display_name: local.into(),
        password_hash: "$argon2id$stand-in".into(),
    }
}

async fn joined(store: &Store, secret: &str, local: &str) -> crate::model::User {
    match store.join_as_new_member(secret, newcomer(local)).await.unwrap() {
        Joined::Created(user) => *user,
        Joined::EmailTaken => panic!("{local} has an account"),
    }
}

/// An owner invites by a one-time link that expires; the invited join in
/// the invitation's role; members cannot act as owners; nobody removes
/// or demotes the last owner, even two owners racing each other.
pub async fn teams_invite_by_one_time_links_and_keep_an_owner<F: Fixture>(fixture: &F) {
    let (store, clock) = open(fixture).await;
    seed_catalog(&store).await;
    let acme = account(&store, "Acme").await;
    let ada = store.create_user(user(&acme, &email("ada"))).await.unwrap();
    assert_eq!(ada.team_role, TeamRole::Owner, "an account's first user owns it");
    let bob_invite = store
        .invite(&acme, TeamRole::Member, Duration::days(7), &ada)
        .await
        .unwrap();
    assert!(bob_invite.secret.starts_with("inv-") && bob_invite.secret.len() > 40);
    assert_eq!(
        bob_invite.invitation.hash,
        crate::model::KeyHash::of(&bob_invite.secret),
        "stored hashed"
    );
    assert_eq!(store.open_invitations(&acme).await.unwrap().len(), 1);
    let (shown, to) = store.invitation(&bob_invite.secret).await.unwrap().expect("open");
    assert_eq!((shown.role, to.name.as_str()), (TeamRole::Member, "Acme"));
    assert_eq!(store.invitation("inv-made-up").await.unwrap(), None);

    // An email with an account changes nothing and leaves the link open.
    assert_eq!(
        store
            .join_as_new_member(&bob_invite.secret, newcomer("ada"))
            .await
            .unwrap(),
        Joined::EmailTaken
    );
    let bob = joined(&store, &bob_invite.secret, "bob").await;
    assert_eq!(
        (bob.account_id.as_str(), bob.team_role),
        (acme.as_str(), TeamRole::Member)
    );
    assert!(!bob.email_verified, "nobody checked the address");
    assert!(matches!(
        store.join_as_new_member(&bob_invite.secret, newcomer("eve")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store.find_user_by_email(&email("eve")).await.unwrap().is_none(),
        "used once"
    );
    assert!(store.open_invitations(&acme).await.unwrap().is_empty());

    // Members are not owners.
    assert!(matches!(
        store.invite(&acme, TeamRole::Owner, Duration::days(1), &bob).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        store.set_team_role(&acme, &bob.id, TeamRole::Owner, &bob).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        store.remove_member(&acme, &ada.id, &bob).await,
        Err(StoreError::Forbidden(_))
    ));
    // Another organization's owner is not this one's.
    let other = account(&store, "Other").await;
    let olga = store.create_user(user(&other, &email("olga"))).await.unwrap();
    assert!(matches!(
        store.remove_member(&acme, &bob.id, &olga).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        store.set_team_role(&other, &bob.id, TeamRole::Owner, &olga).await,
        Err(StoreError::NotFound { .. })
    ));

    // Expiry and cancellation.
    let late = store
        .invite(&acme, TeamRole::Member, Duration::hours(1), &ada)
        .await
        .unwrap();
    let cancelled = store
        .invite(&acme, TeamRole::Member, Duration::hours(1), &ada)
        .await
        .unwrap();
    store
        .cancel_invitation(&acme, &cancelled.invitation.id, &ada)
        .await
        .unwrap();
    assert_eq!(store.invitation(&cancelled.secret).await.unwrap(), None);
    assert!(matches!(
        store.cancel_invitation(&other, &late.invitation.id, &olga).await,
        Err(StoreError::NotFound { .. })
    ));
    clock.advance(Duration::hours(1));
    assert_eq!(store.invitation(&late.secret).await.unwrap(), None, "expired");
    assert!(matches!(
        store.join_as_new_member(&late.secret, newcomer("carl")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store.open_invitations(&acme).await.unwrap().is_empty(),
        "expired ones are dropped"
    );
    assert!(matches!(
        store.invite(&acme, TeamRole::Member, Duration::days(31), &ada).await,
        Err(StoreError::Invalid(_))
    ));

    // The last owner stays; with two, one may step down, but two racing
    // demotions cannot both win.
    assert!(matches!(
        store.set_team_role(&acme, &ada.id, TeamRole::Member, &ada).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.remove_member(&acme, &ada.id, &ada).await,
        Err(StoreError::Conflict(_))
    ));
    let bob = store
        .set_team_role(&acme, &bob.id, TeamRole::Owner, &ada)
        .await
        .unwrap();
    assert_eq!(bob.team_role, TeamRole::Owner);
    let (a, b) = tokio::join!(
        store.set_team_role(&acme, &bob.id, TeamRole::Member, &ada),
        store.set_team_role(&acme, &ada.id, TeamRole::Member, &bob),
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one demotion wins: {a:?} {b:?}");
    let owner = if a.is_ok() { ada.clone() } else { bob.clone() };
    let demoted = if a.is_ok() { bob.clone() } else { ada.clone() };

    // An owner removes a member: the user is gone, applications stay.
    let bot = app(&store, &acme, "bot", "standard").await;
    store.remove_member(&acme, &demoted.id, &owner).await.unwrap();
    assert!(store.get_user(&demoted.id).await.unwrap().is_none());
    assert!(store.get_application(&bot.id).await.unwrap().is_some());
}

/// An existing user joins only when they leave nobody and nothing behind,
/// and never out of a company-bound organization; company-bound
/// organizations take no invitations.
pub async fn joining_moves_only_users_who_leave_nothing_behind<F: Fixture>(fixture: &F) {
    let (store, _) = open(fixture).await;
    seed_catalog(&store).await;
    let acme = account(&store, "Acme").await;
    let ada = store.create_user(user(&acme, &email("ada"))).await.unwrap();
    let solo = account(&store, "Solo").await;
    let sam = store.create_user(user(&solo, &email("sam"))).await.unwrap();
    let invite = store
        .invite(&acme, TeamRole::Member, Duration::days(1), &ada)
        .await
        .unwrap();

    let lone_app = app(&store, &solo, "lone", "standard").await;
    assert!(matches!(
        store.join_as_user(&invite.secret, &sam).await,
        Err(StoreError::Forbidden(_))
    ));
    store.delete_application(&lone_app.id).await.unwrap();
    let moved = store.join_as_user(&invite.secret, &sam).await.unwrap();
    assert_eq!(
        (moved.account_id.as_str(), moved.team_role),
        (acme.as_str(), TeamRole::Member)
    );
    assert_eq!(moved.session_epoch, sam.session_epoch + 1, "their sessions end");
    assert!(store.invitation(&invite.secret).await.unwrap().is_none(), "used");
    assert!(matches!(
        store.join_as_user(&invite.secret, &moved).await,
        Err(StoreError::NotFound { .. })
    ));

    // A company sign-in user's organization is the provider's to say.
    let corp = account(&store, "Corp").await;
    let mut sso_user = user(&corp, &email("cid"));
    sso_user.sso = Some(crate::model::SsoIdentity {
        issuer: "https://idp.example".into(),
        subject: "cid".into(),
    });
    let cid = store.create_user(sso_user).await.unwrap();
    let for_cid = store
        .invite(&acme, TeamRole::Member, Duration::days(1), &ada)
        .await
        .unwrap();
    assert!(matches!(
        store.join_as_user(&for_cid.secret, &cid).await,
        Err(StoreError::Forbidden(_))
    ));

    // Not alone: refused.
    let pair = account(&store, "Pair").await;
    let pia = store.create_user(user(&pair, &email("pia"))).await.unwrap();
    store.create_user(user(&pair, &email("per"))).await.unwrap();
    let second = store
        .invite(&acme, TeamRole::Member, Duration::days(1), &ada)
        .await
        .unwrap();
    assert!(matches!(
        store.join_as_user(&second.secret, &pia).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(store.invitation(&second.secret).await.unwrap().is_some(), "still open");

    // Company-bound organizations take members from the provider alone.
    let bound = store
        .create_account(NewAccount {
            name: "Bound".into(),
            description: String::new(),
            sso: Some(AccountBinding {
                issuer: "https://idp.example".into(),
                claim_value: "bound".into(),
            }),
        })
        .await
        .unwrap();
    let bea = store.create_user(user(&bound.id, &email("bea"))).await.unwrap();
    assert!(matches!(
        store.invite(&bound.id, TeamRole::Member, Duration::days(1), &bea).await,
        Err(StoreError::Forbidden(_))
    ));
    let dan = store.create_user(user(&bound.id, &email("dan"))).await.unwrap();
    assert!(matches!(
        store.remove_member(&bound.id, &dan.id, &bea).await,
        Err(StoreError::Forbidden(_))
    ));
}
