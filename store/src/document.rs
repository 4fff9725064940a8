//! The declarative catalog document (`catalog.yaml`): `apply` makes the
//! store match it, `export` writes the store back as one.
//!
//! Backends, products and plans are applied in one atomic catalog write;
//! accounts, users and applications (optional) are upserted by their
//! natural keys (account name, user email, account + application name).
//! Keys are never part of a document: secrets do not go into files.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{StoreError, StoreResult};
use crate::model::{ApplicationState, Backend, Plan, Product, UserRole};
use crate::store::{
    ApplicationAction, ApplicationFilter, ApplicationUpdate, CatalogDiff, Environment, NewAccount, NewApplication,
    NewUser, PlanChangeBy, Precondition, Store, UserUpdate, all_pages,
};
use crate::validate::{ByIndex, ValidationErrors, validate_catalog};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDocument {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<Product>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<Plan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applications: Vec<ApplicationSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The identity provider's organization company sign-in joins it by
    /// (set when the account is created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<crate::model::AccountBinding>,
    /// Spend budgets over all its applications; left as they are when
    /// absent, removed by `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Vec<crate::model::Budget>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub email: String,
    /// Name of the user's account.
    pub account: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "is_member")]
    pub role: UserRole,
}

fn is_member(role: &UserRole) -> bool {
    *role == UserRole::Member
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationSpec {
    /// Name of the owning account.
    pub account: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub product: String,
    pub plan: String,
    /// Left as the store has it (or as the plan starts it) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ApplicationState>,
    /// Its spend budgets; left as they are when absent, removed by `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Vec<crate::model::Budget>>,
}

impl CatalogDocument {
    /// Checks the document on its own, without a store: every object, and
    /// every reference between objects of the document.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = match validate_catalog(&self.backends, &self.products, &self.plans, &ByIndex) {
            Ok(()) => ValidationErrors::default(),
            Err(errors) => errors,
        };
        let mut push = |path: String, message: String| {
            errors.0.push(crate::validate::ValidationError { path, message });
        };
        let mut accounts = HashSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
            if account.name.trim().is_empty() {
                push(format!("accounts[{i}].name"), "must not be empty".into());
            } else if !accounts.insert(account.name.trim().to_lowercase()) {
                push(
                    format!("accounts[{i}].name"),
                    format!("duplicate account `{}`", account.name),
                );
            }
        }
        let budgets = |path: String, given: &Option<Vec<crate::model::Budget>>| {
            if let Some(given) = given
                && let Err(StoreError::Invalid(found)) = crate::model::budget::validate_budgets(&path, given)
            {
                found.0
            } else {
                Vec::new()
            }
        };
        let mut budget_errors: Vec<crate::validate::ValidationError> = Vec::new();
        for (i, account) in self.accounts.iter().enumerate() {
            budget_errors.extend(budgets(format!("accounts[{i}].budgets"), &account.budgets));
        }
        for (i, app) in self.applications.iter().enumerate() {
            budget_errors.extend(budgets(format!("applications[{i}].budgets"), &app.budgets));
        }
        for error in budget_errors {
            push(error.path, error.message);
        }
        let has_account = |name: &str| accounts.contains(&name.trim().to_lowercase());
        let mut emails = HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            if !crate::validate::is_email(&user.email) {
                push(
                    format!("users[{i}].email"),
                    format!("`{}` is not an email address", user.email),
                );
            } else if !emails.insert(user.email.trim().to_lowercase()) {
                push(format!("users[{i}].email"), format!("duplicate user `{}`", user.email));
            }
            if !has_account(&user.account) {
                push(
                    format!("users[{i}].account"),
                    format!("no account named `{}` in this file", user.account),
                );
            }
        }
        let mut apps = HashSet::new();
        for (i, app) in self.applications.iter().enumerate() {
            if !has_account(&app.account) {
                push(
                    format!("applications[{i}].account"),
                    format!("no account named `{}` in this file", app.account),
                );
            }
            if app.name.trim().is_empty() {
                push(format!("applications[{i}].name"), "must not be empty".into());
            } else if !apps.insert((app.account.trim().to_lowercase(), app.name.trim().to_lowercase())) {
                push(
                    format!("applications[{i}].name"),
                    format!("duplicate application `{}` of `{}`", app.name, app.account),
                );
            }
            if !self
                .plans
                .iter()
                .any(|p| p.product == app.product && p.system_name == app.plan)
            {
                push(
                    format!("applications[{i}].plan"),
                    format!("no plan `{}` of product `{}` in this file", app.plan, app.product),
                );
            }
        }
        errors.into_result()
    }
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Delete backends, products and plans the document does not list.
    /// Accounts, users and applications are never pruned.
    pub prune: bool,
    /// Promote up to this environment the products whose draft this apply
    /// created or changed, and those never released anywhere; `None`
    /// leaves them as drafts. A product the file leaves as it is keeps its
    /// releases (a draft promoted to staging only stays there).
    pub promote_to: Option<Environment>,
    /// Seed: create what the store lacks and leave everything that exists
    /// as it is, edited or not (`maas up --demo` run again).
    pub keep_existing: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            prune: false,
            promote_to: Some(Environment::Production),
            keep_existing: false,
        }
    }
}

/// What `apply` changed; empty when the store already matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub catalog: CatalogDiff,
    /// `product → environment vN`
    pub promoted: Vec<String>,
    /// `kind name` of every created or updated tenant object.
    pub tenants_created: Vec<String>,
    pub tenants_updated: Vec<String>,
    /// `kind name` of what existed and was left as it is (`keep_existing`).
    pub kept: Vec<String>,
}

impl ApplyReport {
    pub fn is_empty(&self) -> bool {
        self.catalog.is_empty()
            && self.promoted.is_empty()
            && self.tenants_created.is_empty()
            && self.tenants_updated.is_empty()
    }
}

impl Store {
    /// Makes the store match `document` (see the module docs).
    pub async fn apply(&self, document: &CatalogDocument, options: &ApplyOptions) -> StoreResult<ApplyReport> {
        document.validate()?;
        let keep = options.keep_existing;
        let catalog = self
            .edit_catalog(|c| {
                if options.prune && !keep {
                    c.backends.clear();
                    c.products.clear();
                    c.plans.clear();
                }
                fn put<T: Clone>(map: &mut std::collections::BTreeMap<String, T>, key: String, value: &T, keep: bool) {
                    if keep {
                        map.entry(key).or_insert_with(|| value.clone());
                    } else {
                        map.insert(key, value.clone());
                    }
                }
                for backend in &document.backends {
                    put(&mut c.backends, backend.system_name.clone(), backend, keep);
                }
                for product in &document.products {
                    put(&mut c.products, product.system_name.clone(), product, keep);
                }
                for plan in &document.plans {
                    put(&mut c.plans, crate::store::plan_key(plan), plan, keep);
                }
                Ok(())
            })
            .await?;
        let mut report = ApplyReport {
            catalog,
            ..ApplyReport::default()
        };
        if keep {
            let named = document
                .backends
                .iter()
                .map(|b| format!("backend {}", b.system_name))
                .chain(document.products.iter().map(|p| format!("product {}", p.system_name)))
                .chain(
                    document
                        .plans
                        .iter()
                        .map(|p| format!("plan {}", crate::store::plan_key(p))),
                );
            let created = &report.catalog.created;
            report.kept.extend(named.filter(|item| !created.contains(item)));
        }
        if let Some(target) = options.promote_to {
            let environments: &[Environment] = match target {
                Environment::Staging => &[Environment::Staging],
                Environment::Production => &[Environment::Staging, Environment::Production],
            };
            for product in &document.products {
                if !self.to_promote(&product.system_name, &report.catalog, keep).await? {
                    continue;
                }
                for &environment in environments {
                    let before = self
                        .release(&product.system_name, environment)
                        .await?
                        .map(|r| r.version);
                    let version = self.promote(&product.system_name, environment).await?;
                    if before != Some(version) {
                        report
                            .promoted
                            .push(format!("{} → {environment} v{version}", product.system_name));
                    }
                }
            }
        }
        self.apply_tenants(document, keep, &mut report).await?;
        Ok(report)
    }

    /// Whether `apply` promotes `product`: when it created or changed its
    /// draft, or (unless seeding) when no environment has it yet.
    async fn to_promote(&self, product: &str, diff: &CatalogDiff, keep: bool) -> StoreResult<bool> {
        let item = format!("product {product}");
        if diff.created.contains(&item) || diff.updated.contains(&item) {
            return Ok(true);
        }
        if keep {
            return Ok(false);
        }
        Ok(self.release(product, Environment::Staging).await?.is_none()
            && self.release(product, Environment::Production).await?.is_none())
    }

    async fn apply_tenants(&self, document: &CatalogDocument, keep: bool, report: &mut ApplyReport) -> StoreResult<()> {
        for spec in &document.accounts {
            match self.find_account(&spec.name).await? {
                None => {
                    self.create_account(NewAccount {
                        name: spec.name.clone(),
                        description: spec.description.clone(),
                        sso: spec.sso.clone(),
                    })
                    .await?;
                    report.tenants_created.push(format!("account {}", spec.name));
                }
                Some(_) if keep => {
                    report.kept.push(format!("account {}", spec.name));
                    continue;
                }
                Some(account) if account.description != spec.description || account.name != spec.name.trim() => {
                    self.update_account(&account.id, Some(spec.name.clone()), Some(spec.description.clone()))
                        .await?;
                    report.tenants_updated.push(format!("account {}", spec.name));
                }
                Some(_) => {}
            }
            if let Some(budgets) = &spec.budgets {
                let account = self.account_named(&spec.name).await?;
                if account.budgets != *budgets {
                    self.set_account_budgets(&account.id, budgets.clone(), Precondition::Any)
                        .await?;
                    report.tenants_updated.push(format!("account {} budgets", spec.name));
                }
            }
        }
        for (i, spec) in document.users.iter().enumerate() {
            let account = self.account_named(&spec.account).await?;
            match self.find_user_by_email(&spec.email).await? {
                None => {
                    self.create_user(NewUser {
                        account_id: account.id,
                        email: spec.email.clone(),
                        display_name: spec.display_name.clone(),
                        role: spec.role,
                        state: Default::default(),
                        sso: None,
                        password_hash: None,
                        // An admin's file vouches for it.
                        email_verified: true,
                    })
                    .await?;
                    report.tenants_created.push(format!("user {}", spec.email));
                }
                Some(_) if keep => report.kept.push(format!("user {}", spec.email)),
                Some(user) if user.account_id != account.id => {
                    return Err(StoreError::invalid(
                        format!("users[{i}].account"),
                        format!(
                            "user `{}` belongs to another account than `{}` in the store",
                            spec.email, spec.account
                        ),
                    ));
                }
                Some(user) if user.display_name != spec.display_name || user.role != spec.role => {
                    let update = UserUpdate {
                        display_name: Some(spec.display_name.clone()).filter(|n| !n.is_empty()),
                        role: Some(spec.role),
                        ..UserUpdate::default()
                    };
                    self.update_user(&user.id, update).await?;
                    report.tenants_updated.push(format!("user {}", spec.email));
                }
                Some(_) => {}
            }
        }
        for (i, spec) in document.applications.iter().enumerate() {
            let account = self.account_named(&spec.account).await?;
            let label = format!("application {}/{}", spec.account, spec.name);
            let (app, created) = match self.find_application(&account.id, &spec.name).await? {
                None => {
                    let app = self
                        .create_application(NewApplication {
                            account_id: account.id,
                            name: spec.name.clone(),
                            description: spec.description.clone(),
                            product: spec.product.clone(),
                            plan: spec.plan.clone(),
                        })
                        .await?;
                    (app, true)
                }
                Some(_) if keep => {
                    report.kept.push(label);
                    continue;
                }
                Some(app) if app.product != spec.product => {
                    return Err(StoreError::invalid(
                        format!("applications[{i}].product"),
                        format!(
                            "application `{}` of `{}` is subscribed to product `{}` in the store; an application \
                             keeps its product: name a new application for `{}`",
                            spec.name, spec.account, app.product, spec.product
                        ),
                    ));
                }
                Some(app) => (app, false),
            };
            // The file is an admin's: plans move at once, states by the
            // same actions the console takes.
            let mut app = app;
            let mut changed = false;
            if spec.description != app.description {
                let update = ApplicationUpdate {
                    name: None,
                    description: Some(spec.description.clone()),
                };
                app = self.update_application(&app.id, update).await?;
                changed = true;
            }
            if spec.plan != app.plan {
                app = self
                    .change_plan(&app.id, &spec.plan, PlanChangeBy::Admin, Precondition::Any)
                    .await?;
                changed = true;
            }
            if let Some(action) = spec
                .state
                .map(|to| ApplicationAction::to_reach(app.state, to))
                .transpose()?
                .flatten()
            {
                app = self.act_on_application(&app.id, action, Precondition::Any).await?;
                changed = true;
            }
            if let Some(budgets) = spec.budgets.as_ref().filter(|b| **b != app.budgets) {
                self.set_application_budgets(&app.id, budgets.clone(), Precondition::Any)
                    .await?;
                changed = true;
            }
            if created {
                report.tenants_created.push(label);
            } else if changed {
                report.tenants_updated.push(label);
            }
        }
        Ok(())
    }

    async fn account_named(&self, name: &str) -> StoreResult<crate::model::Account> {
        self.find_account(name)
            .await?
            .ok_or_else(|| StoreError::not_found("account", name))
    }

    /// The store as a document `apply` accepts: the catalog (product
    /// drafts), and with `tenants` also accounts, users and applications.
    pub async fn export(&self, tenants: bool) -> StoreResult<CatalogDocument> {
        let catalog = self.catalog().await?;
        let mut document = CatalogDocument {
            backends: catalog.backends,
            products: catalog.products,
            plans: catalog.plans,
            ..CatalogDocument::default()
        };
        if !tenants {
            return Ok(document);
        }
        let accounts = all_pages(|page| async move { self.list_accounts(&page).await }).await?;
        let names: std::collections::HashMap<String, String> =
            accounts.iter().map(|a| (a.id.clone(), a.name.clone())).collect();
        document.accounts = accounts
            .into_iter()
            .map(|a| AccountSpec {
                name: a.name,
                description: a.description,
                sso: a.sso,
                budgets: Some(a.budgets).filter(|b| !b.is_empty()),
            })
            .collect();
        let users = all_pages(|page| async move { self.list_users(None, &page).await }).await?;
        document.users = users
            .into_iter()
            .filter_map(|user| {
                Some(UserSpec {
                    account: names.get(&user.account_id)?.clone(),
                    email: user.email,
                    display_name: user.display_name,
                    role: user.role,
                })
            })
            .collect();
        let all = ApplicationFilter::default();
        let apps = all_pages(|page| {
            let all = &all;
            async move { self.list_applications(all, &page).await }
        })
        .await?;
        document.applications = apps
            .into_iter()
            .filter_map(|app| {
                Some(ApplicationSpec {
                    account: names.get(&app.account_id)?.clone(),
                    name: app.name,
                    description: app.description,
                    product: app.product,
                    plan: app.plan,
                    state: Some(app.state),
                    budgets: Some(app.budgets).filter(|b| !b.is_empty()),
                })
            })
            .collect();
        document.accounts.sort_by(|a, b| a.name.cmp(&b.name));
        document.users.sort_by(|a, b| a.email.cmp(&b.email));
        document
            .applications
            .sort_by(|a, b| (&a.account, &a.name).cmp(&(&b.account, &b.name)));
        Ok(document)
    }
}
