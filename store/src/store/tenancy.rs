//! Accounts and users; how company sign-in finds its account and user is
//! in [`super::identity`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::applications::MAX_DESCRIPTION;
use super::paging::{Page, Paged};
use super::versions::{Precondition, check as check_precondition};
use super::{Store, encode, now_ms};
use crate::backend::{Condition, WriteBatch};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::ids::{hex, new_id};
use crate::model::{Account, AccountBinding, SsoIdentity, TeamRole, User, UserRole, UserState};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewAccount {
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
            max_length = 200
        )
    )]
    pub name: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 2000))]
    pub description: String,
    /// The identity provider's organization this account is, for company
    /// sign-in to join it.
    #[serde(default)]
    pub sso: Option<AccountBinding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub account_id: String,
    pub email: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub role: UserRole,
    #[serde(default)]
    pub state: UserState,
    #[serde(default)]
    pub sso: Option<SsoIdentity>,
    #[serde(default)]
    pub password_hash: Option<String>,
    /// See [`User::email_verified`].
    #[serde(default)]
    pub email_verified: bool,
}

/// Fields of a user to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub display_name: Option<String>,
    pub role: Option<UserRole>,
    /// Their part in their organization (an admin's fix; owners change it
    /// with [`Store::set_team_role`], which keeps an owner).
    pub team_role: Option<TeamRole>,
    pub state: Option<UserState>,
    pub password_hash: Option<Option<String>>,
    /// See [`User::stated_organization`].
    pub stated_organization: Option<String>,
}

pub(super) fn lower(text: &str) -> String {
    text.trim().to_lowercase()
}

pub(super) fn account_name_key(name: &str) -> String {
    format!("account-name:{}", lower(name))
}

pub(super) fn binding_key(binding: &AccountBinding) -> String {
    let mut hasher = Sha256::new();
    hasher.update(binding.issuer.as_bytes());
    hasher.update([0]);
    hasher.update(binding.claim_value.as_bytes());
    format!("account-sso:{}", hex(&hasher.finalize()))
}

pub(super) fn email_key(email: &str) -> String {
    format!("user-email:{}", lower(email))
}

pub(super) fn sso_key(identity: &SsoIdentity) -> String {
    let mut hasher = Sha256::new();
    hasher.update(identity.issuer.as_bytes());
    hasher.update([0]);
    hasher.update(identity.subject.as_bytes());
    format!("user-sso:{}", hex(&hasher.finalize()))
}

pub(super) fn check_name(field: &str, value: &str, max: usize) -> StoreResult<()> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            format!("must be 1-{max} characters without control characters"),
        ));
    }
    Ok(())
}

/// Free text (a description): at most `max` characters; line breaks are
/// allowed, other control characters are not.
pub(super) fn check_text(field: &str, value: &str, max: usize) -> StoreResult<()> {
    if value.chars().count() > max
        || value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(StoreError::invalid(
            field,
            format!("must be at most {max} characters without control characters"),
        ));
    }
    Ok(())
}

fn check_binding(binding: &AccountBinding) -> StoreResult<()> {
    if binding.issuer.trim().is_empty() || binding.claim_value.trim().is_empty() {
        return Err(StoreError::invalid("sso", "needs an issuer and a claim value"));
    }
    Ok(())
}

pub(super) fn check_email(email: &str) -> StoreResult<()> {
    if crate::validate::is_email(email) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "email",
            format!("`{email}` is not an email address"),
        ))
    }
}

/// A new account's record, its fields checked.
pub(super) fn account_record(new: NewAccount, now: time::OffsetDateTime) -> StoreResult<Account> {
    check_name("name", &new.name, 200)?;
    check_text("description", &new.description, MAX_DESCRIPTION)?;
    if let Some(binding) = &new.sso {
        check_binding(binding)?;
    }
    Ok(Account {
        id: new_id("acc", now_ms(now)),
        name: new.name.trim().to_owned(),
        display_name: String::new(),
        description: new.description,
        sso: new.sso,
        budgets: Vec::new(),
        created_at: now,
    })
}

/// The writes that create `account`, requiring its name (condition
/// first) and its binding, if any (next), free.
pub(super) fn account_writes(batch: &mut WriteBatch, account: &Account) -> StoreResult<()> {
    batch
        .require(Condition::Absent(account_name_key(&account.name)))
        .put(account_name_key(&account.name), encode(&account.id)?)
        .put(format!("account:{}", account.id), encode(account)?)
        .add_member("accounts", account.id.clone())
        .publish(Change::Account { id: account.id.clone() });
    if let Some(binding) = &account.sso {
        batch
            .require(Condition::Absent(binding_key(binding)))
            .put(binding_key(binding), encode(&account.id)?);
    }
    Ok(())
}

/// A new user's record, its fields checked.
pub(super) fn user_record(new: NewUser, now: time::OffsetDateTime) -> StoreResult<User> {
    check_email(&new.email)?;
    if !new.display_name.is_empty() {
        check_name("display_name", &new.display_name, 200)?;
    }
    Ok(User {
        id: new_id("usr", now_ms(now)),
        account_id: new.account_id,
        email: new.email.trim().to_owned(),
        display_name: new.display_name,
        role: new.role,
        team_role: TeamRole::Member,
        state: new.state,
        sso: new.sso,
        email_verified: new.email_verified,
        password_hash: new.password_hash,
        created_at: now,
        stated_organization: None,
        session_epoch: 0,
    })
}

/// The writes that create `user` in its account, requiring its email
/// (condition first) and its company identity, if any (next), free.
pub(super) fn user_writes(batch: &mut WriteBatch, user: &User) -> StoreResult<()> {
    batch
        .require(Condition::Absent(email_key(&user.email)))
        .put(email_key(&user.email), encode(&user.id)?);
    if let Some(identity) = &user.sso {
        batch
            .require(Condition::Absent(sso_key(identity)))
            .put(sso_key(identity), encode(&user.id)?);
    }
    batch
        .put(format!("user:{}", user.id), encode(user)?)
        .add_member("users", user.id.clone())
        .add_member(format!("account-users:{}", user.account_id), user.id.clone())
        .publish(Change::User { id: user.id.clone() });
    Ok(())
}

impl Store {
    pub async fn create_account(&self, new: NewAccount) -> StoreResult<Account> {
        let account = account_record(new, self.now())?;
        let mut batch = WriteBatch::default();
        account_writes(&mut batch, &account)?;
        let audit = vec![self.audit_entry("create", "account", &account.id, None, Some(&account))];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok(account),
            Err(failed) if failed.0 == 0 => Err(StoreError::AlreadyExists {
                kind: "account",
                field: "name",
                value: account.name.clone(),
            }),
            Err(_) => Err(StoreError::AlreadyExists {
                kind: "account",
                field: "sso",
                value: account.sso.map(|b| b.claim_value).unwrap_or_default(),
            }),
        }
    }

    /// The account bound to this identity provider's organization.
    pub async fn find_account_by_binding(&self, binding: &AccountBinding) -> StoreResult<Option<Account>> {
        match self.get_json::<String>(&binding_key(binding)).await? {
            Some(id) => self.get_account(&id).await,
            None => Ok(None),
        }
    }

    pub async fn get_account(&self, id: &str) -> StoreResult<Option<Account>> {
        self.get_json(&format!("account:{id}")).await
    }

    /// The account with this name (case-insensitive).
    pub async fn find_account(&self, name: &str) -> StoreResult<Option<Account>> {
        match self.get_json::<String>(&account_name_key(name)).await? {
            Some(id) => self.get_account(&id).await,
            None => Ok(None),
        }
    }

    /// What a member may change of their account: the name its members
    /// see (never unique, so renaming reveals no other account) and its
    /// description.
    pub async fn update_account_as_member(
        &self,
        id: &str,
        shown_name: String,
        description: String,
    ) -> StoreResult<Account> {
        let before = self
            .get_account(id)
            .await?
            .ok_or_else(|| StoreError::not_found("account", id))?;
        check_name("name", &shown_name, 200)?;
        check_text("description", &description, MAX_DESCRIPTION)?;
        let mut after = before.clone();
        let shown_name = shown_name.trim();
        after.display_name = if shown_name == after.name {
            String::new()
        } else {
            shown_name.to_owned()
        };
        after.description = description;
        self.replace_account(&before, &after, "update")
            .await?
            .map_err(|_| StoreError::Conflict(format!("account `{id}` changed meanwhile; try again")))?;
        Ok(after)
    }

    /// Writes `after` over `before` (its name unchanged), on the condition
    /// it is still `before`, audited as `action`.
    pub(super) async fn replace_account(
        &self,
        before: &Account,
        after: &Account,
        action: &str,
    ) -> StoreResult<Result<(), crate::backend::ConditionFailed>> {
        let id = before.id.as_str();
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(format!("account:{id}"), encode(before)?))
            .put(format!("account:{id}"), encode(after)?)
            .publish(Change::Account { id: id.to_owned() });
        let audit = vec![self.audit_entry(action, "account", id, Some(before), Some(after))];
        self.commit(batch, audit).await
    }

    pub async fn list_accounts(&self, page: &Page) -> StoreResult<Paged<Account>> {
        self.page_of("accounts", "account", page).await
    }

    /// Renames an account or changes its description.
    pub async fn update_account(
        &self,
        id: &str,
        name: Option<String>,
        description: Option<String>,
    ) -> StoreResult<Account> {
        self.update_account_if(id, name, description, Precondition::Any).await
    }

    /// [`update_account`](Store::update_account) if the account is at the
    /// version `precondition` names; the write commits only on that version.
    pub async fn update_account_if(
        &self,
        id: &str,
        name: Option<String>,
        description: Option<String>,
        precondition: Precondition<'_>,
    ) -> StoreResult<Account> {
        let before = self
            .get_account(id)
            .await?
            .ok_or_else(|| StoreError::not_found("account", id))?;
        check_precondition("account", id, Some(&before), precondition)?;
        let mut after = before.clone();
        if let Some(name) = name {
            check_name("name", &name, 200)?;
            after.name = name.trim().to_owned();
        }
        if let Some(description) = description {
            check_text("description", &description, MAX_DESCRIPTION)?;
            after.description = description;
        }
        let mut batch = WriteBatch::default();
        batch.require(Condition::Equals(format!("account:{id}"), encode(&before)?));
        if lower(&after.name) != lower(&before.name) {
            batch
                .require(Condition::Absent(account_name_key(&after.name)))
                .delete(account_name_key(&before.name))
                .put(account_name_key(&after.name), encode(&after.id)?);
        }
        batch
            .put(format!("account:{id}"), encode(&after)?)
            .publish(Change::Account { id: id.to_owned() });
        let audit = vec![self.audit_entry("update", "account", id, Some(&before), Some(&after))];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok(after),
            Err(failed) if failed.0 == 1 => Err(StoreError::AlreadyExists {
                kind: "account",
                field: "name",
                value: after.name,
            }),
            Err(_) => Err(StoreError::Conflict(format!(
                "account `{id}` changed meanwhile; try again"
            ))),
        }
    }

    /// Deletes an account with its users, applications and keys.
    pub async fn delete_account(&self, id: &str) -> StoreResult<()> {
        let account = self
            .get_account(id)
            .await?
            .ok_or_else(|| StoreError::not_found("account", id))?;
        let mut batch = WriteBatch::default();
        let mut audit = vec![self.audit_entry("delete", "account", id, Some(&account), None)];
        for user_id in self.all_members(&format!("account-users:{id}")).await? {
            if let Some(user) = self.get_user(&user_id).await? {
                self.stage_user_delete(&mut batch, &user)?;
                audit.push(self.audit_entry("delete", "user", &user.id, Some(&user), None));
            }
        }
        for app_id in self.all_members(&format!("account-apps:{id}")).await? {
            if let Some(app) = self.get_application(&app_id).await? {
                self.stage_application_delete(&mut batch, &app).await?;
                audit.push(self.audit_entry("delete", "application", &app.id, Some(&app), None));
            }
        }
        batch
            .require(Condition::Exists(format!("account:{id}")))
            .delete(format!("account:{id}"))
            .delete(account_name_key(&account.name))
            .remove_member("accounts", id)
            .publish(Change::Account { id: id.to_owned() });
        if let Some(binding) = &account.sso {
            batch.delete(binding_key(binding));
        }
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict(format!("account `{id}` changed meanwhile; try again")))
    }

    /// Creates a user in an account; the first user of an account is its
    /// owner, the others members.
    pub async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        let mut user = user_record(new, self.now())?;
        if self
            .all_members(&format!("account-users:{}", user.account_id))
            .await?
            .is_empty()
        {
            user.team_role = TeamRole::Owner;
        }
        let mut batch = WriteBatch::default();
        batch.require(Condition::Exists(format!("account:{}", user.account_id)));
        user_writes(&mut batch, &user)?;
        let audit = vec![self.audit_entry("create", "user", &user.id, None, Some(&user))];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok(user),
            Err(failed) => Err(match failed.0 {
                0 => StoreError::not_found("account", user.account_id),
                1 => StoreError::AlreadyExists {
                    kind: "user",
                    field: "email",
                    value: user.email,
                },
                _ => StoreError::AlreadyExists {
                    kind: "user",
                    field: "sso subject",
                    value: user.email,
                },
            }),
        }
    }

    pub async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        self.get_json(&format!("user:{id}")).await
    }

    pub async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        match self.get_json::<String>(&email_key(email)).await? {
            Some(id) => self.get_user(&id).await,
            None => Ok(None),
        }
    }

    pub async fn find_user_by_sso(&self, identity: &SsoIdentity) -> StoreResult<Option<User>> {
        match self.get_json::<String>(&sso_key(identity)).await? {
            Some(id) => self.get_user(&id).await,
            None => Ok(None),
        }
    }

    /// Users of one account, or of every account.
    pub async fn list_users(&self, account_id: Option<&str>, page: &Page) -> StoreResult<Paged<User>> {
        match account_id {
            Some(account) => self.page_of(&format!("account-users:{account}"), "user", page).await,
            None => self.page_of("users", "user", page).await,
        }
    }

    pub async fn update_user(&self, id: &str, update: UserUpdate) -> StoreResult<User> {
        self.update_user_if(id, update, Precondition::Any).await
    }

    /// [`update_user`](Store::update_user) if the user is at the version
    /// `precondition` names.
    pub async fn update_user_if(
        &self,
        id: &str,
        update: UserUpdate,
        precondition: Precondition<'_>,
    ) -> StoreResult<User> {
        let before = self
            .get_user(id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", id))?;
        check_precondition("user", id, Some(&before), precondition)?;
        let mut after = before.clone();
        if let Some(name) = update.display_name {
            // Empty clears it, as at creation.
            if !name.is_empty() {
                check_name("display_name", &name, 200)?;
            }
            after.display_name = name;
        }
        after.role = update.role.unwrap_or(after.role);
        after.team_role = update.team_role.unwrap_or(after.team_role);
        after.state = update.state.unwrap_or(after.state);
        if let Some(hash) = update.password_hash {
            after.password_hash = hash;
        }
        if let Some(organization) = update.stated_organization {
            after.stated_organization = Some(organization);
        }
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(format!("user:{id}"), encode(&before)?))
            .put(format!("user:{id}"), encode(&after)?)
            .publish(Change::User { id: id.to_owned() });
        let audit = vec![self.audit_entry("update", "user", id, Some(&before), Some(&after))];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict(format!("user `{id}` changed meanwhile; try again")))?;
        Ok(after)
    }

    pub async fn delete_user(&self, id: &str) -> StoreResult<()> {
        let user = self
            .get_user(id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", id))?;
        let mut batch = WriteBatch::default();
        batch.require(Condition::Exists(format!("user:{id}")));
        self.stage_user_delete(&mut batch, &user)?;
        let audit = vec![self.audit_entry("delete", "user", id, Some(&user), None)];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::not_found("user", id))
    }

    pub(super) fn stage_user_delete(&self, batch: &mut WriteBatch, user: &User) -> StoreResult<()> {
        batch
            .delete(format!("user:{}", user.id))
            .delete(email_key(&user.email))
            .remove_member("users", user.id.clone())
            .remove_member(format!("account-users:{}", user.account_id), user.id.clone())
            .publish(Change::User { id: user.id.clone() });
        if let Some(identity) = &user.sso {
            batch.delete(sso_key(identity));
        }
        Ok(())
    }
}
