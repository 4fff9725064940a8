//! Setting the spend budgets of applications and keys (admins). What a
//! budget is and how it is enforced: [`crate::model::budget`].

use super::Store;
use super::versions::Precondition;
use crate::error::StoreResult;
use crate::model::budget::validate_budgets;
use crate::model::{ApiKey, Application, Budget};

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
        let before = self.application_at(id, precondition).await?;
        let mut after = before.clone();
        after.budgets = budgets;
        self.replace_application(&before, after, "budgets").await
    }

    /// Replaces a key's budgets; its rotations carry them on, and spend
    /// through any key of the chain counts against them.
    pub async fn set_key_budgets(&self, id: &str, budgets: Vec<Budget>) -> StoreResult<ApiKey> {
        validate_budgets("budgets", &budgets)?;
        self.change_key(id, "budgets", |key| key.budgets = budgets).await
    }
}
