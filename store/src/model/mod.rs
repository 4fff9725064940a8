//! The domain model shared by the control plane and the data plane.

pub mod admission;
pub mod budget;
pub mod catalog;
pub mod key;
pub mod money;
pub mod pattern;
pub mod tenancy;
pub mod token_access;

pub use admission::{Priority, QueuePolicy, Saturation};
pub use budget::{
    ACCOUNT_SPEND, Budget, BudgetAuthor, BudgetMode, BudgetPeriod, BudgetScope, ModelPrice, SPEND, SpendRates,
    account_budget_limits, budget_limits, is_spend_metric, key_spend_metric, spend_deltas,
};
pub use catalog::*;
pub use key::{AdminScope, AdminToken, DEFAULT_KEY_PREFIX, KeyHash, KeySecret, has_valid_checksum, valid_key_prefix};
pub use money::Money;
pub use pattern::PathPattern;
pub use tenancy::*;
pub use token_access::{AuthMethod, Credential, TokenCaller, TokenPlanRule, token_application_name, token_plan};
