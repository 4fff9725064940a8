//! Teams: owners invite people by one-time links, change members' roles
//! and remove them; an organization never loses its last owner.
//!
//! The rules live here, for the portal and any other caller: the acting
//! user is read again (a session's copy may be stale), must be an active
//! owner of the organization, and the organization must not be bound to a
//! company identity provider, whose members come from the provider alone.
//! A change that could leave no owner requires every other owner's record
//! unchanged, so two owners demoting each other at once cannot both win.

use time::Duration;

use super::tenancy::{NewUser, user_record, user_writes};
use super::{Store, decode, encode, now_ms};
use crate::backend::{Condition, WriteBatch};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::ids::{hex, new_id, random_bytes};
use crate::model::{Account, Invitation, KeyHash, TeamRole, User, UserRole, UserState};

/// Invitations an organization may have open at once.
pub const MAX_OPEN_INVITATIONS: usize = 50;
/// The longest an invitation may stay valid.
pub const MAX_INVITATION_TTL: Duration = Duration::days(30);
/// How an invitation's secret begins (recognisable in a leaked link).
pub const INVITATION_PREFIX: &str = "inv-";

fn invitation_record(hash: &KeyHash) -> String {
    format!("invite:{hash}")
}

fn invitation_index(id: &str) -> String {
    format!("invite-id:{id}")
}

fn invitations_of(account_id: &str) -> String {
    format!("account-invites:{account_id}")
}

/// A new invitation: the secret exists only here, shown to its owner once.
#[derive(Debug)]
pub struct IssuedInvitation {
    pub invitation: Invitation,
    pub secret: String,
}

/// Who accepts an invitation without an account: a local sign-up into the
/// inviting organization.
#[derive(Debug, Clone)]
pub struct NewMember {
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
}

/// What accepting an invitation as a new member did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The user was created in the organization.
    Created(Box<User>),
    /// The email has an account already: nothing was done, and the
    /// invitation is still open (the caller answers as if it were new, so
    /// the form tells no one which addresses have accounts).
    EmailTaken,
}

fn forbidden(message: &str) -> StoreError {
    StoreError::Forbidden(message.to_owned())
}

/// Whether `user` counts as one of their organization's owners: an
/// owner whose account is active (the owners a team must keep one of).
pub fn is_owner(user: &User) -> bool {
    user.team_role == TeamRole::Owner && user.state == UserState::Active
}

/// Whether `user` may change `account`'s team: one of its owners, in an
/// organization that takes members by invitation (not one bound to a
/// company identity provider, whose members come from the provider).
pub fn manages_team(user: &User, account: &Account) -> bool {
    user.account_id == account.id && is_owner(user) && account.sso.is_none()
}

/// Whether `member` is the only owner among `members` (so can neither step
/// down nor leave).
pub fn is_last_owner(member: &User, members: &[User]) -> bool {
    is_owner(member) && !members.iter().any(|other| other.id != member.id && is_owner(other))
}

impl Store {
    /// `by`, read again, if they are an active owner of `account_id` and
    /// the account takes its members from invitations (it is not bound to
    /// a company identity provider); the account.
    async fn owner_acting(&self, account_id: &str, by: &User) -> StoreResult<(Account, User)> {
        let account = self
            .get_account(account_id)
            .await?
            .ok_or_else(|| StoreError::not_found("account", account_id))?;
        let owner = self.get_user(&by.id).await?;
        let Some(owner) = owner.filter(|u| u.account_id == account.id && is_owner(u)) else {
            return Err(forbidden("only the organization's owners may change its members"));
        };
        if account.sso.is_some() {
            return Err(forbidden(
                "this organization's members come from the company sign-in: its administrators change them there",
            ));
        }
        Ok((account, owner))
    }

    /// An invitation to `account_id` in `role`, valid for `ttl` (at most
    /// [`MAX_INVITATION_TTL`]), made by the owner `by`.
    pub async fn invite(
        &self,
        account_id: &str,
        role: TeamRole,
        ttl: Duration,
        by: &User,
    ) -> StoreResult<IssuedInvitation> {
        let (account, owner) = self.owner_acting(account_id, by).await?;
        if ttl <= Duration::ZERO || ttl > MAX_INVITATION_TTL {
            return Err(StoreError::invalid(
                "expires",
                "an invitation lasts from a minute to 30 days",
            ));
        }
        if self.open_invitations(&account.id).await?.len() >= MAX_OPEN_INVITATIONS {
            return Err(StoreError::Conflict(format!(
                "{MAX_OPEN_INVITATIONS} invitations are open already: cancel some first"
            )));
        }
        let now = self.now();
        let secret = format!("{INVITATION_PREFIX}{}", hex(&random_bytes::<24>()));
        let invitation = Invitation {
            id: new_id("inv", now_ms(now)),
            account_id: account.id.clone(),
            role,
            hash: KeyHash::of(&secret),
            invited_by: owner.id.clone(),
            created_at: now,
            expires_at: now + ttl,
        };
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Exists(format!("account:{}", account.id)))
            .require(Condition::Absent(invitation_record(&invitation.hash)))
            .put(invitation_record(&invitation.hash), encode(&invitation)?)
            .put(invitation_index(&invitation.id), encode(&invitation.hash)?)
            .add_member(invitations_of(&account.id), invitation.id.clone());
        let audit = vec![self.audit_entry("invite", "invitation", &invitation.id, None, Some(&invitation))];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict("the organization changed meanwhile; try again".into()))?;
        Ok(IssuedInvitation { invitation, secret })
    }

    /// The account's invitations not yet used nor expired, oldest first;
    /// expired ones are deleted on the way.
    pub async fn open_invitations(&self, account_id: &str) -> StoreResult<Vec<Invitation>> {
        let ids = self.all_members(&invitations_of(account_id)).await?;
        let index: Vec<String> = ids.iter().map(|id| invitation_index(id)).collect();
        let hashes = self.get_many_json::<KeyHash>(&index).await?;
        let records: Vec<String> = hashes.iter().flatten().map(invitation_record).collect();
        let now = self.now();
        let mut open = Vec::new();
        for invitation in self.get_many_json::<Invitation>(&records).await?.into_iter().flatten() {
            if invitation.expires_at > now {
                open.push(invitation);
            } else {
                let mut forget = WriteBatch::default();
                stage_invitation_delete(&mut forget, &invitation);
                let _ = self.backend.commit(forget).await?;
            }
        }
        // Ids the records are gone for (used meanwhile) leave the index.
        for (id, hash) in ids.iter().zip(&hashes) {
            if hash.is_none() {
                let mut forget = WriteBatch::default();
                forget.remove_member(invitations_of(account_id), id.clone());
                let _ = self.backend.commit(forget).await?;
            }
        }
        open.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(open)
    }

    /// The open invitation whose secret is `secret`, with its account.
    pub async fn invitation(&self, secret: &str) -> StoreResult<Option<(Invitation, Account)>> {
        if !secret.starts_with(INVITATION_PREFIX) || secret.len() > 200 {
            return Ok(None);
        }
        let record = invitation_record(&KeyHash::of(secret));
        let Some(bytes) = self.backend.get(&record).await? else {
            return Ok(None);
        };
        let invitation: Invitation = decode(&record, &bytes)?;
        if invitation.expires_at <= self.now() {
            return Ok(None);
        }
        Ok(self
            .get_account(&invitation.account_id)
            .await?
            .map(|account| (invitation, account)))
    }

    /// Cancels invitation `id` of `account_id` (an owner's act).
    pub async fn cancel_invitation(&self, account_id: &str, id: &str, by: &User) -> StoreResult<()> {
        self.owner_acting(account_id, by).await?;
        let hash = self.get_json::<KeyHash>(&invitation_index(id)).await?;
        let invitation = match hash {
            Some(hash) => self.get_json::<Invitation>(&invitation_record(&hash)).await?,
            None => None,
        };
        let Some(invitation) = invitation.filter(|i| i.account_id == account_id) else {
            return Err(StoreError::not_found("invitation", id));
        };
        let mut batch = WriteBatch::default();
        batch.require(Condition::Exists(invitation_record(&invitation.hash)));
        stage_invitation_delete(&mut batch, &invitation);
        let audit = vec![self.audit_entry("cancel", "invitation", id, Some(&invitation), None)];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::not_found("invitation", id))
    }

    /// Accepts the invitation `secret` as someone without an account: in
    /// one write, the invitation is used up and the user created in its
    /// organization with its role, unless the email has an account
    /// ([`Joined::EmailTaken`]: nothing happens).
    pub async fn join_as_new_member(&self, secret: &str, new: NewMember) -> StoreResult<Joined> {
        let Some((invitation, account)) = self.invitation(secret).await? else {
            return Err(StoreError::not_found("invitation", "(from the link)"));
        };
        let mut user = user_record(
            NewUser {
                account_id: account.id.clone(),
                email: new.email,
                display_name: new.display_name,
                role: UserRole::Member,
                state: UserState::Active,
                sso: None,
                password_hash: Some(new.password_hash),
                // Nobody checked that the address is the visitor's.
                email_verified: false,
            },
            self.now(),
        )?;
        user.team_role = invitation.role;
        // Condition 0: the invitation is still there; 1: the account; 2: the email is free.
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Exists(invitation_record(&invitation.hash)))
            .require(Condition::Exists(format!("account:{}", account.id)));
        stage_invitation_delete(&mut batch, &invitation);
        user_writes(&mut batch, &user)?;
        let audit = vec![
            self.audit_entry("accept", "invitation", &invitation.id, Some(&invitation), None),
            self.audit_entry("create", "user", &user.id, None, Some(&user)),
        ];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok(Joined::Created(Box::new(user))),
            Err(failed) if failed.0 == 2 => Ok(Joined::EmailTaken),
            Err(_) => Err(StoreError::not_found("invitation", "(from the link)")),
        }
    }

    /// Accepts the invitation `secret` as `user`, who has an account: they
    /// move to its organization with its role and their sessions end. Only
    /// a local user alone in an organization without applications may
    /// (anyone else would leave people or applications without them).
    pub async fn join_as_user(&self, secret: &str, user: &User) -> StoreResult<User> {
        let Some((invitation, account)) = self.invitation(secret).await? else {
            return Err(StoreError::not_found("invitation", "(from the link)"));
        };
        let user = self
            .get_user(&user.id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", &user.id))?;
        if user.account_id == account.id {
            return Err(StoreError::Conflict(format!(
                "you are a member of {} already",
                account.shown_name()
            )));
        }
        if user.sso.is_some() {
            return Err(forbidden(
                "your organization comes from the company sign-in; an invitation cannot change it",
            ));
        }
        let others = self.all_members(&format!("account-users:{}", user.account_id)).await?;
        if others.iter().any(|id| *id != user.id) {
            return Err(forbidden(
                "you are not alone in your organization: an owner there removes you first",
            ));
        }
        if !self
            .all_members(&format!("account-apps:{}", user.account_id))
            .await?
            .is_empty()
        {
            return Err(forbidden(
                "your organization still has applications: delete them first, or invite the others to it",
            ));
        }
        let mut after = user.clone();
        after.account_id = account.id.clone();
        after.team_role = invitation.role;
        after.session_epoch = user.session_epoch.wrapping_add(1);
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Exists(invitation_record(&invitation.hash)))
            .require(Condition::Exists(format!("account:{}", account.id)))
            .require(Condition::Equals(format!("user:{}", user.id), encode(&user)?))
            .put(format!("user:{}", user.id), encode(&after)?)
            .remove_member(format!("account-users:{}", user.account_id), user.id.clone())
            .add_member(format!("account-users:{}", account.id), user.id.clone())
            .publish(Change::User { id: user.id.clone() });
        stage_invitation_delete(&mut batch, &invitation);
        let audit = vec![
            self.audit_entry("accept", "invitation", &invitation.id, Some(&invitation), None),
            self.audit_entry("move", "user", &user.id, Some(&user), Some(&after)),
        ];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok(after),
            Err(failed) if failed.0 < 2 => Err(StoreError::not_found("invitation", "(from the link)")),
            Err(_) => Err(StoreError::Conflict(format!(
                "user `{}` changed meanwhile; try again",
                user.id
            ))),
        }
    }

    /// Gives member `member_id` of `account_id` the role `role` (an
    /// owner's act); the last owner cannot step down.
    pub async fn set_team_role(
        &self,
        account_id: &str,
        member_id: &str,
        role: TeamRole,
        by: &User,
    ) -> StoreResult<User> {
        let (account, _) = self.owner_acting(account_id, by).await?;
        let member = self.member(&account, member_id).await?;
        if member.team_role == role {
            return Ok(member);
        }
        let mut after = member.clone();
        after.team_role = role;
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(format!("user:{member_id}"), encode(&member)?))
            .put(format!("user:{member_id}"), encode(&after)?)
            .publish(Change::User {
                id: member_id.to_owned(),
            });
        if role == TeamRole::Member {
            self.require_another_owner(&mut batch, &account, &member).await?;
        }
        let audit = vec![self.audit_entry("update", "user", member_id, Some(&member), Some(&after))];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict("the team changed meanwhile; try again".into()))?;
        Ok(after)
    }

    /// Removes member `member_id` from `account_id` (an owner's act, or a
    /// member leaving): their user is deleted, so they can neither sign in
    /// nor keep a session; the organization's applications stay. The last
    /// owner cannot go.
    pub async fn remove_member(&self, account_id: &str, member_id: &str, by: &User) -> StoreResult<()> {
        let account = if by.id == member_id {
            self.get_account(account_id)
                .await?
                .ok_or_else(|| StoreError::not_found("account", account_id))?
        } else {
            self.owner_acting(account_id, by).await?.0
        };
        if account.sso.is_some() {
            return Err(forbidden(
                "this organization's members come from the company sign-in: its administrators change them there",
            ));
        }
        let member = self.member(&account, member_id).await?;
        let mut batch = WriteBatch::default();
        batch.require(Condition::Equals(format!("user:{member_id}"), encode(&member)?));
        self.stage_user_delete(&mut batch, &member)?;
        if member.team_role == TeamRole::Owner {
            self.require_another_owner(&mut batch, &account, &member).await?;
        }
        let audit = vec![self.audit_entry("remove", "user", member_id, Some(&member), None)];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict("the team changed meanwhile; try again".into()))
    }

    /// User `id` if they are a member of `account`.
    async fn member(&self, account: &Account, id: &str) -> StoreResult<User> {
        self.get_user(id)
            .await?
            .filter(|u| u.account_id == account.id)
            .ok_or_else(|| StoreError::not_found("member", id))
    }

    /// Requires, in `batch`, that an active owner other than `leaving`
    /// stays, unchanged: if none does, the change is refused now; if one
    /// changes before the write, the write fails.
    async fn require_another_owner(
        &self,
        batch: &mut WriteBatch,
        account: &Account,
        leaving: &User,
    ) -> StoreResult<()> {
        let mut others = 0;
        for id in self.all_members(&format!("account-users:{}", account.id)).await? {
            if id == leaving.id {
                continue;
            }
            let Some(user) = self.get_user(&id).await? else {
                continue;
            };
            if is_owner(&user) {
                batch.require(Condition::Equals(format!("user:{id}"), encode(&user)?));
                others += 1;
            }
        }
        if others == 0 {
            return Err(StoreError::Conflict(
                "an organization needs an owner: make someone else owner first".into(),
            ));
        }
        Ok(())
    }
}

fn stage_invitation_delete(batch: &mut WriteBatch, invitation: &Invitation) {
    batch
        .delete(invitation_record(&invitation.hash))
        .delete(invitation_index(&invitation.id))
        .remove_member(invitations_of(&invitation.account_id), invitation.id.clone());
}
