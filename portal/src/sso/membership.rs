//! Who a company sign-in is, decided at every sign-in: the user (created
//! on the first), their role, the organization the provider names now and
//! the account that follows from it (`sso.organization_change`), and the
//! evidence an unbound account is bound by. The store holds the rules
//! (`account_for_sso`, `move_user`, `adopt_binding`); this reads the claims.

use maas_store::model::{AccountBinding, UserRole, UserState};
use maas_store::{NewUser, UserUpdate};

use super::{Identity, OrganizationChange, Sso, SsoOptions, refused};
use crate::PortalState;
use crate::render::PortalError;
use crate::session::Visitor;

/// The user the identity is, created (with its account) on first sign-in.
/// The account is the one bound to this provider and the identity's
/// organization claim (`sso.account_claim`, else its email: a personal
/// organization), never one that merely shares the name; the admin role
/// comes from the provider's claims or a **verified** email on
/// `admin.admin_emails`, decided at every sign-in.
pub(super) async fn match_user(
    state: &PortalState,
    visitor: &Visitor,
    sso: &Sso,
    identity: &Identity,
) -> Result<(maas_store::model::User, maas_store::model::Account), PortalError> {
    let store = visitor.store(state);
    let options = &sso.options;
    let email = identity
        .email
        .clone()
        .ok_or_else(|| refused("Your company account has no email address; ask an administrator to map one."))?;
    let listed = identity.email_verified
        && state
            .options()
            .admin_emails
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&email));
    let claimed = matches!((&options.admin_claim, &options.admin_value), (Some(c), Some(v)) if identity.has(c, v));
    let role = if listed || claimed {
        UserRole::Admin
    } else {
        UserRole::Member
    };
    let stated = stated_binding(identity, options, &email).map(|binding| binding.claim_value);
    let user = match store.find_user_by_sso(&identity.sso).await? {
        Some(user) => {
            let user = follow_provider(&store, user, role, stated).await?;
            follow_organization(&store, options, identity, &email, user).await?
        }
        None => {
            let user = first_sign_in(&store, options, identity, email.clone(), role).await?;
            follow_provider(&store, user, role, stated).await?
        }
    };
    match user.state {
        UserState::Active => {}
        UserState::Pending => {
            return Err(refused(
                "Welcome! Your account waits for an administrator's approval; you can sign in once it is approved.",
            ));
        }
        UserState::Disabled => return Err(refused("Your account is disabled. Ask an administrator.")),
    }
    let account = store
        .get_account(&user.account_id)
        .await?
        .ok_or_else(|| refused("Your organization no longer exists."))?;
    // An account from before accounts were bound takes the organization
    // its member's provider names now.
    let account = match stated_binding(identity, options, &email) {
        Some(binding) => store.adopt_binding(&account, &binding).await?,
        None => account,
    };
    Ok((user, account))
}

/// `user` as the provider says at this sign-in: the role (decided at
/// every sign-in) and the organization it names, kept as the evidence an
/// unbound account is bound by. One write, when either changed.
async fn follow_provider(
    store: &maas_store::Store,
    user: maas_store::model::User,
    role: UserRole,
    stated: Option<String>,
) -> Result<maas_store::model::User, PortalError> {
    let update = UserUpdate {
        role: (user.role != role).then_some(role),
        stated_organization: stated.filter(|now| user.stated_organization.as_ref() != Some(now)),
        ..UserUpdate::default()
    };
    if update.role.is_none() && update.stated_organization.is_none() {
        return Ok(user);
    }
    Ok(store.update_user(&user.id, update).await?)
}

/// The account of a returning user, after the provider moved them to
/// another organization than the one their account is bound to: per
/// `sso.organization_change`, they move to the new organization's account
/// (their sessions in the old one end; applications and keys stay with the
/// account that owns them) or the sign-in is refused (their sessions end
/// too). Both are in the audit log. An organization the provider did not
/// say (the userinfo endpoint failed and the ID token lacks the claim) is
/// no change.
async fn follow_organization(
    store: &maas_store::Store,
    options: &SsoOptions,
    identity: &Identity,
    email: &str,
    user: maas_store::model::User,
) -> Result<maas_store::model::User, PortalError> {
    let Some(now) = stated_binding(identity, options, email) else {
        return Ok(user);
    };
    let Some(account) = store.get_account(&user.account_id).await? else {
        return Ok(user);
    };
    let Some(bound) = &account.sso else {
        // Never bound: `adopt_binding` decides (a mixed account stays unbound).
        return Ok(user);
    };
    // A user in several organizations (a list claim, in any order) stays
    // while the account's is among them.
    if *bound == now || bound.issuer != now.issuer || identity.has(&options.account_claim, &bound.claim_value) {
        return Ok(user);
    }
    let personal = identity.text(&options.account_claim).is_none();
    if personal && bound.claim_value.eq_ignore_ascii_case(&user.email) {
        // Still personal: a changed email is not another organization.
        return Ok(user);
    }
    match options.organization_change {
        OrganizationChange::Move => {
            let to = store.account_for_sso(&now, &now.claim_value).await?;
            tracing::info!(user = %user.id, from = %account.id, to = %to.id, "portal: the provider moved a user to another organization");
            Ok(store.move_user(&user, &to).await?)
        }
        OrganizationChange::Refuse => {
            store.end_sessions(&user).await?;
            Err(refused(format!(
                "Your company account now belongs to another organization ({}) than your account here ({}). \
                 Ask an administrator to move you; until then you cannot sign in.",
                now.claim_value,
                account.shown_name()
            )))
        }
    }
}

/// The organization the provider states for `identity` now: its
/// `account_claim` (from userinfo, else the ID token), else its email, a
/// personal organization, when no claim is configured or the provider
/// answered with every claim and none names one; `None` when the claim
/// could not be read.
fn stated_binding(identity: &Identity, options: &SsoOptions, email: &str) -> Option<AccountBinding> {
    let stated = options.account_claim.is_empty()
        || identity.userinfo_answered
        || identity.text(&options.account_claim).is_some();
    stated.then(|| binding_of(identity, options, email))
}

/// The provider's organization of `identity`: the `account_claim` value,
/// else its email (a personal organization).
fn binding_of(identity: &Identity, options: &SsoOptions, email: &str) -> AccountBinding {
    AccountBinding {
        issuer: identity.sso.issuer.clone(),
        claim_value: identity
            .text(&options.account_claim)
            .unwrap_or_else(|| email.to_owned()),
    }
}

/// The user of an identity seen for the first time, in its
/// organization's account.
async fn first_sign_in(
    store: &maas_store::Store,
    options: &SsoOptions,
    identity: &Identity,
    email: String,
    role: UserRole,
) -> Result<maas_store::model::User, PortalError> {
    if identity.email_verified
        && let Some(released) = store.release_unverified_email(&email).await?
    {
        tracing::warn!(user = %released.id, "portal: a verified sign-in took over an email a local sign-up held unverified");
    }
    if store.find_user_by_email(&email).await?.is_some() {
        return Err(refused(
            "An account with this email signs in with a password. Sign in with it, or ask an administrator.",
        ));
    }
    let Some(binding) = stated_binding(identity, options, &email) else {
        // Guessing would bind the user to a personal account for good.
        return Err(refused(
            "Your company sign-in did not say which organization you belong to (the provider's userinfo \
             endpoint did not answer). Try again in a moment; if it keeps failing, ask an administrator.",
        ));
    };
    let account = store.account_for_sso(&binding, &binding.claim_value).await?;
    let user = store
        .create_user(NewUser {
            account_id: account.id,
            email,
            display_name: identity.name.clone().unwrap_or_default(),
            role,
            state: if options.auto_approve {
                UserState::Active
            } else {
                UserState::Pending
            },
            sso: Some(identity.sso.clone()),
            password_hash: None,
            email_verified: identity.email_verified,
        })
        .await?;
    Ok(user)
}
