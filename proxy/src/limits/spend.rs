//! What a request may spend, decided from its body before it goes
//! upstream: the tokens it holds against a plan's token limits, and its
//! ceiling, the most it can cost. The ceiling is what is billed when a
//! model server answered but its usage cannot be read (an answer in a
//! coding or shape the gateway cannot meter): a 2xx that reached the
//! model server never costs nothing.

use maas_store::model::{ModelSettings, Plan, SpendRates};

use crate::error::ApiError;
use crate::limits::{HoldPolicy, TokenRequest, prompt_estimate};
use crate::request::body::RequestFacts;
use crate::request::prompt::{PromptTally, TextCount, prompt_tally};
use crate::request::rewrite::Endpoint;
use crate::response::metering::TokenUsage;

/// Tokens the request may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    /// What the limiter is asked to hold (plans that limit tokens only);
    /// its prompt is the prompt's bound ([`crate::request::prompt`]).
    pub request: Option<TokenRequest>,
    /// The prompt's tokens as billed when the model server reports none
    /// (a stream cut before its usage): a quarter of the body's bytes,
    /// never past the bound.
    pub prompt_estimate: u64,
    /// The most the request can cost, for endpoints that are metered.
    pub ceiling: Option<TokenUsage>,
    /// Generations the grant is shared by (`n`, prompts of a batch).
    pub generations: u64,
}

/// What a request asks of `plan`, its body of `body_bytes` read as `facts`.
pub struct Ask<'a> {
    pub endpoint: Endpoint,
    pub facts: &'a RequestFacts,
    /// The prompt as counted: `facts.prompt` (in bytes), or the same
    /// members counted by the model's tokenizer ([`Ask::counted_by`]).
    pub prompt: PromptTally,
    pub body_bytes: usize,
    /// How the requested model counts prompts.
    pub model: &'a ModelSettings,
}

impl<'a> Ask<'a> {
    pub fn new(endpoint: Endpoint, facts: &'a RequestFacts, body_bytes: usize, model: &'a ModelSettings) -> Ask<'a> {
        Ask {
            endpoint,
            facts,
            prompt: facts.prompt,
            body_bytes,
            model,
        }
    }

    /// The same ask with its prompt's text counted by `counter` in `body`,
    /// when that makes its bound smaller.
    pub fn counted_by(&self, body: &[u8], counter: &dyn TextCount) -> Option<Ask<'a>> {
        self.with_prompt(prompt_tally(body, counter)?)
    }

    /// The same ask with `prompt` (its members counted another way), when
    /// that makes its bound smaller.
    pub fn with_prompt(&self, prompt: PromptTally) -> Option<Ask<'a>> {
        let costs = self.model.prompt_costs();
        (prompt.bound(&costs) < self.prompt.bound(&costs)).then_some(Ask { prompt, ..*self })
    }
}

/// Requests whose spending the gateway cannot see: a response generated
/// after the answer (`background`), and where the request must be held
/// (token limits or a spend budget), a prompt the server adds to
/// ([`RequestFacts::unboundable`]), which no hold can bound.
pub fn refuse_unmeterable(endpoint: Endpoint, facts: &RequestFacts, held: bool) -> Result<(), ApiError> {
    if endpoint == Endpoint::Responses && facts.background {
        return Err(ApiError::unsupported(
            "background",
            "Background responses are generated after the answer, where the gateway cannot meter them; \
             send the request without `background` (stream it for long generations).",
        ));
    }
    match facts.unboundable {
        Some(member) if held => Err(ApiError::unsupported(
            member,
            &format!(
                "`{member}` adds to the prompt what the gateway cannot bound against this plan's token \
                 limits or the spend budget; send the whole prompt in the request."
            ),
        )),
        _ => Ok(()),
    }
}

/// The spend of `ask` on `plan`; `budgeted`: the rates of the requested
/// model when spend budgets apply, which then hold its cost too.
pub fn spend_of(ask: &Ask<'_>, plan: &Plan, holds: HoldPolicy, budgeted: Option<SpendRates>) -> Spend {
    let (endpoint, facts) = (ask.endpoint, ask.facts);
    let generations = facts.generations(endpoint).max(1);
    let prompt = ask.prompt.bound(&ask.model.prompt_costs());
    let prompt_estimate = prompt_estimate(ask.body_bytes).min(prompt);
    let metered = endpoint.generates() || endpoint == Endpoint::Embeddings;
    if !metered {
        return Spend {
            request: None,
            prompt_estimate,
            ceiling: None,
            generations,
        };
    }
    let (completion_max, completion_min) = if endpoint.generates() {
        let plan_cap = plan.max_tokens.map(u64::from);
        let wanted = facts
            .max_tokens_for(endpoint)
            .or(plan_cap)
            .unwrap_or(holds.default_max_tokens);
        let per_generation = plan_cap.map_or(wanted, |cap| wanted.min(cap));
        let most = per_generation.saturating_mul(generations);
        // Clamping grants what is left down to one token a generation;
        // without it the request goes as asked, so all of it must fit.
        let least = if plan.clamp_max_tokens {
            generations.min(most)
        } else {
            most
        };
        (most, least)
    } else {
        (0, 0)
    };
    let held = plan.limits_tokens() || budgeted.is_some();
    Spend {
        request: held.then_some(TokenRequest {
            prompt,
            completion_max,
            completion_min,
            rates: budgeted.unwrap_or_default(),
        }),
        prompt_estimate,
        ceiling: Some(TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion_max,
            total_tokens: prompt.saturating_add(completion_max),
        }),
        generations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask<'a>(endpoint: Endpoint, facts: &'a RequestFacts) -> Ask<'a> {
        static MODEL: std::sync::LazyLock<ModelSettings> = std::sync::LazyLock::new(ModelSettings::default);
        Ask::new(endpoint, facts, 400, &MODEL)
    }

    fn plan(max_tokens: Option<u32>, token_limit: bool) -> Plan {
        let limits = if token_limit {
            serde_json::json!([{"metric": "total_tokens", "period": "day", "value": 1000}])
        } else {
            serde_json::json!([])
        };
        serde_json::from_value(serde_json::json!({
            "product": "p", "system_name": "basic", "max_tokens": max_tokens, "limits": limits
        }))
        .unwrap()
    }

    #[test]
    fn generating_requests_hold_their_prompt_and_every_generation() {
        let facts = RequestFacts {
            max_tokens: Some(50),
            choices: 3,
            ..RequestFacts::default()
        };
        let spend = spend_of(
            &ask(Endpoint::ChatCompletions, &facts),
            &plan(Some(40), true),
            HoldPolicy::default(),
            None,
        );
        let request = spend.request.unwrap();
        let prompt = facts.prompt.bound(&ModelSettings::default().prompt_costs());
        assert_eq!(
            (request.prompt, request.completion_max, request.completion_min),
            (prompt, 120, 3)
        );
        assert_eq!(spend.ceiling.unwrap().total_tokens, prompt + 120);
        assert_eq!(spend.prompt_estimate, 100.min(prompt));
        assert_eq!(spend.generations, 3);
    }

    #[test]
    fn without_clamping_the_whole_ask_must_fit() {
        let facts = RequestFacts {
            max_tokens: Some(300),
            ..RequestFacts::default()
        };
        let mut plan = plan(None, true);
        plan.clamp_max_tokens = false;
        let request = spend_of(
            &ask(Endpoint::ChatCompletions, &facts),
            &plan,
            HoldPolicy::default(),
            None,
        )
        .request
        .unwrap();
        assert_eq!((request.completion_max, request.completion_min), (300, 300));
        let facts = RequestFacts::default();
        let request = spend_of(&ask(Endpoint::Completions, &facts), &plan, HoldPolicy::default(), None)
            .request
            .unwrap();
        assert_eq!(request.completion_min, 4096, "the default bound when none is asked");
    }

    #[test]
    fn a_tokenizer_narrows_the_prompt_never_widens_it() {
        struct Words;
        impl TextCount for Words {
            fn count(&self, text: &str) -> u64 {
                text.split_whitespace().count() as u64
            }
        }
        struct Doubled;
        impl TextCount for Doubled {
            fn count(&self, text: &str) -> u64 {
                2 * text.len() as u64
            }
        }
        let body = br#"{"messages":[{"role":"user","content":"one two three four"}]}"#;
        let facts = crate::request::body::inspect_json(body).unwrap();
        let bounded = ask(Endpoint::ChatCompletions, &facts);
        let counted = bounded.counted_by(body, &Words).unwrap();
        assert_eq!(counted.prompt.text, 1 + 4, "user, and four words");
        let spend = spend_of(&counted, &plan(None, true), HoldPolicy::default(), None);
        assert_eq!(spend.request.unwrap().prompt, 5 + 8 + 64);
        assert!(bounded.counted_by(body, &Doubled).is_none());
    }

    #[test]
    fn a_budget_holds_requests_on_plans_without_token_limits() {
        let facts = RequestFacts {
            max_tokens: Some(50),
            ..RequestFacts::default()
        };
        let rates = SpendRates {
            prompt: 1_000,
            completion: 3_000,
        };
        let ask = ask(Endpoint::ChatCompletions, &facts);
        assert_eq!(
            spend_of(&ask, &plan(None, false), HoldPolicy::default(), None).request,
            None
        );
        let request = spend_of(&ask, &plan(None, false), HoldPolicy::default(), Some(rates))
            .request
            .expect("a budgeted request is held");
        assert_eq!(
            (request.completion_max, request.completion_min, request.rates),
            (50, 1, rates)
        );
    }

    #[test]
    fn plans_without_token_limits_still_have_a_ceiling() {
        let facts = RequestFacts::default();
        let spend = spend_of(
            &ask(Endpoint::Completions, &facts),
            &plan(None, false),
            HoldPolicy::default(),
            None,
        );
        assert_eq!(spend.request, None);
        assert_eq!(spend.ceiling.unwrap().completion_tokens, 4096);
        let embeddings = spend_of(
            &ask(Endpoint::Embeddings, &facts),
            &plan(None, true),
            HoldPolicy::default(),
            None,
        );
        assert_eq!(
            embeddings.ceiling.unwrap().total_tokens,
            64,
            "the template's tokens alone"
        );
        let other = spend_of(
            &ask(Endpoint::Other, &facts),
            &plan(None, true),
            HoldPolicy::default(),
            None,
        );
        assert_eq!((other.request, other.ceiling), (None, None));
    }
}
