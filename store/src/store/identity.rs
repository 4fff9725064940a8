//! Who company sign-in makes a user part of, written once: the account is
//! the one bound to the identity provider and organization claim value,
//! never one that merely has the same name (anyone may sign up an account
//! called "Acme"), and a verified email outranks an unverified one.

use sha2::{Digest, Sha256};

use super::tenancy::{
    NewAccount, NewUser, account_record, account_writes, check_name, email_key, lower, user_record, user_writes,
};
use super::{Store, encode};
use crate::backend::{Condition, WriteBatch};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::ids::{hex, random_bytes};
use crate::model::{Account, AccountBinding, TeamRole, User, UserRole, UserState};

/// What a local sign-up asks for (see [`Store::sign_up`]).
#[derive(Debug, Clone)]
pub struct LocalSignUp {
    pub organization: String,
    /// The person's name.
    pub display_name: String,
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
}

/// Tries before a sign-in racing others for the same account gives up.
const ATTEMPTS: usize = 5;

impl Store {
    /// The account of the provider's organization `binding`, created
    /// (named `name`, or `name (SSO)`, `name (SSO 2)`… when that is taken)
    /// on its first sign-in. Never found by name: anyone may name an
    /// account "Acme", by signing up or by renaming their own.
    pub async fn account_for_sso(&self, binding: &AccountBinding, name: &str) -> StoreResult<Account> {
        for _ in 0..ATTEMPTS {
            if let Some(account) = self.find_account_by_binding(binding).await? {
                return Ok(account);
            }
            let new = NewAccount {
                name: self.free_account_name(name, "SSO").await?,
                description: String::new(),
                sso: Some(binding.clone()),
            };
            match self.create_account(new).await {
                Ok(account) => return Ok(account),
                // Another sign-in of the same organization, or the name, won the race.
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Conflict(format!(
            "the account of `{}` changed meanwhile; sign in again",
            binding.claim_value
        )))
    }

    /// Binds an account made before accounts were bound to the
    /// organization its members' provider names at sign-in: the evidence
    /// is the provider's claim for the people in the account
    /// ([`User::stated_organization`]), never the account's name. Left as
    /// it is when it is bound already, when another account holds that
    /// binding, or while its members disagree: one signs in otherwise (a
    /// local account company sign-in once joined by name), another's
    /// provider names another organization, or one has not signed in
    /// since (an admin binds or splits it by hand: [`Store::bind_account`],
    /// [`Store::split_account`]).
    pub async fn adopt_binding(&self, account: &Account, binding: &AccountBinding) -> StoreResult<Account> {
        if account.sso.is_some()
            || self.find_account_by_binding(binding).await?.is_some()
            || !self.members_agree_on(account, binding).await?
        {
            return Ok(account.clone());
        }
        match self.bind_account_unchecked(account, binding).await {
            // Bound meanwhile, by this sign-in's twin or another organization's.
            Err(StoreError::Conflict(_)) => Ok(self.get_account(&account.id).await?.unwrap_or_else(|| account.clone())),
            bound => bound,
        }
    }

    /// Whether every member of `account` signs in through `binding`'s
    /// provider, which named `binding`'s organization for them.
    async fn members_agree_on(&self, account: &Account, binding: &AccountBinding) -> StoreResult<bool> {
        for user in self.members_of(account).await? {
            let signs_in_there = user.sso.as_ref().is_some_and(|sso| sso.issuer == binding.issuer);
            if !signs_in_there || user.stated_organization.as_deref() != Some(binding.claim_value.as_str()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn members_of(&self, account: &Account) -> StoreResult<Vec<User>> {
        let mut users = Vec::new();
        for id in self.all_members(&format!("account-users:{}", account.id)).await? {
            if let Some(user) = self.get_user(&id).await? {
                users.push(user);
            }
        }
        Ok(users)
    }

    /// An admin binds unbound `account` to the provider's organization
    /// `binding` by hand (its members disagree, or one no longer signs
    /// in). Audited as `bind`.
    pub async fn bind_account(&self, account: &Account, binding: &AccountBinding) -> StoreResult<Account> {
        if let Some(bound) = &account.sso {
            return Err(StoreError::Conflict(format!(
                "account `{}` is bound to `{}` already",
                account.id, bound.claim_value
            )));
        }
        if let Some(holder) = self.find_account_by_binding(binding).await? {
            return Err(StoreError::Conflict(format!(
                "organization `{}` is bound to account `{}` already",
                binding.claim_value, holder.name
            )));
        }
        self.bind_account_unchecked(account, binding).await
    }

    /// Binds unbound `account` to `keep` and moves each member whose
    /// provider names another organization into that organization's
    /// account ([`Store::move_user`], which ends their sessions). Members
    /// the provider has not named an organization for stay. Returns the
    /// bound account and the members moved.
    pub async fn split_account(&self, account: &Account, keep: &AccountBinding) -> StoreResult<(Account, Vec<User>)> {
        let bound = self.bind_account(account, keep).await?;
        let mut moved = Vec::new();
        for user in self.members_of(&bound).await? {
            let Some(stated) = user.stated_organization.clone() else {
                continue;
            };
            let same_provider = user.sso.as_ref().is_some_and(|sso| sso.issuer == keep.issuer);
            if stated == keep.claim_value || !same_provider {
                continue;
            }
            let theirs = AccountBinding {
                issuer: keep.issuer.clone(),
                claim_value: stated.clone(),
            };
            let to = self.account_for_sso(&theirs, &stated).await?;
            moved.push(self.move_user(&user, &to).await?);
        }
        Ok((bound, moved))
    }

    async fn bind_account_unchecked(&self, account: &Account, binding: &AccountBinding) -> StoreResult<Account> {
        let mut after = account.clone();
        after.sso = Some(binding.clone());
        let key = super::tenancy::binding_key(binding);
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(format!("account:{}", account.id), encode(account)?))
            .require(Condition::Absent(key.clone()))
            .put(key, encode(&account.id)?)
            .put(format!("account:{}", account.id), encode(&after)?)
            .publish(Change::Account { id: account.id.clone() });
        let audit = vec![self.audit_entry("bind", "account", &account.id, Some(account), Some(&after))];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict(format!("account `{}` changed meanwhile; try again", account.id)))?;
        Ok(after)
    }

    /// A local sign-up: a new account, named for its members as asked
    /// (`organization`, which need not be unique) and for admins
    /// `organization (xxxxxx)` with a random suffix, and its first member,
    /// in one conditional write that does nothing when the email has an
    /// account already. Either way the work is the same (no lookup
    /// depends on what exists) and the answer says nothing: `Ok(())`.
    /// Both end with one more write, an audit entry under a digest of the
    /// email: `sign_up`, or `sign_up_taken` when the email had an account.
    pub async fn sign_up(&self, new: LocalSignUp) -> StoreResult<()> {
        let organization = new.organization.trim();
        let now = self.now();
        let short: String = organization.chars().take(180).collect();
        let mut account = account_record(
            NewAccount {
                name: format!("{short} ({})", hex(&random_bytes::<3>())),
                description: String::new(),
                sso: None,
            },
            now,
        )?;
        check_name("name", organization, 200)?;
        account.display_name = organization.to_owned();
        let user = user_record(
            NewUser {
                account_id: account.id.clone(),
                email: new.email,
                display_name: new.display_name.trim().to_owned(),
                role: UserRole::Member,
                state: UserState::Active,
                sso: None,
                password_hash: Some(new.password_hash),
                // Nobody checked that the address is the visitor's.
                email_verified: false,
            },
            now,
        )?;
        let user = User {
            team_role: TeamRole::Owner,
            ..user
        };
        // Condition 0: the account's name is free; 1: the email is.
        let mut batch = WriteBatch::default();
        account_writes(&mut batch, &account)?;
        user_writes(&mut batch, &user)?;
        let audit = vec![
            self.audit_entry("create", "account", &account.id, None, Some(&account)),
            self.audit_entry("create", "user", &user.id, None, Some(&user)),
        ];
        let action = match self.commit(batch, audit).await? {
            Ok(()) => "sign_up",
            // The random suffix was taken: as unlikely as it is harmless.
            Err(failed) if failed.0 == 0 => return Err(StoreError::Conflict("try again".into())),
            Err(_) => "sign_up_taken",
        };
        let digest = hex(&Sha256::digest(lower(&user.email).as_bytes())[..8]);
        let entry = self.audit_entry::<()>(action, "sign_up", &digest, None, None);
        self.commit(WriteBatch::default(), vec![entry]).await?.ok();
        Ok(())
    }

    /// `name`, or the first of `name (LABEL)`, `name (LABEL 2)`, … that no
    /// account has.
    async fn free_account_name(&self, name: &str, label: &str) -> StoreResult<String> {
        let base: String = name.trim().chars().take(180).collect();
        for n in 0..100 {
            let candidate = match n {
                0 => base.clone(),
                1 => format!("{base} ({label})"),
                n => format!("{base} ({label} {n})"),
            };
            if self.find_account(&candidate).await?.is_none() {
                return Ok(candidate);
            }
        }
        Err(StoreError::Conflict(format!("no free account name for `{base}`")))
    }

    /// Frees `email` for an identity whose provider verified it: a user
    /// who holds it without proof (a local sign-up; nobody checked the
    /// address) is disabled, loses its password and gets a placeholder
    /// address, so whoever signed up with someone else's email can
    /// neither keep it nor lock its owner out. Returns that user, if any;
    /// a user whose email was vouched for is left alone (`None`).
    pub async fn release_unverified_email(&self, email: &str) -> StoreResult<Option<User>> {
        let Some(holder) = self.find_user_by_email(email).await? else {
            return Ok(None);
        };
        if holder.email_verified || holder.sso.is_some() {
            return Ok(None);
        }
        let mut after = holder.clone();
        after.email = format!("unverified.{}@email.invalid", holder.id.to_lowercase());
        after.state = UserState::Disabled;
        after.password_hash = None;
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(format!("user:{}", holder.id), encode(&holder)?))
            .require(Condition::Absent(email_key(&after.email)))
            .delete(email_key(&holder.email))
            .put(email_key(&after.email), encode(&holder.id)?)
            .put(format!("user:{}", holder.id), encode(&after)?)
            .publish(Change::User { id: holder.id.clone() });
        let audit = vec![self.audit_entry("release_email", "user", &holder.id, Some(&holder), Some(&after))];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict(format!("user `{}` changed meanwhile; try again", holder.id)))?;
        Ok(Some(after))
    }

    /// Moves `user` into account `to` (the provider moved them to another
    /// organization) and ends their sessions, which belonged to the old
    /// account. Applications and their keys stay with the account that
    /// owns them. Audited as `move`.
    pub async fn move_user(&self, user: &User, to: &Account) -> StoreResult<User> {
        let mut after = user.clone();
        after.account_id = to.id.clone();
        after.session_epoch = user.session_epoch.wrapping_add(1);
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(format!("user:{}", user.id), encode(user)?))
            .require(Condition::Exists(format!("account:{}", to.id)))
            .put(format!("user:{}", user.id), encode(&after)?)
            .remove_member(format!("account-users:{}", user.account_id), user.id.clone())
            .add_member(format!("account-users:{}", to.id), user.id.clone())
            .publish(Change::User { id: user.id.clone() });
        let audit = vec![self.audit_entry("move", "user", &user.id, Some(user), Some(&after))];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok(after),
            Err(failed) if failed.0 == 1 => Err(StoreError::not_found("account", &to.id)),
            Err(_) => Err(StoreError::Conflict(format!(
                "user `{}` changed meanwhile; try again",
                user.id
            ))),
        }
    }

    /// Ends every portal session of `user` (their next request finds none).
    /// Audited as `end_sessions`.
    pub async fn end_sessions(&self, user: &User) -> StoreResult<User> {
        self.change_ending_sessions(user, "end_sessions", |_| {}).await
    }

    /// `user` changed by `edit`, with every session of theirs ended, if
    /// the user is still as read (else `Conflict`). Audited as `action`
    /// (secrets scrubbed, as in every entry).
    pub(super) async fn change_ending_sessions(
        &self,
        user: &User,
        action: &str,
        edit: impl FnOnce(&mut User),
    ) -> StoreResult<User> {
        let mut after = user.clone();
        edit(&mut after);
        after.session_epoch = user.session_epoch.wrapping_add(1);
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(format!("user:{}", user.id), encode(user)?))
            .put(format!("user:{}", user.id), encode(&after)?)
            .publish(Change::User { id: user.id.clone() });
        let audit = vec![self.audit_entry(action, "user", &user.id, Some(user), Some(&after))];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict(format!("user `{}` changed meanwhile; try again", user.id)))?;
        Ok(after)
    }
}
