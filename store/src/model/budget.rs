//! Spend budgets: how much money an application or a key may spend per
//! period, and what a request costs.
//!
//! Spend is counted in nanos (billionths of the plan's currency): a price
//! per 1,000 tokens in micros is then exactly the price of one token in
//! nanos, so a request's cost is an integer product and adds up with no
//! rounding. A hard budget is a limit on a spend counter in the
//! application's shard, held and settled as token limits are
//! ([`crate::limits::decide`] with the completion price as the grant's
//! rate), so concurrent requests can never spend past it between them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::catalog::{Plan, UsageLimit};
use super::money::Money;
use super::tenancy::{Account, ApiKey, Application};
use crate::backend::MAX_EXACT_COUNT;
use crate::error::{StoreError, StoreResult};
use crate::period::Period;

/// The counter of an application's spend, in nanos of its plan's currency.
/// No product metric can take this name (it is reserved).
pub const SPEND: &str = "spend";

/// The counter of an organization's spend (all its applications), in the
/// account's own shard: apart from the applications' counters, so its
/// budgets are held in a second atomic step ([`account_budget_limits`]).
pub const ACCOUNT_SPEND: &str = "account-spend";

/// Prefix of a key's spend counter: `key-spend:{lineage}`, in the shard
/// of the key's application. Product metric names never hold a `:`.
const KEY_SPEND_PREFIX: &str = "key-spend:";

/// Most budgets one application or key may have.
pub const MAX_BUDGETS: usize = 8;

/// The largest amount a budget may have, in whole currency units: its
/// nanos must stay below 2^53, the largest count every backend compares
/// exactly.
pub const MAX_BUDGET_UNITS: u64 = 9_000_000;

/// The counter of spend through key `lineage`: the id of the first key of a
/// rotation chain, so a rotated key keeps spending against the same budget.
pub fn key_spend_metric(lineage: &str) -> String {
    [KEY_SPEND_PREFIX, lineage].concat()
}

/// Whether `metric` counts money (nanos) rather than requests or tokens.
pub fn is_spend_metric(metric: &str) -> bool {
    BudgetScope::of_metric(metric).is_some()
}

/// The period a budget's spend is counted in; it starts over at the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Day,
    Week,
    Month,
    /// Never starts over.
    Total,
}

impl BudgetPeriod {
    pub const ALL: [BudgetPeriod; 4] = [
        BudgetPeriod::Day,
        BudgetPeriod::Week,
        BudgetPeriod::Month,
        BudgetPeriod::Total,
    ];

    /// The counter period it is counted in (UTC calendar buckets).
    pub fn period(self) -> Period {
        match self {
            BudgetPeriod::Day => Period::Day,
            BudgetPeriod::Week => Period::Week,
            BudgetPeriod::Month => Period::Month,
            BudgetPeriod::Total => Period::Eternity,
        }
    }

    /// The budget period counted in `period`'s buckets, if any.
    pub fn of(period: Period) -> Option<BudgetPeriod> {
        BudgetPeriod::ALL.into_iter().find(|p| p.period() == period)
    }

    /// How people name a budget of this period: `daily`, …, `total`.
    pub fn adjective(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "daily",
            BudgetPeriod::Week => "weekly",
            BudgetPeriod::Month => "monthly",
            BudgetPeriod::Total => "total",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
            BudgetPeriod::Total => "total",
        }
    }
}

/// What happens when a budget is spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BudgetMode {
    /// Requests that could spend past it are refused (429 `insufficient_quota`).
    #[default]
    Hard,
    /// Only counted; nothing is refused.
    Soft,
}

/// At most `amount` (in the plan's currency) spent per `period`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub amount: Money,
    pub period: BudgetPeriod,
    #[serde(default)]
    pub mode: BudgetMode,
    /// Percentages of `amount` at which an alert is sent, once per period
    /// each (`[]`: none).
    #[serde(default = "default_alerts")]
    #[cfg_attr(feature = "openapi", schema(max_items = 5))]
    pub alert_at_percent: Vec<u8>,
    /// Who set it: an admin's binds the organization's owners, who may
    /// only add budgets of their own (stricter, never looser).
    #[serde(default, skip_serializing_if = "is_admin")]
    pub set_by: BudgetAuthor,
}

/// Who set a budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BudgetAuthor {
    #[default]
    Admin,
    Owner,
}

fn is_admin(author: &BudgetAuthor) -> bool {
    *author == BudgetAuthor::Admin
}

/// `current` with the budgets an owner sets (`owned`) in place of the
/// owners' earlier ones: an admin's stay whatever the owner sends, so an
/// owner can add limits but never lift one.
pub fn with_owner_budgets(current: &[Budget], owned: Vec<Budget>) -> Vec<Budget> {
    current
        .iter()
        .filter(|b| b.set_by == BudgetAuthor::Admin)
        .cloned()
        .chain(owned.into_iter().map(|b| Budget {
            set_by: BudgetAuthor::Owner,
            ..b
        }))
        .collect()
}

/// Alerts at half, four fifths and all of a budget.
pub const DEFAULT_ALERTS: [u8; 3] = [50, 80, 100];

fn default_alerts() -> Vec<u8> {
    DEFAULT_ALERTS.to_vec()
}

impl Budget {
    /// The amount in nanos, the unit spend is counted in.
    pub fn nanos(&self) -> u64 {
        self.amount.micros.saturating_mul(1_000)
    }

    /// `spent` nanos as a whole percentage of the amount (past 100 when
    /// overspent, as a soft budget may be).
    pub fn percent_spent(&self, spent: u64) -> u64 {
        u64::try_from(u128::from(spent) * 100 / u128::from(self.nanos().max(1))).unwrap_or(u64::MAX)
    }
}

/// Checks a list of budgets as given to an application or a key; `field`
/// names it in the error.
pub fn validate_budgets(field: &str, budgets: &[Budget]) -> StoreResult<()> {
    if budgets.len() > MAX_BUDGETS {
        return Err(StoreError::invalid(
            field,
            format!("at most {MAX_BUDGETS} budgets, got {}", budgets.len()),
        ));
    }
    for (index, budget) in budgets.iter().enumerate() {
        if budget.amount.micros == 0 {
            return Err(StoreError::invalid(
                format!("{field}[{index}].amount"),
                "must be more than 0 (remove the budget instead)",
            ));
        }
        if budget.nanos() >= MAX_EXACT_COUNT || budget.amount.micros > MAX_BUDGET_UNITS * 1_000_000 {
            return Err(StoreError::invalid(
                format!("{field}[{index}].amount"),
                format!("must be at most {MAX_BUDGET_UNITS}"),
            ));
        }
        let alerts = &budget.alert_at_percent;
        if alerts.len() > 5
            || alerts.iter().any(|p| !(1..=100).contains(p))
            || alerts.windows(2).any(|pair| pair[0] >= pair[1])
        {
            return Err(StoreError::invalid(
                format!("{field}[{index}].alert_at_percent"),
                "at most 5 percentages from 1 to 100, in increasing order",
            ));
        }
        let twin = budgets[..index]
            .iter()
            .any(|b| b.period == budget.period && b.mode == budget.mode && b.set_by == budget.set_by);
        if twin {
            return Err(StoreError::invalid(
                format!("{field}[{index}].period"),
                format!(
                    "a {} budget per {} is given twice",
                    match budget.mode {
                        BudgetMode::Hard => "hard",
                        BudgetMode::Soft => "soft",
                    },
                    budget.period.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// Prices of one model on a plan, overriding the plan's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    #[serde(default)]
    pub price_per_1k_prompt_tokens: Money,
    #[serde(default)]
    pub price_per_1k_completion_tokens: Money,
}

/// What one token costs, in nanos: a price per 1,000 tokens in micros,
/// read as is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpendRates {
    pub prompt: u64,
    pub completion: u64,
}

impl SpendRates {
    /// The cost of `prompt` and `completion` tokens, in nanos.
    pub fn cost(self, prompt: u64, completion: u64) -> u64 {
        prompt
            .saturating_mul(self.prompt)
            .saturating_add(completion.saturating_mul(self.completion))
    }

    pub fn is_free(self) -> bool {
        self.prompt == 0 && self.completion == 0
    }
}

impl Plan {
    /// The prices of `model` on this plan: its own in `model_prices`, else
    /// the plan's.
    pub fn spend_rates(&self, model: Option<&str>) -> SpendRates {
        let (prompt, completion) = match model.and_then(|m| self.model_prices.get(m)) {
            Some(price) => (price.price_per_1k_prompt_tokens, price.price_per_1k_completion_tokens),
            None => (self.price_per_1k_prompt_tokens, self.price_per_1k_completion_tokens),
        };
        SpendRates {
            prompt: prompt.micros,
            completion: completion.micros,
        }
    }
}

/// Whose budget a spend counter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    Organization,
    Application,
    Key,
}

impl BudgetScope {
    /// The scope whose spend `metric` counts, if it counts spend.
    pub fn of_metric(metric: &str) -> Option<BudgetScope> {
        if metric == SPEND {
            Some(BudgetScope::Application)
        } else if metric == ACCOUNT_SPEND {
            Some(BudgetScope::Organization)
        } else if metric.starts_with(KEY_SPEND_PREFIX) {
            Some(BudgetScope::Key)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Organization => "organization",
            BudgetScope::Application => "application",
            BudgetScope::Key => "key",
        }
    }
}

/// The hard budgets a request with `key` (none for a token caller) of
/// `application` is admitted against, as limits on their spend counters
/// (nanos) in the application's shard, checked and held in the same
/// atomic step as the plan's limits.
pub fn budget_limits(application: &Application, key: Option<&ApiKey>) -> Vec<UsageLimit> {
    let hard = |budget: &&Budget| budget.mode == BudgetMode::Hard;
    let application_limits = application.budgets.iter().filter(hard).map(|budget| UsageLimit {
        metric: SPEND.to_owned(),
        period: budget.period.period(),
        value: budget.nanos(),
    });
    let key_budgets = key.map_or(&[][..], |key| &key.budgets[..]);
    let key_limits = key_budgets.iter().filter(hard).map(|budget| UsageLimit {
        metric: key_spend_metric(key.map_or("", ApiKey::spend_lineage)),
        period: budget.period.period(),
        value: budget.nanos(),
    });
    application_limits.chain(key_limits).collect()
}

/// The hard budgets of an organization, as limits on its spend counter in
/// its own shard. A request is held against them first, then against its
/// application's limits and budgets with the completion grant they left;
/// if the second step refuses, the first hold is released.
pub fn account_budget_limits(account: &Account) -> Vec<UsageLimit> {
    account
        .budgets
        .iter()
        .filter(|budget| budget.mode == BudgetMode::Hard)
        .map(|budget| UsageLimit {
            metric: ACCOUNT_SPEND.to_owned(),
            period: budget.period.period(),
            value: budget.nanos(),
        })
        .collect()
}

/// What a request that cost `nanos` through `key` (none for a token
/// caller) adds to the spend counters: the application's and the key's
/// (rotations share one). A free request adds nothing and names no key
/// counter (no allocation on the request path).
pub fn spend_deltas(key: Option<&ApiKey>, nanos: u64) -> [(Cow<'static, str>, u64); 2] {
    let key_spend = match key {
        Some(key) if nanos > 0 => (Cow::Owned(key_spend_metric(key.spend_lineage())), nanos),
        _ => (Cow::Borrowed(""), 0),
    };
    [(Cow::Borrowed(SPEND), nanos), key_spend]
}

/// Nanos as an amount of money, rounded up to the micro (what is shown).
pub fn nanos_to_money(nanos: u64) -> Money {
    Money::from_micros(nanos.div_ceil(1_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(amount: &str, period: BudgetPeriod, mode: BudgetMode) -> Budget {
        Budget {
            amount: Money::parse(amount).unwrap(),
            period,
            mode,
            alert_at_percent: DEFAULT_ALERTS.to_vec(),
            set_by: BudgetAuthor::Admin,
        }
    }

    #[test]
    fn costs_are_exact_in_nanos() {
        // 0.0015 per 1k prompt tokens, 0.002 per 1k completion tokens.
        let rates = SpendRates {
            prompt: 1_500,
            completion: 2_000,
        };
        assert_eq!(rates.cost(1, 0), 1_500, "one prompt token costs 1.5 micros");
        assert_eq!(rates.cost(1_000, 1_000), 3_500_000);
        assert_eq!(nanos_to_money(1_500).to_string(), "0.000002", "shown rounded up");
        assert_eq!(rates.cost(u64::MAX, 1), u64::MAX, "saturates, never wraps");
    }

    #[test]
    fn budgets_are_checked() {
        let ok = [
            budget("10", BudgetPeriod::Month, BudgetMode::Hard),
            budget("8", BudgetPeriod::Month, BudgetMode::Soft),
            budget("1.5", BudgetPeriod::Day, BudgetMode::Hard),
        ];
        validate_budgets("budgets", &ok).unwrap();
        let twice = [
            budget("10", BudgetPeriod::Month, BudgetMode::Hard),
            budget("5", BudgetPeriod::Month, BudgetMode::Hard),
        ];
        let error = validate_budgets("budgets", &twice).unwrap_err().to_string();
        assert!(
            error.contains("budgets[1].period") && error.contains("twice"),
            "{error}"
        );
        let zero = [budget("0", BudgetPeriod::Day, BudgetMode::Hard)];
        let error = validate_budgets("budgets", &zero).unwrap_err().to_string();
        assert!(error.contains("budgets[0].amount"), "{error}");
        let huge = [budget("9000000.000001", BudgetPeriod::Total, BudgetMode::Hard)];
        assert!(validate_budgets("budgets", &huge).is_err());
        let many = vec![budget("1", BudgetPeriod::Day, BudgetMode::Hard); MAX_BUDGETS + 1];
        assert!(validate_budgets("budgets", &many).is_err());
        for alerts in [
            vec![0],
            vec![101],
            vec![80, 50],
            vec![50, 50],
            vec![10, 20, 30, 40, 50, 60],
        ] {
            let mut odd = budget("1", BudgetPeriod::Day, BudgetMode::Hard);
            odd.alert_at_percent = alerts.clone();
            let error = validate_budgets("budgets", &[odd]).unwrap_err().to_string();
            assert!(error.contains("budgets[0].alert_at_percent"), "{alerts:?}: {error}");
        }
    }

    #[test]
    fn owners_add_budgets_and_keep_the_admins() {
        let admins = budget("10", BudgetPeriod::Month, BudgetMode::Hard);
        let earlier = Budget {
            set_by: BudgetAuthor::Owner,
            ..budget("1", BudgetPeriod::Day, BudgetMode::Hard)
        };
        let current = [admins.clone(), earlier];
        let after = with_owner_budgets(&current, vec![budget("5", BudgetPeriod::Month, BudgetMode::Hard)]);
        assert_eq!(
            after.len(),
            2,
            "the owner's earlier budget is replaced, the admin's kept"
        );
        assert_eq!(after[0], admins);
        assert_eq!(
            (after[1].set_by, after[1].amount.to_string()),
            (BudgetAuthor::Owner, "5".to_owned())
        );
        validate_budgets("budgets", &after).expect("an owner's monthly beside an admin's");
        assert!(
            with_owner_budgets(&current, Vec::new()).contains(&admins),
            "nothing an owner sends lifts it"
        );
    }

    #[test]
    fn budgets_read_with_hard_as_the_default() {
        let read: Budget = serde_json::from_str(r#"{"amount": 2.5, "period": "week"}"#).unwrap();
        assert_eq!(read, budget("2.5", BudgetPeriod::Week, BudgetMode::Hard));
        assert!(serde_json::from_str::<Budget>(r#"{"amount": 1, "period": "year"}"#).is_err());
        assert!(serde_json::from_str::<Budget>(r#"{"amount": -1, "period": "day"}"#).is_err());
    }

    #[test]
    fn periods_name_their_buckets() {
        for period in BudgetPeriod::ALL {
            assert_eq!(BudgetPeriod::of(period.period()), Some(period));
        }
        assert_eq!(BudgetPeriod::of(Period::Hour), None);
        assert_eq!(BudgetPeriod::Total.adjective(), "total");
    }

    #[test]
    fn spend_metrics_are_recognized() {
        assert!(is_spend_metric(SPEND));
        assert!(is_spend_metric(&key_spend_metric("key_1")));
        assert_eq!(BudgetScope::of_metric(ACCOUNT_SPEND), Some(BudgetScope::Organization));
        assert!(!is_spend_metric("total_tokens") && !is_spend_metric("spends"));
    }
}
