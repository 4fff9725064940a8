//! Accounts, users and applications.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::catalog::plan_id;
use super::paging::{Page, Paged};
use super::versions::{Precondition, check as check_precondition};
use super::{Store, encode, now_ms};
use crate::backend::{Condition, WriteBatch};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::ids::{hex, new_id};
use crate::model::{Account, ApiKey, Application, ApplicationState, Plan, SsoIdentity, User, UserRole, UserState};

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
    pub description: String,
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
}

/// Fields of a user to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub display_name: Option<String>,
    pub role: Option<UserRole>,
    pub state: Option<UserState>,
    pub password_hash: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewApplication {
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub account_id: String,
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
            max_length = 200
        )
    )]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub product: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub plan: String,
}

/// Fields of an application to change; the plan must be of the same product.
#[derive(Debug, Clone, Default)]
pub struct ApplicationUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub plan: Option<String>,
    pub state: Option<ApplicationState>,
}

#[derive(Debug, Clone, Default)]
pub struct ApplicationFilter {
    pub account_id: Option<String>,
    pub product: Option<String>,
    pub state: Option<ApplicationState>,
}

fn lower(text: &str) -> String {
    text.trim().to_lowercase()
}

fn account_name_key(name: &str) -> String {
    format!("account-name:{}", lower(name))
}

fn email_key(email: &str) -> String {
    format!("user-email:{}", lower(email))
}

fn sso_key(identity: &SsoIdentity) -> String {
    let mut hasher = Sha256::new();
    hasher.update(identity.issuer.as_bytes());
    hasher.update([0]);
    hasher.update(identity.subject.as_bytes());
    format!("user-sso:{}", hex(&hasher.finalize()))
}

fn app_name_key(account_id: &str, name: &str) -> String {
    format!("app-name:{account_id}:{}", lower(name))
}

fn check_name(field: &str, value: &str, max: usize) -> StoreResult<()> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            format!("must be 1-{max} characters without control characters"),
        ));
    }
    Ok(())
}

fn check_email(email: &str) -> StoreResult<()> {
    if crate::validate::is_email(email) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "email",
            format!("`{email}` is not an email address"),
        ))
    }
}

impl Store {
    pub async fn create_account(&self, new: NewAccount) -> StoreResult<Account> {
        check_name("name", &new.name, 200)?;
        let now = self.now();
        let account = Account {
            id: new_id("acc", now_ms(now)),
            name: new.name.trim().to_owned(),
            description: new.description,
            created_at: now,
        };
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Absent(account_name_key(&account.name)))
            .put(account_name_key(&account.name), encode(&account.id)?)
            .put(format!("account:{}", account.id), encode(&account)?)
            .add_member("accounts", account.id.clone())
            .publish(Change::Account { id: account.id.clone() });
        let audit = vec![self.audit_entry("create", "account", &account.id, None, Some(&account))];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::AlreadyExists {
                kind: "account",
                field: "name",
                value: account.name.clone(),
            })?;
        Ok(account)
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
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict(format!("account `{id}` changed meanwhile; try again")))
    }

    pub async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        check_email(&new.email)?;
        if !new.display_name.is_empty() {
            check_name("display_name", &new.display_name, 200)?;
        }
        let now = self.now();
        let user = User {
            id: new_id("usr", now_ms(now)),
            account_id: new.account_id,
            email: new.email.trim().to_owned(),
            display_name: new.display_name,
            role: new.role,
            state: new.state,
            sso: new.sso,
            password_hash: new.password_hash,
            created_at: now,
        };
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Exists(format!("account:{}", user.account_id)))
            .require(Condition::Absent(email_key(&user.email)))
            .put(email_key(&user.email), encode(&user.id)?);
        if let Some(identity) = &user.sso {
            batch
                .require(Condition::Absent(sso_key(identity)))
                .put(sso_key(identity), encode(&user.id)?);
        }
        batch
            .put(format!("user:{}", user.id), encode(&user)?)
            .add_member("users", user.id.clone())
            .add_member(format!("account-users:{}", user.account_id), user.id.clone())
            .publish(Change::User { id: user.id.clone() });
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
        after.state = update.state.unwrap_or(after.state);
        if let Some(hash) = update.password_hash {
            after.password_hash = hash;
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

    fn stage_user_delete(&self, batch: &mut WriteBatch, user: &User) -> StoreResult<()> {
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

    /// Subscribes an account to a product on a plan; the application starts
    /// `pending` when the plan requires approval, else `live`.
    pub async fn create_application(&self, new: NewApplication) -> StoreResult<Application> {
        check_name("name", &new.name, 200)?;
        let plan = self.existing_plan(&new.product, &new.plan).await?;
        let now = self.now();
        let app = Application {
            id: new_id("app", now_ms(now)),
            account_id: new.account_id,
            name: new.name.trim().to_owned(),
            description: new.description,
            product: new.product,
            plan: new.plan,
            state: if plan.approval_required {
                ApplicationState::Pending
            } else {
                ApplicationState::Live
            },
            created_at: now,
            updated_at: now,
        };
        let pid = plan_id(&app.product, &app.plan);
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Exists(format!("account:{}", app.account_id)))
            .require(Condition::Exists(format!("plan:{pid}")))
            .require(Condition::Absent(app_name_key(&app.account_id, &app.name)))
            .put(app_name_key(&app.account_id, &app.name), encode(&app.id)?)
            .put(format!("app:{}", app.id), encode(&app)?)
            .add_member("apps", app.id.clone())
            .add_member(format!("account-apps:{}", app.account_id), app.id.clone())
            .add_member(format!("product-apps:{}", app.product), app.id.clone())
            .add_member(format!("plan-apps:{pid}"), app.id.clone())
            .publish(Change::Application { id: app.id.clone() });
        let audit = vec![self.audit_entry("create", "application", &app.id, None, Some(&app))];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok(app),
            Err(failed) => Err(match failed.0 {
                0 => StoreError::not_found("account", app.account_id),
                1 => StoreError::not_found("plan", pid),
                _ => StoreError::AlreadyExists {
                    kind: "application",
                    field: "name",
                    value: app.name,
                },
            }),
        }
    }

    async fn existing_plan(&self, product: &str, plan: &str) -> StoreResult<Plan> {
        self.get_plan(product, plan)
            .await?
            .ok_or_else(|| StoreError::invalid("plan", format!("product `{product}` has no plan `{plan}`")))
    }

    pub async fn get_application(&self, id: &str) -> StoreResult<Option<Application>> {
        self.get_json(&format!("app:{id}")).await
    }

    /// The application of an account with this name (case-insensitive).
    pub async fn find_application(&self, account_id: &str, name: &str) -> StoreResult<Option<Application>> {
        match self.get_json::<String>(&app_name_key(account_id, name)).await? {
            Some(id) => self.get_application(&id).await,
            None => Ok(None),
        }
    }

    /// Applications, oldest first, narrowed by account, product and state.
    pub async fn list_applications(&self, filter: &ApplicationFilter, page: &Page) -> StoreResult<Paged<Application>> {
        let collection = match (&filter.account_id, &filter.product) {
            (Some(account), _) => format!("account-apps:{account}"),
            (None, Some(product)) => format!("product-apps:{product}"),
            (None, None) => "apps".to_owned(),
        };
        let limit = page.limit.clamp(1, 1000);
        let mut cursor = page.after.clone();
        let mut items = Vec::new();
        loop {
            let batch: Paged<Application> = self
                .page_of(
                    &collection,
                    "app",
                    &Page {
                        after: cursor.clone(),
                        limit,
                    },
                )
                .await?;
            for app in batch.items {
                cursor = Some(app.id.clone());
                let wanted = filter.product.as_ref().is_none_or(|p| *p == app.product)
                    && filter.state.is_none_or(|s| s == app.state);
                if wanted {
                    items.push(app);
                    if items.len() == limit {
                        return Ok(Paged { next: cursor, items });
                    }
                }
            }
            if batch.next.is_none() {
                return Ok(Paged { items, next: None });
            }
            cursor = batch.next;
        }
    }

    pub async fn update_application(&self, id: &str, update: ApplicationUpdate) -> StoreResult<Application> {
        self.update_application_if(id, update, Precondition::Any).await
    }

    /// [`update_application`](Store::update_application) if the application
    /// is at the version `precondition` names.
    pub async fn update_application_if(
        &self,
        id: &str,
        update: ApplicationUpdate,
        precondition: Precondition<'_>,
    ) -> StoreResult<Application> {
        let before = self
            .get_application(id)
            .await?
            .ok_or_else(|| StoreError::not_found("application", id))?;
        check_precondition("application", id, Some(&before), precondition)?;
        let mut after = before.clone();
        let mut batch = WriteBatch::default();
        batch.require(Condition::Equals(format!("app:{id}"), encode(&before)?));
        if let Some(name) = update.name {
            check_name("name", &name, 200)?;
            after.name = name.trim().to_owned();
            if lower(&after.name) != lower(&before.name) {
                batch
                    .require(Condition::Absent(app_name_key(&after.account_id, &after.name)))
                    .delete(app_name_key(&before.account_id, &before.name))
                    .put(app_name_key(&after.account_id, &after.name), encode(&after.id)?);
            }
        }
        if let Some(description) = update.description {
            after.description = description;
        }
        if let Some(plan) = update.plan
            && plan != before.plan
        {
            self.existing_plan(&before.product, &plan).await?;
            let (old, new) = (plan_id(&before.product, &before.plan), plan_id(&before.product, &plan));
            batch
                .require(Condition::Exists(format!("plan:{new}")))
                .remove_member(format!("plan-apps:{old}"), id)
                .add_member(format!("plan-apps:{new}"), id);
            after.plan = plan;
        }
        if let Some(state) = update.state {
            after.state = state;
        }
        after.updated_at = self.now();
        batch
            .put(format!("app:{id}"), encode(&after)?)
            .publish(Change::Application { id: id.to_owned() });
        let audit = vec![self.audit_entry("update", "application", id, Some(&before), Some(&after))];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok(after),
            Err(failed) if failed.0 == 0 => Err(StoreError::Conflict(format!(
                "application `{id}` changed meanwhile; try again"
            ))),
            Err(_) => Err(StoreError::Conflict(format!(
                "name or plan of application `{id}` is taken or gone; try again"
            ))),
        }
    }

    /// Deletes an application and its keys.
    pub async fn delete_application(&self, id: &str) -> StoreResult<()> {
        let app = self
            .get_application(id)
            .await?
            .ok_or_else(|| StoreError::not_found("application", id))?;
        let mut batch = WriteBatch::default();
        batch.require(Condition::Exists(format!("app:{id}")));
        self.stage_application_delete(&mut batch, &app).await?;
        let audit = vec![self.audit_entry("delete", "application", id, Some(&app), None)];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::not_found("application", id))
    }

    async fn stage_application_delete(&self, batch: &mut WriteBatch, app: &Application) -> StoreResult<()> {
        for key in self.application_keys(&app.id).await? {
            stage_key_delete(batch, &key);
        }
        batch
            .delete(format!("app:{}", app.id))
            .delete(app_name_key(&app.account_id, &app.name))
            .remove_member("apps", app.id.clone())
            .remove_member(format!("account-apps:{}", app.account_id), app.id.clone())
            .remove_member(format!("product-apps:{}", app.product), app.id.clone())
            .remove_member(
                format!("plan-apps:{}", plan_id(&app.product, &app.plan)),
                app.id.clone(),
            )
            .publish(Change::Application { id: app.id.clone() });
        Ok(())
    }
}

pub(super) fn stage_key_delete(batch: &mut WriteBatch, key: &ApiKey) {
    batch
        .delete(format!("key:{}", key.hash))
        .delete(format!("key-id:{}", key.id))
        .remove_member(format!("app-keys:{}", key.application_id), key.id.clone())
        .publish(Change::Key {
            id: key.id.clone(),
            hash: key.hash,
        });
}
