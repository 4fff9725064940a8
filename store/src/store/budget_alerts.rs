//! Budget alerts: raised once per budget, period and threshold when spend
//! reaches a budget's `alert_at_percent`, whichever process scans first
//! (a conditional write decides), then delivered to the configured webhook
//! with retries. Their delivery is kept on the alert, for the console.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::{BudgetStatus, Store, encode, now_ms};
use crate::backend::{Condition, WriteBatch};
use crate::error::{StoreError, StoreResult};
use crate::ids::new_id;
use crate::model::budget::nanos_to_money;
use crate::model::{ACCOUNT_SPEND, Account, ApiKey, Application, Budget, BudgetScope, Money, SPEND, key_spend_metric};

/// Everything with budgets, for the scan: `account:{id}`, `app:{id}`,
/// `key:{id}`. Entries whose budgets went are dropped by the scan.
const BUDGETED: &str = "budgeted";
const ALL_ALERTS: &str = "budget-alerts";
const UNDELIVERED: &str = "budget-alerts-undelivered";

fn account_alerts(account_id: &str) -> String {
    format!("account-budget-alerts:{account_id}")
}

/// Where an alert's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// No webhook was configured when it was raised: shown, not sent.
    NotSent,
    Pending,
    Delivered,
    /// Every attempt failed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertDelivery {
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
}

/// Spend reached `threshold_percent` of a budget in one of its periods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetAlert {
    pub id: String,
    /// `organization`, `application` or `key`.
    pub scope: String,
    /// The account's, application's or key's id.
    pub scope_id: String,
    /// What it is called (an account's or application's name, a key's
    /// label or masked form).
    pub name: String,
    pub account_id: String,
    pub budget: Budget,
    pub currency: String,
    pub threshold_percent: u8,
    /// Spent in the period when the alert was raised.
    pub spent: Money,
    #[serde(with = "time::serde::rfc3339")]
    pub period_start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub raised_at: OffsetDateTime,
    pub delivery: AlertDelivery,
}

/// A budget's spend counter: its shard and metric.
struct Counter {
    shard: String,
    metric: String,
}

/// One budgeted thing, read for a scan.
struct Budgeted {
    scope: BudgetScope,
    id: String,
    name: String,
    account_id: String,
    /// An application to price in (its plan's currency).
    application: Option<Application>,
    budgets: Vec<Budget>,
    counter: Counter,
}

/// How long a delivery attempt may take before another scanner may try.
pub const DELIVERY_LEASE: Duration = Duration::seconds(30);

/// The wait before attempt `attempts + 1`: 1 s, doubling, at most an hour.
pub fn retry_backoff(attempts: u32) -> Duration {
    Duration::seconds(1i64 << attempts.saturating_sub(1).min(12)).min(Duration::hours(1))
}

impl Store {
    /// Puts `entry` (`account:{id}`, `app:{id}`, `key:{id}`) in the scan's
    /// index; called before budgets are written, so none is missed.
    pub(super) async fn index_budgeted(&self, entry: String) -> StoreResult<()> {
        let mut batch = WriteBatch::default();
        batch.add_member(BUDGETED, entry);
        self.commit(batch, Vec::new())
            .await?
            .map_err(|_| StoreError::Conflict("indexing a budget failed".into()))
    }

    /// Reads every budget's spend and raises the alerts whose threshold it
    /// reached in this period and that no scan raised yet. `deliver`: a
    /// webhook will send them. Returns the alerts raised now.
    pub async fn scan_budget_alerts(&self, deliver: bool) -> StoreResult<Vec<BudgetAlert>> {
        let now = self.now();
        let mut raised = Vec::new();
        for entry in self.all_members(BUDGETED).await? {
            let Some(budgeted) = self.budgeted(&entry).await? else {
                let mut batch = WriteBatch::default();
                batch.remove_member(BUDGETED, entry);
                self.commit(batch, Vec::new()).await?.ok();
                continue;
            };
            let currency = self.currency_of(&budgeted).await?;
            for budget in &budgeted.budgets {
                let period = budget.period.period();
                let spent = self.spent_now(&budgeted, budget).await?;
                let percent = budget.percent_spent(spent);
                for &threshold in budget.alert_at_percent.iter().filter(|&&t| u64::from(t) <= percent) {
                    let start = period.bucket_start(now.unix_timestamp());
                    let alert = BudgetAlert {
                        id: new_id("alert", now_ms(now)),
                        scope: budgeted.scope.as_str().to_owned(),
                        scope_id: budgeted.id.clone(),
                        name: budgeted.name.clone(),
                        account_id: budgeted.account_id.clone(),
                        budget: budget.clone(),
                        currency: currency.clone(),
                        threshold_percent: threshold,
                        spent: nanos_to_money(spent),
                        period_start: OffsetDateTime::from_unix_timestamp(start).unwrap_or(now),
                        raised_at: now,
                        delivery: AlertDelivery {
                            state: if deliver {
                                DeliveryState::Pending
                            } else {
                                DeliveryState::NotSent
                            },
                            attempts: 0,
                            next_attempt_at: deliver.then_some(now),
                            last_error: None,
                            delivered_at: None,
                        },
                    };
                    // By counter, not by key: the keys of one rotation
                    // chain share their spend and raise one alert.
                    let once = format!(
                        "budget-alert-once:{}:{}:{}:{:?}:{start}:{threshold}",
                        budgeted.counter.shard,
                        budgeted.counter.metric,
                        budget.period.as_str(),
                        budget.mode
                    );
                    let mut batch = WriteBatch::default();
                    batch
                        .require(Condition::Absent(once.clone()))
                        .put(once, encode(&alert.id)?)
                        .put(format!("budget-alert:{}", alert.id), encode(&alert)?)
                        .add_member(ALL_ALERTS, alert.id.clone())
                        .add_member(account_alerts(&alert.account_id), alert.id.clone());
                    if deliver {
                        batch.add_member(UNDELIVERED, alert.id.clone());
                    }
                    if self.commit(batch, Vec::new()).await?.is_ok() {
                        raised.push(alert);
                    }
                }
            }
        }
        Ok(raised)
    }

    /// The currency a budget counts in: its application's plan's; an
    /// organization's, that of its first application's plan.
    async fn currency_of(&self, budgeted: &Budgeted) -> StoreResult<String> {
        let application = match &budgeted.application {
            Some(app) => Some(app.clone()),
            None => match self
                .backend
                .members(&format!("account-apps:{}", budgeted.account_id), None, 1, false)
                .await?
                .first()
            {
                Some(id) => self.get_application(id).await?,
                None => None,
            },
        };
        let plan = match application {
            Some(app) => self.get_plan(&app.product, &app.plan).await?,
            None => None,
        };
        Ok(plan.map_or_else(|| "USD".to_owned(), |p| p.currency))
    }

    /// Where every budget of `entries` (`account:{id}`, `app:{id}`,
    /// `key:{id}`; all budgeted ones when `None`) stands now.
    pub async fn budget_statuses_of(&self, entries: Option<Vec<String>>) -> StoreResult<Vec<BudgetStatus>> {
        let entries = match entries {
            Some(entries) => entries,
            None => self.all_members(BUDGETED).await?,
        };
        let now = self.now();
        let mut statuses = Vec::new();
        for entry in entries {
            let Some(budgeted) = self.budgeted(&entry).await? else {
                continue;
            };
            let currency = self.currency_of(&budgeted).await?;
            for budget in &budgeted.budgets {
                let spent = self.spent_now(&budgeted, budget).await?;
                statuses.push(BudgetStatus::at(
                    &budgeted.scope,
                    &budgeted.id,
                    &budgeted.name,
                    budget,
                    &currency,
                    spent,
                    now,
                ));
            }
        }
        Ok(statuses)
    }

    /// What `budgeted` spent in `budget`'s current period, in nanos.
    async fn spent_now(&self, budgeted: &Budgeted, budget: &Budget) -> StoreResult<u64> {
        let counter = &budgeted.counter;
        self.usage(&counter.shard, &counter.metric, budget.period.period(), self.now())
            .await
    }

    async fn budgeted(&self, entry: &str) -> StoreResult<Option<Budgeted>> {
        let found = match entry.split_once(':') {
            Some(("account", id)) => self.get_account(id).await?.map(|account: Account| Budgeted {
                scope: BudgetScope::Organization,
                name: account.shown_name().to_owned(),
                counter: Counter {
                    shard: account.id.clone(),
                    metric: ACCOUNT_SPEND.to_owned(),
                },
                id: account.id.clone(),
                account_id: account.id,
                application: None,
                budgets: account.budgets,
            }),
            Some(("app", id)) => self.get_application(id).await?.map(|app| Budgeted {
                scope: BudgetScope::Application,
                id: app.id.clone(),
                name: app.name.clone(),
                account_id: app.account_id.clone(),
                counter: Counter {
                    shard: app.id.clone(),
                    metric: SPEND.to_owned(),
                },
                budgets: app.budgets.clone(),
                application: Some(app),
            }),
            Some(("key", id)) => match self.get_key(id).await? {
                Some(key) => self.get_application(&key.application_id).await?.map(|app| {
                    let key: ApiKey = key;
                    Budgeted {
                        scope: BudgetScope::Key,
                        name: if key.label.is_empty() {
                            key.masked()
                        } else {
                            format!("{} ({})", key.label, key.masked())
                        },
                        counter: Counter {
                            shard: app.id.clone(),
                            metric: key_spend_metric(key.spend_lineage()),
                        },
                        id: key.id,
                        account_id: app.account_id.clone(),
                        budgets: key.budgets,
                        application: Some(app),
                    }
                }),
                None => None,
            },
            _ => None,
        };
        Ok(found.filter(|b| !b.budgets.is_empty()))
    }

    /// Undelivered alerts whose next attempt is due, oldest first.
    pub async fn due_alert_deliveries(&self, limit: usize) -> StoreResult<Vec<BudgetAlert>> {
        let now = self.now();
        let ids = self.backend.members(UNDELIVERED, None, limit.max(1), false).await?;
        let keys: Vec<String> = ids.iter().map(|id| format!("budget-alert:{id}")).collect();
        Ok(self
            .get_many_json::<BudgetAlert>(&keys)
            .await?
            .into_iter()
            .flatten()
            .filter(|a| a.delivery.next_attempt_at.is_none_or(|at| at <= now))
            .collect())
    }

    /// Takes `alert` for one delivery attempt: counts it and puts the next
    /// attempt after [`DELIVERY_LEASE`], if no one else took it since it
    /// was read. `None` when another scanner did.
    pub async fn claim_alert_delivery(&self, alert: &BudgetAlert) -> StoreResult<Option<BudgetAlert>> {
        let mut claimed = alert.clone();
        claimed.delivery.attempts += 1;
        claimed.delivery.next_attempt_at = Some(self.now() + DELIVERY_LEASE);
        match self.replace_alert(alert, &claimed, false).await {
            Ok(()) => Ok(Some(claimed)),
            Err(StoreError::PreconditionFailed { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Records how a claimed attempt went: delivered, or retried after
    /// [`retry_backoff`] until `max_attempts`, then failed.
    pub async fn finish_alert_delivery(
        &self,
        claimed: &BudgetAlert,
        outcome: Result<(), String>,
        max_attempts: u32,
    ) -> StoreResult<BudgetAlert> {
        let now = self.now();
        let mut after = claimed.clone();
        let done = match outcome {
            Ok(()) => {
                after.delivery.state = DeliveryState::Delivered;
                after.delivery.delivered_at = Some(now);
                after.delivery.next_attempt_at = None;
                after.delivery.last_error = None;
                true
            }
            Err(error) => {
                after.delivery.last_error = Some(error.chars().take(300).collect());
                if after.delivery.attempts >= max_attempts {
                    after.delivery.state = DeliveryState::Failed;
                    after.delivery.next_attempt_at = None;
                    true
                } else {
                    after.delivery.next_attempt_at = Some(now + retry_backoff(after.delivery.attempts));
                    false
                }
            }
        };
        self.replace_alert(claimed, &after, done).await?;
        Ok(after)
    }

    async fn replace_alert(&self, before: &BudgetAlert, after: &BudgetAlert, done: bool) -> StoreResult<()> {
        let key = format!("budget-alert:{}", before.id);
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(key.clone(), encode(before)?))
            .put(key, encode(after)?);
        if done {
            batch.remove_member(UNDELIVERED, before.id.clone());
        }
        self.commit(batch, Vec::new())
            .await?
            .map_err(|_| StoreError::PreconditionFailed {
                kind: "budget alert",
                id: before.id.clone(),
            })
    }

    /// The newest alerts first: of one organization, or of all.
    pub async fn budget_alerts(&self, account_id: Option<&str>, limit: usize) -> StoreResult<Vec<BudgetAlert>> {
        let collection = account_id.map_or_else(|| ALL_ALERTS.to_owned(), account_alerts);
        let ids = self.backend.members(&collection, None, limit.max(1), true).await?;
        let keys: Vec<String> = ids.iter().map(|id| format!("budget-alert:{id}")).collect();
        Ok(self
            .get_many_json::<BudgetAlert>(&keys)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_backoff(1), Duration::seconds(1));
        assert_eq!(retry_backoff(2), Duration::seconds(2));
        assert_eq!(retry_backoff(5), Duration::seconds(16));
        assert_eq!(retry_backoff(40), Duration::hours(1));
    }
}
