//! Setting the spend budgets of organizations, applications and keys
//! (admins, and owners within them), and where they stand. What a budget
//! is and how it is enforced: [`crate::model::budget`].

use super::Store;
use super::versions::{Precondition, check as check_precondition};
use crate::error::{StoreError, StoreResult};
use serde::Serialize;
use time::OffsetDateTime;

use super::BudgetAlert;
use crate::model::budget::{nanos_to_money, validate_budgets, with_owner_budgets};
use crate::model::{Account, ApiKey, Application, Budget, BudgetPeriod, BudgetScope, Money};

impl Store {
    /// Replaces an application's budgets, if it is at the version
    /// `precondition` names. Spend counted so far stays: a new budget of
    /// this month counts this month's spend.
    pub async fn set_application_budgets(
        &self,
        id: &str,
        budgets: Vec<Budget>,
        precondition: Precondition<'_>,
    ) -> StoreResult<Application> {
        self.edit_application_budgets(id, precondition, |_| budgets.clone())
            .await
    }

    /// The one way an application's budgets change: `edit` maps them as
    /// stored to the new ones, written only over the version it read, so a
    /// change made meanwhile (an admin's budget) is never overwritten
    /// unseen. Without a version asked for, a lost race is tried again.
    async fn edit_application_budgets(
        &self,
        id: &str,
        precondition: Precondition<'_>,
        edit: impl Fn(&[Budget]) -> Vec<Budget>,
    ) -> StoreResult<Application> {
        self.index_budgeted(format!("app:{id}")).await?;
        let mut tries = 0;
        loop {
            let before = self.application_at(id, precondition).await?;
            let budgets = edit(&before.budgets);
            validate_budgets("budgets", &budgets)?;
            let after = Application {
                budgets,
                ..before.clone()
            };
            match self.replace_application(&before, after, "budgets").await {
                Err(StoreError::Conflict(_)) if matches!(precondition, Precondition::Any) && tries < 3 => tries += 1,
                written => return written,
            }
        }
    }

    /// Replaces an organization's budgets, if it is at the version
    /// `precondition` names. They count the spend of all its applications
    /// together, in their plans' currency (one currency is assumed).
    pub async fn set_account_budgets(
        &self,
        id: &str,
        budgets: Vec<Budget>,
        precondition: Precondition<'_>,
    ) -> StoreResult<Account> {
        validate_budgets("budgets", &budgets)?;
        self.index_budgeted(format!("account:{id}")).await?;
        let before = self
            .get_account(id)
            .await?
            .ok_or_else(|| StoreError::not_found("account", id))?;
        check_precondition("account", id, Some(&before), precondition)?;
        let after = Account {
            budgets,
            ..before.clone()
        };
        match self.replace_account(&before, &after, "budgets").await? {
            Ok(()) => Ok(after),
            Err(_) => Err(StoreError::PreconditionFailed {
                kind: "account",
                id: id.to_owned(),
            }),
        }
    }

    /// Replaces a key's budgets; its rotations carry them on, and spend
    /// through any key of the chain counts against them.
    pub async fn set_key_budgets(&self, id: &str, budgets: Vec<Budget>) -> StoreResult<ApiKey> {
        self.edit_key_budgets(id, |_| budgets).await
    }

    /// A key's budgets as `edit` maps those stored, under the conditional
    /// write of [`Store::change_key`] on the version it read.
    async fn edit_key_budgets(&self, id: &str, edit: impl FnOnce(&[Budget]) -> Vec<Budget>) -> StoreResult<ApiKey> {
        self.index_budgeted(format!("key:{id}")).await?;
        self.change_key(id, "budgets", |key| {
            let budgets = edit(&key.budgets);
            validate_budgets("budgets", &budgets)?;
            key.budgets = budgets;
            Ok(())
        })
        .await
    }
}

/// Where a budget stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetStatus {
    /// `organization`, `application` or `key`.
    pub scope: String,
    pub scope_id: String,
    pub name: String,
    pub budget: Budget,
    pub currency: String,
    /// Spent in the current period (requests settled; those in flight not).
    pub spent: Money,
    pub remaining: Money,
    /// Spent as a percentage of the amount (may pass 100 for a soft budget).
    pub percent: u64,
    /// When the period starts over; `null` for a total budget.
    #[serde(with = "time::serde::rfc3339::option")]
    pub resets_at: Option<OffsetDateTime>,
}

impl BudgetStatus {
    /// `budget` with `spent` nanos spent in its period holding `now`.
    pub(super) fn at(
        scope: &BudgetScope,
        id: &str,
        name: &str,
        budget: &Budget,
        currency: &str,
        spent: u64,
        now: OffsetDateTime,
    ) -> BudgetStatus {
        let period = budget.period.period();
        let limit = budget.nanos();
        let resets_at = (budget.period != BudgetPeriod::Total)
            .then(|| {
                OffsetDateTime::from_unix_timestamp(period.bucket_end(period.bucket_start(now.unix_timestamp()))).ok()
            })
            .flatten();
        BudgetStatus {
            scope: scope.as_str().to_owned(),
            scope_id: id.to_owned(),
            name: name.to_owned(),
            budget: budget.clone(),
            currency: currency.to_owned(),
            spent: nanos_to_money(spent),
            remaining: Money::from_micros(limit.saturating_sub(spent) / 1_000),
            percent: budget.percent_spent(spent),
            resets_at,
        }
    }
}

impl Store {
    /// The budgets of an organization, its applications and their keys,
    /// with their spend now: for the portal, the console and the admin API.
    pub async fn budget_statuses(
        &self,
        account: &Account,
        applications: &[Application],
    ) -> StoreResult<Vec<BudgetStatus>> {
        let mut entries = vec![format!("account:{}", account.id)];
        for app in applications {
            entries.push(format!("app:{}", app.id));
            for key in self.application_keys(&app.id).await? {
                entries.push(format!("key:{}", key.id));
            }
        }
        self.budget_statuses_of(Some(entries)).await
    }

    /// The alerts to show an organization's members now: of budgets whose
    /// period is still the one alerted, the highest threshold reached each.
    pub async fn current_budget_alerts(&self, account_id: &str) -> StoreResult<Vec<BudgetAlert>> {
        let now = self.now().unix_timestamp();
        let mut shown: Vec<BudgetAlert> = Vec::new();
        for alert in self.budget_alerts(Some(account_id), 50).await? {
            let period = alert.budget.period.period();
            if period.bucket_start(now) != alert.period_start.unix_timestamp() {
                continue;
            }
            let same = |a: &BudgetAlert| {
                a.scope_id == alert.scope_id
                    && a.budget.period == alert.budget.period
                    && a.budget.mode == alert.budget.mode
            };
            match shown.iter_mut().find(|a| same(a)) {
                Some(kept) if kept.threshold_percent < alert.threshold_percent => *kept = alert,
                Some(_) => {}
                None => shown.push(alert),
            }
        }
        Ok(shown)
    }
}

impl Store {
    /// The application of `application_id` if `user_id` is an owner of its
    /// organization (read again now): owners set budgets of their own.
    async fn owned_application(&self, user_id: &str, application_id: &str) -> StoreResult<Application> {
        let user = self
            .get_user(user_id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", user_id))?;
        let app = self
            .get_application(application_id)
            .await?
            .filter(|app| app.account_id == user.account_id)
            .ok_or_else(|| StoreError::not_found("application", application_id))?;
        if !super::is_owner(&user) {
            return Err(StoreError::Forbidden(
                "only the organization's owners set its budgets".into(),
            ));
        }
        Ok(app)
    }

    /// An owner's budgets on one of the organization's applications, in
    /// place of the owners' earlier ones; an admin's stay
    /// ([`with_owner_budgets`]).
    pub async fn set_application_budgets_as_owner(
        &self,
        user_id: &str,
        application_id: &str,
        owned: Vec<Budget>,
        precondition: Precondition<'_>,
    ) -> StoreResult<Application> {
        let app = self.owned_application(user_id, application_id).await?;
        self.edit_application_budgets(&app.id, precondition, |current| {
            with_owner_budgets(current, owned.clone())
        })
        .await
    }

    /// An owner's budgets on one of the organization's keys, as
    /// [`Store::set_application_budgets_as_owner`].
    pub async fn set_key_budgets_as_owner(
        &self,
        user_id: &str,
        key_id: &str,
        owned: Vec<Budget>,
    ) -> StoreResult<ApiKey> {
        let key = self
            .get_key(key_id)
            .await?
            .ok_or_else(|| StoreError::not_found("key", key_id))?;
        self.owned_application(user_id, &key.application_id)
            .await
            .map_err(|error| match error {
                StoreError::NotFound { .. } => StoreError::not_found("key", key_id),
                other => other,
            })?;
        self.edit_key_budgets(key_id, |current| with_owner_budgets(current, owned))
            .await
    }
}
