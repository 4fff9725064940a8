//! An organization's page: its name, its members and their roles, and,
//! for owners, invitations by one-time link and removal; and joining an
//! organization by such a link. The rules (who may, the last owner) are
//! the store's ([`maas_store::Store::invite`] and its neighbours); this
//! shows them and says what went wrong.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maas_store::model::{Account, TeamRole, User};
use maas_store::{Joined, NewMember, Page, all_pages};
use serde::Deserialize;
use serde_json::{Value, json};
use time::Duration;

use crate::PortalState;
use crate::accounts::{MAX_EMAIL, MAX_NAME, SIGN_UP_ANSWER_FLOOR, counted_password_hash, person_problems};
use crate::developer::{signed_in, when};
use crate::render::PortalError;
use crate::security::{ClientAddress, encode_query_value};
use crate::session::{Developer, NoFields, Posted, SignedIn, Visitor};

/// How long an invitation may be made to last, in days, as offered.
const INVITATION_DAYS: [i64; 3] = [1, 7, 30];

/// Every user of account `id`.
pub(crate) async fn members(state: &PortalState, id: &str) -> Result<Vec<User>, PortalError> {
    let store = state.store();
    Ok(all_pages(|page: Page| async move { store.list_users(Some(id), &page).await }).await?)
}

/// Whether the signed-in user may change the team here (the store's rule).
fn manages_team(session: &SignedIn) -> bool {
    maas_store::manages_team(&session.user, &session.account)
}

/// The organization page, with an invitation link when one was just made.
async fn account_page(state: &PortalState, visitor: &Visitor, issued: Option<String>) -> Result<Response, PortalError> {
    let session = signed_in(visitor)?;
    let mut users = members(state, &session.account.id).await?;
    users.sort_by(|a, b| (a.team_role != TeamRole::Owner, &a.email).cmp(&(b.team_role != TeamRole::Owner, &b.email)));
    let members: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({"id": u.id, "name": u.display_name, "email": u.email, "team_role": u.team_role.as_str(),
                "state": u.state, "sso": u.sso.is_some(), "you": u.id == session.user.id,
                "last_owner": maas_store::is_last_owner(u, &users)})
        })
        .collect();
    let manages = manages_team(session);
    let invitations: Vec<Value> = if manages {
        let open = state.store().open_invitations(&session.account.id).await?;
        open.iter()
            .map(|i| {
                let by = users.iter().find(|u| u.id == i.invited_by);
                json!({"id": i.id, "role": i.role.as_str(), "expires_at": when(i.expires_at),
                    "by": by.map(|u| if u.display_name.is_empty() { u.email.clone() } else { u.display_name.clone() })})
            })
            .collect()
    } else {
        Vec::new()
    };
    let context = json!({"page": "account",
        "account": {"name": session.account.shown_name(), "description": session.account.description,
            "sso": session.account.sso.is_some()},
        "members": members, "manages": manages, "you_own": session.user.team_role == TeamRole::Owner,
        "invitations_seen": invitations.len(), "invitations": invitations,
        "invitation_days": INVITATION_DAYS, "issued": issued});
    state.page(visitor, "account.html", context)
}

pub async fn account(State(state): State<PortalState>, developer: Developer) -> Result<Response, PortalError> {
    account_page(&state, &developer.0, None).await
}

#[derive(Deserialize)]
pub struct AccountForm {
    name: String,
    #[serde(default)]
    description: String,
}

pub async fn update_account(
    State(state): State<PortalState>,
    Posted { visitor, form }: Posted<AccountForm>,
) -> Result<Response, PortalError> {
    let session = signed_in(&visitor)?;
    visitor
        .store(&state)
        .update_account_as_member(&session.account.id, form.name, form.description.trim().to_owned())
        .await?;
    Ok(visitor.redirect("/account"))
}

fn team_role(value: &str) -> Result<TeamRole, PortalError> {
    match value {
        "owner" => Ok(TeamRole::Owner),
        "member" => Ok(TeamRole::Member),
        _ => Err(PortalError::bad_request("Choose owner or member.")),
    }
}

#[derive(Deserialize)]
pub struct InvitationForm {
    role: String,
    days: i64,
    /// Open invitations when the form was shown: a form sent again (a
    /// reload of the page that showed a link) finds more and makes none.
    #[serde(default)]
    invitations_seen: Option<usize>,
}

/// Makes an invitation and shows its link, once.
pub async fn invite(
    State(state): State<PortalState>,
    Posted { visitor, form }: Posted<InvitationForm>,
) -> Result<Response, PortalError> {
    let session = signed_in(&visitor)?;
    let role = team_role(&form.role)?;
    if !INVITATION_DAYS.contains(&form.days) {
        return Err(PortalError::bad_request(
            "Choose how long the link works: 1, 7 or 30 days.",
        ));
    }
    if let Some(seen) = form.invitations_seen
        && manages_team(session)
        && state.store().open_invitations(&session.account.id).await?.len() != seen
    {
        return Ok(visitor.redirect("/account"));
    }
    let issued = visitor
        .store(&state)
        .invite(&session.account.id, role, Duration::days(form.days), &session.user)
        .await?;
    let link = format!(
        "{}/join/{}",
        state.options().public_url.trim_end_matches('/'),
        issued.secret
    );
    let mut response = account_page(&state, &visitor, Some(link)).await?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

pub async fn cancel_invitation(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, .. }: Posted<NoFields>,
) -> Result<Response, PortalError> {
    let session = signed_in(&visitor)?;
    match visitor
        .store(&state)
        .cancel_invitation(&session.account.id, &id, &session.user)
        .await
    {
        // Used or cancelled meanwhile: what was asked is done.
        Ok(()) | Err(maas_store::StoreError::NotFound { .. }) => Ok(visitor.redirect("/account")),
        Err(error) => Err(error.into()),
    }
}

#[derive(Deserialize)]
pub struct RoleForm {
    role: String,
}

pub async fn change_role(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { visitor, form }: Posted<RoleForm>,
) -> Result<Response, PortalError> {
    let session = signed_in(&visitor)?;
    let role = team_role(&form.role)?;
    visitor
        .store(&state)
        .set_team_role(&session.account.id, &id, role, &session.user)
        .await?;
    Ok(visitor.redirect("/account"))
}

/// Member `id` of the visitor's organization.
async fn fellow_member(state: &PortalState, session: &SignedIn, id: &str) -> Result<User, PortalError> {
    match state.store().get_user(id).await? {
        Some(user) if user.account_id == session.account.id => Ok(user),
        _ => Err(PortalError::not_found("No such member of your organization.")),
    }
}

/// Asks before removing member `id` (or before leaving, for one's own id).
pub async fn confirm_remove_member(
    State(state): State<PortalState>,
    developer: Developer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let session = developer.session();
    let member = fellow_member(&state, session, &id).await?;
    let leaving = member.id == session.user.id;
    if !leaving && !manages_team(session) {
        return Err(PortalError::forbidden(
            "Only the organization's owners may remove members.",
        ));
    }
    let name = if member.display_name.is_empty() {
        &member.email
    } else {
        &member.display_name
    };
    state.page(
        &developer.0,
        "member_remove.html",
        json!({"page": "account", "member": {"id": member.id, "name": name, "email": member.email},
            "leaving": leaving, "account": session.account.shown_name()}),
    )
}

pub async fn remove_member(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { mut visitor, .. }: Posted<NoFields>,
) -> Result<Response, PortalError> {
    let session = signed_in(&visitor)?.clone();
    fellow_member(&state, &session, &id).await?;
    visitor
        .store(&state)
        .remove_member(&session.account.id, &id, &session.user)
        .await?;
    if id == session.user.id {
        visitor.sign_out(&state).await?;
        return Ok(visitor.redirect("/"));
    }
    Ok(visitor.redirect("/account"))
}

/// The invitation behind a link, or a page that says it is gone.
async fn open_invitation(
    state: &PortalState,
    secret: &str,
) -> Result<(maas_store::model::Invitation, Account), PortalError> {
    state.store().invitation(secret).await?.ok_or_else(|| {
        PortalError::not_found(
            "This invitation was used, cancelled or has expired. Ask an owner of the organization for a new link.",
        )
    })
}

fn join_context(invitation: &maas_store::model::Invitation, account: &Account, secret: &str) -> Value {
    json!({"page": "join", "secret": secret, "organization": account.shown_name(),
        "role": invitation.role.as_str(), "expires_at": when(invitation.expires_at)})
}

/// The page behind an invitation link: who invites, to what; a form to
/// create an account there, or, signed in, a button to move there.
pub async fn join_page(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(secret): Path<String>,
) -> Result<Response, PortalError> {
    let (invitation, account) = open_invitation(&state, &secret).await?;
    let mut context = join_context(&invitation, &account, &secret);
    if let Some(session) = &visitor.signed_in {
        context["current"] = json!(session.account.shown_name());
        context["already"] = json!(session.account.id == account.id);
    }
    context["sign_in"] = json!(format!(
        "/sign-in?next={}",
        encode_query_value(&format!("/join/{secret}"))
    ));
    state.page(&visitor, "join.html", context)
}

#[derive(Deserialize)]
pub struct JoinForm {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// Accepts an invitation: signed in, by moving there (the store says
/// when that is not possible); otherwise by creating an account there,
/// answered the same whether or not the email had one.
pub async fn join(
    State(state): State<PortalState>,
    ClientAddress(address): ClientAddress,
    Path(secret): Path<String>,
    Posted { mut visitor, form }: Posted<JoinForm>,
) -> Result<Response, PortalError> {
    let (invitation, account) = open_invitation(&state, &secret).await?;
    if let Some(session) = visitor.signed_in.clone() {
        visitor.store(&state).join_as_user(&secret, &session.user).await?;
        // Their sessions ended with the move: a fresh one in the new organization.
        visitor.sign_out(&state).await?;
        let next = "/applications";
        let context = json!({"page": "sign-in", "next": next, "next_encoded": encode_query_value(next),
            "email": session.user.email, "sso": state.sso().map(|s| s.display_name().to_owned()),
            "notice": format!("You joined {}. Sign in again to use it.", account.shown_name())});
        return state.page(&visitor, "sign_in.html", context);
    }
    crate::accounts::local_accounts_on(&state)?;
    let problems = person_problems(&form.display_name, &form.email, &form.password, &[account.shown_name()]);
    if !problems.is_empty() {
        let mut context = join_context(&invitation, &account, &secret);
        context["error"] = json!("The account was not created:");
        context["problems"] = json!(problems);
        context["display_name"] = json!(form.display_name.chars().take(MAX_NAME).collect::<String>());
        context["email"] = json!(form.email.chars().take(MAX_EMAIL).collect::<String>());
        let mut response = state.page(&visitor, "join.html", context)?;
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(response);
    }
    let answer_at = tokio::time::Instant::now() + SIGN_UP_ANSWER_FLOOR;
    let password_hash = match counted_password_hash(&state, address, form.password).await? {
        Ok(hash) => hash,
        Err(refused) => return Ok(refused),
    };
    let email = form.email.trim().to_owned();
    let joined = visitor
        .store(&state)
        .join_as_new_member(
            &secret,
            NewMember {
                email: email.clone(),
                display_name: form.display_name.trim().to_owned(),
                password_hash,
            },
        )
        .await?;
    // The same answer, as late, whether or not the email had an account.
    tokio::time::sleep_until(answer_at).await;
    // Whether the email was new or had an account stays unsaid.
    let (Joined::Created(_) | Joined::EmailTaken) = joined;
    let notice = format!(
        "If this email had no account here, it has one now in {}: sign in with your password. If it had one, \
         sign in with that account's password, then open the invitation link again.",
        account.shown_name()
    );
    let next = "/applications";
    let context = json!({"page": "sign-in", "next": next, "next_encoded": encode_query_value(next),
        "email": email, "sso": state.sso().map(|s| s.display_name().to_owned()), "notice": notice});
    state.page(&visitor, "sign_in.html", context)
}
