//! Traffic broken down by model or by key: the series each proxy counts
//! under a [`Breakdown`], and what no model or key accounts for.

use maas_store::Breakdown;
use maas_store::model::{COMPLETION_TOKENS, HITS, PROMPT_TOKENS, Plan, SPEND};
use maas_store::period::Period;
use time::OffsetDateTime;

use super::{Series, priced, spent_micros};
use crate::PortalState;
use crate::render::PortalError;

/// A model or a key, as a part of a breakdown.
pub(super) enum Part {
    Model(String),
    Key(String),
    /// A person calling with an access token (its `sub`).
    User(String),
}

impl Part {
    fn breakdown(&self) -> Breakdown<'_> {
        match self {
            Part::Model(model) => Breakdown::Model(model),
            Part::Key(key) => Breakdown::Key(key),
            Part::User(user) => Breakdown::User(user),
        }
    }
}

/// The most people a breakdown of a token application shows.
const MAX_USERS: usize = 50;

/// The models of the application's product, or its keys (a token
/// application's people instead), each named for people.
pub(super) async fn breakdown_parts(
    state: &PortalState,
    app: &maas_store::model::Application,
    by: &str,
) -> Result<Vec<(String, Part)>, PortalError> {
    let store = state.store();
    Ok(if by == "model" {
        let served = store.release(&app.product, maas_store::Environment::Production).await?;
        let models = match served {
            Some(release) => release.config.models,
            None => store
                .get_product(&app.product)
                .await?
                .map(|p| p.models)
                .unwrap_or_default(),
        };
        models.into_iter().map(|m| (m.clone(), Part::Model(m))).collect()
    } else if app.token_client.is_some() {
        let mut parts = Vec::new();
        for subject in store.token_users(&app.id, MAX_USERS).await? {
            parts.push((person_name(state, &subject).await?, Part::User(subject)));
        }
        parts
    } else {
        let mut keys = store.application_keys(&app.id).await?;
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        keys.into_iter()
            .map(|k| {
                let name = if k.label.is_empty() {
                    k.masked()
                } else {
                    format!("{} ({})", k.label, k.masked())
                };
                (name, Part::Key(k.id))
            })
            .collect()
    })
}

/// A person as the portal knows them (their email, when they signed in
/// here through the same provider), else as the token names them.
async fn person_name(state: &PortalState, subject: &str) -> Result<String, PortalError> {
    let Some(issuer) = state.token_issuer() else {
        return Ok(subject.to_owned());
    };
    let identity = maas_store::model::SsoIdentity {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
    };
    Ok(match state.store().find_user_by_sso(&identity).await? {
        Some(user) => user.email,
        None => subject.to_owned(),
    })
}

/// What a breakdown adds up: requests, tokens, or their cost at a plan's prices.
pub(super) enum Measure<'a> {
    Hits,
    Tokens,
    Cost(&'a Plan),
}

/// Reads one application's series over one span.
pub(super) struct Reader<'a> {
    pub(super) store: &'a maas_store::Store,
    pub(super) application_id: &'a str,
    pub(super) granularity: Period,
    pub(super) from: OffsetDateTime,
    pub(super) to: OffsetDateTime,
}

impl Reader<'_> {
    async fn series(&self, metric: &str) -> Result<Vec<u64>, PortalError> {
        let points = self
            .store
            .usage_series(self.application_id, metric, self.granularity, self.from, self.to)
            .await?;
        Ok(points.into_iter().map(|p| p.value).collect())
    }

    /// `measure` of the series `name_of` names (the application's own
    /// totals, or one model's or key's).
    async fn measured(&self, measure: &Measure<'_>, name_of: impl Fn(&str) -> String) -> Result<Vec<u64>, PortalError> {
        if let Measure::Hits = measure {
            return self.series(&name_of(HITS)).await;
        }
        if let Measure::Cost(plan) = measure
            && !plan.model_prices.is_empty()
        {
            // Models priced apart: what was counted as spent, at each
            // request's own prices (tokens alone cannot say).
            return Ok(spent_micros(self.series(&name_of(SPEND)).await?));
        }
        let prompt = self.series(&name_of(PROMPT_TOKENS)).await?;
        let completion = self.series(&name_of(COMPLETION_TOKENS)).await?;
        let (prompt, completion) = match measure {
            Measure::Cost(plan) => (
                priced(prompt, plan.price_per_1k_prompt_tokens),
                priced(completion, plan.price_per_1k_completion_tokens),
            ),
            _ => (prompt, completion),
        };
        Ok(prompt
            .iter()
            .zip(&completion)
            .map(|(p, c)| p.saturating_add(*c))
            .collect())
    }

    /// One series per part that has any, and what the parts do not
    /// account for (traffic from before breakdowns were kept, requests
    /// without a model, keys deleted since) as one more.
    pub(super) async fn broken_down(
        &self,
        measure: &Measure<'_>,
        parts: &[(String, Part)],
    ) -> Result<Vec<Series>, PortalError> {
        let total = self.measured(measure, str::to_owned).await?;
        let mut rest = total.clone();
        let mut series = Vec::new();
        for (name, part) in parts {
            let by = part.breakdown();
            let values = self.measured(measure, |metric| by.metric(metric)).await?;
            if values.iter().all(|v| *v == 0) {
                continue;
            }
            for (left, v) in rest.iter_mut().zip(&values) {
                *left = left.saturating_sub(*v);
            }
            series.push(Series {
                name: name.clone(),
                values,
            });
        }
        if rest.iter().any(|v| *v > 0) || series.is_empty() {
            let name = if series.is_empty() { "All" } else { "Not attributed" };
            series.push(Series {
                name: name.into(),
                values: rest,
            });
        }
        Ok(series)
    }
}
