//! What a finished request is billed, and its settlement: the usage the
//! model server reported; where a stream was cut before its usage, the
//! prompt (counted by the model's tokenizer when it has one, else a
//! quarter of the body's bytes) plus an estimate of every delta generated
//! ([`crate::response::stream_meter`]); and where a successful answer's usage cannot
//! be read at all, the request's ceiling ([`crate::limits::spend`]). A 2xx that
//! reached the model server never settles at zero.

use maas_store::model::{ACCOUNT_SPEND, AuthContext, spend_deltas};
use time::OffsetDateTime;

use crate::phases::request_ctx::all_limits;
use crate::phases::service::{MaasProxy, RequestCtx};
use crate::record::metrics::METRICS;
use crate::request::prompt::prompt_tally;
use crate::response::metering::TokenUsage;

/// Where billed tokens come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The model server's `usage`.
    Reported,
    /// Partly or wholly estimated: a stream that ended without (all of) its usage.
    Estimated,
    /// The answer's usage could not be read: the most the request could cost.
    Ceiling,
}

/// What a request is billed, `None` when it cost nothing (refused, failed
/// before the model server answered, or not a metered endpoint).
pub fn bill_of(ctx: &RequestCtx, status: u16) -> Option<(TokenUsage, Basis)> {
    if let Some(meter) = &ctx.stream_meter {
        // Whole, cut by either side, or failed: the server read the prompt.
        let counted = meter.usage.is_none().then(|| counted_prompt(ctx)).flatten();
        let prompt = counted.unwrap_or(ctx.prompt_estimate);
        let (usage, estimated) = meter.tokens(prompt);
        return Some((usage, if estimated { Basis::Estimated } else { Basis::Reported }));
    }
    if let Some(usage) = ctx.usage {
        return Some((usage, Basis::Reported));
    }
    let answered = (200..300).contains(&status) && ctx.upstream_headers_after.is_some();
    ctx.ceiling
        .filter(|_| answered)
        .map(|ceiling| (ceiling, Basis::Ceiling))
}

/// The prompt counted by its model's tokenizer, when it has one.
fn counted_prompt(ctx: &RequestCtx) -> Option<u64> {
    let (catalog, index) = (ctx.catalog.as_ref()?, ctx.product?);
    let settings = catalog.routes.product(index).product.settings_of(ctx.model.as_deref());
    let tokenizer = catalog.tokenizers.get(settings.tokenizer.as_deref()?)?;
    let tally = prompt_tally(ctx.body.as_deref()?, tokenizer.as_ref())?;
    Some(tally.billable(&settings.prompt_costs()))
}

impl MaasProxy {
    /// Settles the request's hold with what it is billed (always, whatever
    /// the outcome, so no hold outlives its request) and counts the tokens.
    pub(crate) async fn settle(
        &self,
        ctx: &mut RequestCtx,
        status: u16,
        model: &str,
        now: OffsetDateTime,
    ) -> TokenUsage {
        let bill = bill_of(ctx, status);
        let usage = bill.map(|(usage, _)| usage).unwrap_or_default();
        ctx.tokens_estimated = bill.is_some_and(|(_, basis)| basis != Basis::Reported);
        let Some(auth) = ctx.auth.clone() else {
            return usage;
        };
        let cost = ctx.rates.cost(usage.prompt_tokens, usage.completion_tokens);
        if bill.is_some() || ctx.hold.is_some() {
            let [application_spend, key_spend] = spend_deltas(auth.key(), cost);
            let limits = all_limits(&auth.plan, &ctx.budget_limits);
            self.state
                .limiter
                .settle(
                    &auth.application.id,
                    &limits,
                    ctx.hold.as_deref(),
                    &[
                        ("prompt_tokens", usage.prompt_tokens),
                        ("completion_tokens", usage.completion_tokens),
                        ("total_tokens", usage.total_tokens),
                        (&application_spend.0, application_spend.1),
                        (&key_spend.0, key_spend.1),
                    ],
                    now,
                )
                .await;
            // The organization's spend: its budgets' hold settles with it.
            let held = ctx.hold.as_deref().filter(|_| !ctx.account_limits.is_empty());
            if cost > 0 || held.is_some() {
                self.state
                    .limiter
                    .settle(
                        &auth.account.id,
                        &ctx.account_limits,
                        held,
                        &[(ACCOUNT_SPEND, cost)],
                        now,
                    )
                    .await;
            }
        }
        if let Some((usage, basis)) = bill {
            count_tokens(&auth, usage, basis, model);
        }
        if ctx.admitted {
            self.state.limiter.sink.push_breakdown(&auth, model, usage, cost, now);
        }
        usage
    }
}

fn count_tokens(auth: &AuthContext, usage: TokenUsage, basis: Basis, model: &str) {
    let product = auth.application.product.as_str();
    match basis {
        Basis::Reported => {}
        Basis::Estimated => METRICS
            .estimated_tokens
            .with_label_values(&[product])
            .inc_by(usage.total_tokens),
        Basis::Ceiling => {
            METRICS.unmetered_answers.with_label_values(&[product]).inc();
            METRICS
                .estimated_tokens
                .with_label_values(&[product])
                .inc_by(usage.total_tokens);
            tracing::warn!(
                product,
                application = %auth.application.id,
                tokens = usage.total_tokens,
                "the model server's answer carried no readable usage: billed the request's ceiling"
            );
        }
    }
    let labels = [
        product,
        product,
        auth.application.id.as_str(),
        auth.application.name.as_str(),
        model,
    ];
    METRICS
        .prompt_tokens
        .with_label_values(&labels)
        .inc_by(usage.prompt_tokens);
    METRICS
        .completion_tokens
        .with_label_values(&labels)
        .inc_by(usage.completion_tokens);
    METRICS
        .total_tokens
        .with_label_values(&labels)
        .inc_by(usage.total_tokens);
}
