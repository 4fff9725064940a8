//! Setting the spend budgets of organizations, applications and keys
//! (admins). What a
//! budget is and how it is enforced: [`crate::model::budget`].

use super::versions::{Precondition, check as check_precondition};
use super::{Store, encode};
use crate::backend::{Condition, WriteBatch};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::model::budget::validate_budgets;
use crate::model::{Account, ApiKey, Application, Budget};

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
        validate_budgets("budgets", &budgets)?;
        self.index_budgeted(format!("app:{id}")).await?;
        let before = self.application_at(id, precondition).await?;
        let mut after = before.clone();
        after.budgets = budgets;
        self.replace_application(&before, after, "budgets").await
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
        let mut after = before.clone();
        after.budgets = budgets;
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(format!("account:{id}"), encode(&before)?))
            .put(format!("account:{id}"), encode(&after)?)
            .publish(Change::Account { id: id.to_owned() });
        let audit = vec![self.audit_entry("budgets", "account", id, Some(&before), Some(&after))];
        match self.commit(batch, audit).await? {
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
        validate_budgets("budgets", &budgets)?;
        self.index_budgeted(format!("key:{id}")).await?;
        self.change_key(id, "budgets", |key| key.budgets = budgets).await
    }
}
