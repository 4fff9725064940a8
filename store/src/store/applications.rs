//! Applications: an account's subscription to a product on a plan, and
//! the rules of its life written once: which state changes an admin may
//! make ([`ApplicationAction`]) and how a plan changes
//! ([`PlanChangeBy`]). The portal, its console, the admin API and `maas
//! apply` all call these; none decides a transition itself.

use serde::{Deserialize, Serialize};

use super::catalog::plan_id;
use super::paging::{Page, Paged};
use super::tenancy::{check_name, check_text, lower};
use super::versions::{Precondition, check as check_precondition};
use super::{Store, encode, now_ms};
use crate::backend::{Condition, WriteBatch};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::ids::new_id;
use crate::model::{ApiKey, Application, ApplicationState, AuthMethod, Plan};

/// The longest description of an account or application, in characters.
pub const MAX_DESCRIPTION: usize = 2000;

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
    #[cfg_attr(feature = "openapi", schema(max_length = 2000))]
    pub description: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub product: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub plan: String,
}

/// Fields of an application to change. Its plan and state change only
/// through [`Store::change_plan`] and [`Store::act_on_application`].
#[derive(Debug, Clone, Default)]
pub struct ApplicationUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ApplicationFilter {
    pub account_id: Option<String>,
    pub product: Option<String>,
    pub state: Option<ApplicationState>,
}

/// What an admin does to an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplicationAction {
    /// `pending` → `live`; on a live application, grants the plan its
    /// owner asked for.
    Approve,
    /// `live` or `pending` → `suspended`: its keys are refused.
    Suspend,
    /// `suspended` → `live`.
    Resume,
    /// Turns down the plan the owner asked for; the plan stays.
    Decline,
}

impl ApplicationAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationAction::Approve => "approve",
            ApplicationAction::Suspend => "suspend",
            ApplicationAction::Resume => "resume",
            ApplicationAction::Decline => "decline",
        }
    }

    fn past_tense(self) -> &'static str {
        match self {
            ApplicationAction::Approve => "approved",
            ApplicationAction::Suspend => "suspended",
            ApplicationAction::Resume => "resumed",
            ApplicationAction::Decline => "declined",
        }
    }

    pub fn parse(name: &str) -> Option<ApplicationAction> {
        [
            ApplicationAction::Approve,
            ApplicationAction::Suspend,
            ApplicationAction::Resume,
            ApplicationAction::Decline,
        ]
        .into_iter()
        .find(|a| a.as_str() == name)
    }

    /// The action that takes an application from `from` to `to`: `None`
    /// when it is there already; a conflict when no action leads there
    /// (nothing makes a live application pending again).
    pub fn to_reach(from: ApplicationState, to: ApplicationState) -> StoreResult<Option<ApplicationAction>> {
        use ApplicationState::*;
        match (from, to) {
            (Live, Live) | (Pending, Pending) | (Suspended, Suspended) => Ok(None),
            (Pending, Live) => Ok(Some(ApplicationAction::Approve)),
            (Suspended, Live) => Ok(Some(ApplicationAction::Resume)),
            (_, Suspended) => Ok(Some(ApplicationAction::Suspend)),
            (_, Pending) => Err(StoreError::Conflict(format!(
                "an application that is {} cannot become pending again",
                from.as_str()
            ))),
        }
    }

    /// `app` after the action; `Ok(None)` when its outcome holds already
    /// (approving a live application without a request, suspending a
    /// suspended one), so repeating an action is harmless.
    pub fn apply(self, app: &Application) -> StoreResult<Option<Application>> {
        use ApplicationState::*;
        let mut after = app.clone();
        match (self, app.state) {
            (ApplicationAction::Approve, Pending) => after.state = Live,
            (ApplicationAction::Approve, Live) => match after.requested_plan.take() {
                Some(plan) => after.plan = plan,
                None => return Ok(None),
            },
            (ApplicationAction::Suspend, Live | Pending) => after.state = Suspended,
            (ApplicationAction::Suspend, Suspended) => return Ok(None),
            (ApplicationAction::Resume, Suspended) => after.state = Live,
            (ApplicationAction::Resume, Live) => return Ok(None),
            (ApplicationAction::Decline, _) if app.requested_plan.is_some() => after.requested_plan = None,
            (action, state) => {
                return Err(StoreError::Conflict(format!(
                    "application `{}` is {}{}; it cannot be {}",
                    app.id,
                    state.as_str(),
                    if action == ApplicationAction::Decline {
                        " with no plan change asked for"
                    } else {
                        ""
                    },
                    action.past_tense()
                )));
            }
        }
        Ok(Some(after))
    }
}

/// Who changes an application's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanChangeBy {
    /// Its account's member, in the portal: only published plans, and a
    /// plan that needs approval is asked for, not granted.
    Owner,
    /// An admin (admin API, console, `maas apply`): any plan of the
    /// product, at once.
    Admin,
}

/// `app` on `plan` as `by` may put it; `Ok(None)` when nothing changes.
pub fn plan_change(app: &Application, plan: &Plan, by: PlanChangeBy) -> StoreResult<Option<Application>> {
    if by == PlanChangeBy::Owner && !plan.published {
        return Err(StoreError::invalid(
            "plan",
            format!("product `{}` offers no plan `{}`", app.product, plan.system_name),
        ));
    }
    let mut after = app.clone();
    if plan.system_name == app.plan {
        // Asking for the current plan withdraws a request.
        if after.requested_plan.take().is_none() {
            return Ok(None);
        }
        return Ok(Some(after));
    }
    match (by, app.state) {
        (PlanChangeBy::Admin, _) => {
            after.plan = plan.system_name.clone();
            after.requested_plan = None;
        }
        // Not yet approved: the new plan decides whether it needs approval.
        (PlanChangeBy::Owner, ApplicationState::Pending) => {
            after.plan = plan.system_name.clone();
            after.requested_plan = None;
            if !plan.approval_required {
                after.state = ApplicationState::Live;
            }
        }
        (PlanChangeBy::Owner, _) if plan.approval_required => {
            if after.requested_plan.as_deref() == Some(plan.system_name.as_str()) {
                return Ok(None);
            }
            after.requested_plan = Some(plan.system_name.clone());
        }
        (PlanChangeBy::Owner, _) => {
            after.plan = plan.system_name.clone();
            after.requested_plan = None;
        }
    }
    Ok(Some(after))
}

pub(super) fn app_name_key(account_id: &str, name: &str) -> String {
    format!("app-name:{account_id}:{}", lower(name))
}

impl Store {
    /// Subscribes an account to a product on a plan; the application starts
    /// `pending` when the plan requires approval, else `live`.
    pub async fn create_application(&self, new: NewApplication) -> StoreResult<Application> {
        check_name("name", &new.name, 200)?;
        check_text("description", &new.description, MAX_DESCRIPTION)?;
        if let Some(product) = self.get_product(&new.product).await?
            && !product.accepts(AuthMethod::ApiKey)
        {
            // Its callers bring the identity provider's tokens; their
            // applications are made on their first call.
            return Err(StoreError::invalid(
                "product",
                format!(
                    "product `{}` takes the identity provider's access tokens, not API keys: call it with a \
                     token; its application is made on the first call",
                    new.product
                ),
            ));
        }
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
            requested_plan: None,
            budgets: Vec::new(),
            token_client: None,
            created_at: now,
            updated_at: now,
        };
        self.insert_application(app, WriteBatch::default()).await
    }

    /// Writes a new application with its name, collection and plan
    /// indexes, on the conditions that its account and plan exist and its
    /// name is free in the account, after `own` (the caller's conditions
    /// and writes; one failing is reported as the name taken, which a
    /// caller racing others retries).
    pub(super) async fn insert_application(&self, app: Application, own: WriteBatch) -> StoreResult<Application> {
        let pid = plan_id(&app.product, &app.plan);
        let first = own.conditions.len();
        let mut batch = own;
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
            Err(failed) if failed.0 == first => Err(StoreError::not_found("account", app.account_id)),
            Err(failed) if failed.0 == first + 1 => Err(StoreError::not_found("plan", pid)),
            Err(_) => Err(StoreError::AlreadyExists {
                kind: "application",
                field: "name",
                value: app.name,
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

    /// Renames an application or changes its description, if it is at
    /// the version `precondition` names.
    pub async fn update_application_if(
        &self,
        id: &str,
        update: ApplicationUpdate,
        precondition: Precondition<'_>,
    ) -> StoreResult<Application> {
        let before = self.application_at(id, precondition).await?;
        let mut after = before.clone();
        if let Some(name) = update.name {
            check_name("name", &name, 200)?;
            after.name = name.trim().to_owned();
        }
        if let Some(description) = update.description {
            check_text("description", &description, MAX_DESCRIPTION)?;
            after.description = description;
        }
        self.replace_application(&before, after, "update").await
    }

    /// Takes an admin's `action` on an application ([`ApplicationAction::apply`]).
    pub async fn act_on_application(
        &self,
        id: &str,
        action: ApplicationAction,
        precondition: Precondition<'_>,
    ) -> StoreResult<Application> {
        let before = self.application_at(id, precondition).await?;
        match action.apply(&before)? {
            Some(after) => self.replace_application(&before, after, action.as_str()).await,
            None => Ok(before),
        }
    }

    /// Moves an application to another plan of its product, or asks for
    /// it, as [`plan_change`] decides for `by`.
    pub async fn change_plan(
        &self,
        id: &str,
        plan: &str,
        by: PlanChangeBy,
        precondition: Precondition<'_>,
    ) -> StoreResult<Application> {
        let before = self.application_at(id, precondition).await?;
        let plan = self.existing_plan(&before.product, plan).await?;
        match plan_change(&before, &plan, by)? {
            Some(after) => {
                let action = if after.plan == before.plan {
                    "request_plan"
                } else {
                    "change_plan"
                };
                self.replace_application(&before, after, action).await
            }
            None => Ok(before),
        }
    }

    pub(super) async fn application_at(&self, id: &str, precondition: Precondition<'_>) -> StoreResult<Application> {
        let app = self
            .get_application(id)
            .await?
            .ok_or_else(|| StoreError::not_found("application", id))?;
        check_precondition("application", id, Some(&app), precondition)?;
        Ok(app)
    }

    /// Writes `after` over `before`, on the condition it is still `before`,
    /// keeping the name and plan indexes in step.
    pub(super) async fn replace_application(
        &self,
        before: &Application,
        mut after: Application,
        action: &str,
    ) -> StoreResult<Application> {
        let id = before.id.as_str();
        let mut batch = WriteBatch::default();
        batch.require(Condition::Equals(format!("app:{id}"), encode(before)?));
        if lower(&after.name) != lower(&before.name) {
            batch
                .require(Condition::Absent(app_name_key(&after.account_id, &after.name)))
                .delete(app_name_key(&before.account_id, &before.name))
                .put(app_name_key(&after.account_id, &after.name), encode(&after.id)?);
        }
        if after.plan != before.plan {
            let (old, new) = (
                plan_id(&before.product, &before.plan),
                plan_id(&before.product, &after.plan),
            );
            batch
                .require(Condition::Exists(format!("plan:{new}")))
                .remove_member(format!("plan-apps:{old}"), id)
                .add_member(format!("plan-apps:{new}"), id);
        }
        after.updated_at = self.now();
        batch
            .put(format!("app:{id}"), encode(&after)?)
            .publish(Change::Application { id: id.to_owned() });
        let audit = vec![self.audit_entry(action, "application", id, Some(before), Some(&after))];
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

    pub(super) async fn stage_application_delete(&self, batch: &mut WriteBatch, app: &Application) -> StoreResult<()> {
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
        if let Some(client_id) = &app.token_client {
            batch.delete(super::token_clients::token_client_key(
                &app.account_id,
                &app.product,
                client_id,
            ));
            let users = super::token_clients::token_users_key(&app.id);
            for user in self.all_members(&users).await? {
                batch.remove_member(users.clone(), user);
            }
        }
        Ok(())
    }
}

pub(super) fn stage_key_delete(batch: &mut WriteBatch, key: &ApiKey) {
    batch
        .delete(format!("key:{}", key.hash))
        .delete(format!("key-id:{}", key.id))
        .delete(super::key_use::key_use_record(&key.id))
        .remove_member(format!("app-keys:{}", key.application_id), key.id.clone())
        .publish(crate::changes::Change::Key {
            id: key.id.clone(),
            hash: key.hash,
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ApplicationState::*;

    fn app(state: ApplicationState, plan: &str, requested: Option<&str>) -> Application {
        Application {
            id: "app_1".into(),
            account_id: "acc_1".into(),
            name: "a".into(),
            description: String::new(),
            product: "p".into(),
            plan: plan.into(),
            state,
            requested_plan: requested.map(str::to_owned),
            budgets: Vec::new(),
            token_client: None,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn plan(name: &str, published: bool, approval_required: bool) -> Plan {
        let mut plan: Plan = serde_json::from_value(serde_json::json!({"product": "p", "system_name": name})).unwrap();
        plan.published = published;
        plan.approval_required = approval_required;
        plan
    }

    #[test]
    fn an_owner_asks_for_a_plan_that_needs_approval() {
        let premium = plan("premium", true, true);
        let after = plan_change(&app(Live, "standard", None), &premium, PlanChangeBy::Owner)
            .unwrap()
            .unwrap();
        assert_eq!((after.plan.as_str(), after.state), ("standard", Live), "keeps its plan");
        assert_eq!(after.requested_plan.as_deref(), Some("premium"));
        // Suspended: the request waits too, and the state stays.
        let after = plan_change(&app(Suspended, "standard", None), &premium, PlanChangeBy::Owner)
            .unwrap()
            .unwrap();
        assert_eq!((after.plan.as_str(), after.state), ("standard", Suspended));
        // An admin moves it at once.
        let after = plan_change(&app(Live, "standard", None), &premium, PlanChangeBy::Admin)
            .unwrap()
            .unwrap();
        assert_eq!((after.plan.as_str(), after.requested_plan), ("premium", None));
        // Approving grants the plan asked for.
        let approved = ApplicationAction::Approve
            .apply(&app(Live, "standard", Some("premium")))
            .unwrap()
            .unwrap();
        assert_eq!(
            (approved.plan.as_str(), approved.requested_plan, approved.state),
            ("premium", None, Live)
        );
        let declined = ApplicationAction::Decline
            .apply(&app(Live, "standard", Some("premium")))
            .unwrap()
            .unwrap();
        assert_eq!((declined.plan.as_str(), declined.requested_plan), ("standard", None));
    }

    #[test]
    fn owners_pick_among_published_plans_and_repeat_harmlessly() {
        let hidden = plan("hidden", false, false);
        assert!(plan_change(&app(Live, "standard", None), &hidden, PlanChangeBy::Owner).is_err());
        assert!(plan_change(&app(Live, "standard", None), &hidden, PlanChangeBy::Admin).is_ok());
        let standard = plan("standard", true, false);
        assert_eq!(
            plan_change(&app(Live, "standard", None), &standard, PlanChangeBy::Owner).unwrap(),
            None
        );
        let withdrawn = plan_change(&app(Live, "standard", Some("premium")), &standard, PlanChangeBy::Owner)
            .unwrap()
            .unwrap();
        assert_eq!(
            withdrawn.requested_plan, None,
            "asking for the current plan withdraws the request"
        );
        // A pending application moved to a plan without approval is live, as if created on it.
        let after = plan_change(&app(Pending, "premium", None), &standard, PlanChangeBy::Owner)
            .unwrap()
            .unwrap();
        assert_eq!((after.plan.as_str(), after.state), ("standard", Live));
        let premium = plan("premium", true, true);
        let after = plan_change(&app(Pending, "gold", None), &premium, PlanChangeBy::Owner)
            .unwrap()
            .unwrap();
        assert_eq!((after.plan.as_str(), after.state), ("premium", Pending));
    }

    #[test]
    fn actions_move_only_from_their_states() {
        let cases = [
            (ApplicationAction::Approve, Pending, Some(Live)),
            (ApplicationAction::Approve, Live, None),
            (ApplicationAction::Suspend, Live, Some(Suspended)),
            (ApplicationAction::Suspend, Pending, Some(Suspended)),
            (ApplicationAction::Suspend, Suspended, None),
            (ApplicationAction::Resume, Suspended, Some(Live)),
            (ApplicationAction::Resume, Live, None),
        ];
        for (action, from, to) in cases {
            let result = action.apply(&app(from, "standard", None)).unwrap();
            assert_eq!(result.map(|a| a.state), to, "{action:?} from {from:?}");
        }
        for (action, from) in [
            (ApplicationAction::Approve, Suspended),
            (ApplicationAction::Resume, Pending),
            (ApplicationAction::Decline, Live),
        ] {
            let error = action.apply(&app(from, "standard", None)).unwrap_err();
            assert!(
                matches!(error, StoreError::Conflict(_)),
                "{action:?} from {from:?}: {error}"
            );
        }
        assert_eq!(
            ApplicationAction::to_reach(Pending, Live).unwrap(),
            Some(ApplicationAction::Approve)
        );
        assert_eq!(ApplicationAction::to_reach(Live, Live).unwrap(), None);
        assert!(ApplicationAction::to_reach(Live, Pending).is_err());
        assert_eq!(ApplicationAction::parse("resume"), Some(ApplicationAction::Resume));
        assert_eq!(ApplicationAction::parse("delete"), None);
    }
}
