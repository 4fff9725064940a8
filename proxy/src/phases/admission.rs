//! The request phase: everything `request_filter` decides before a request
//! may go upstream, as named stages in request order. Each stage either
//! hands the next what it found or ends the request with an [`ApiError`].
//!
//! The edge comes first: the path is normalised ([`request_path`]) before
//! anything reads it, and the body of an inference endpoint is read as
//! JSON whatever its `Content-Type` says, because that is how the model
//! server reads it. Every later stage sees only the normalised request.

use bytes::Bytes;
use maas_store::model::{
    ApplicationState, AuthContext, BudgetScope, CredentialLocation, KeyHash, SpendRates, TOKEN_METRICS,
    account_budget_limits, budget_limits, has_valid_checksum,
};
use pingora_error::Result;
use pingora_proxy::Session;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::limits::Decision;
use crate::limits::ratelimit::{limit_headers, retry_after_secs};
use crate::limits::spend::{Ask, Spend, refuse_unmeterable, spend_of};
use crate::phases::reply::respond;
use crate::phases::request_body::read_body;
use crate::phases::request_ctx::all_limits;
use crate::phases::service::{MaasProxy, RequestCtx};
use crate::phases::token_auth::{Caller, presented_token, takes_keys};
use crate::record::metrics::METRICS;
use crate::request::body::{RequestFacts, inspect_json, is_json_content_type, looks_like_json};
use crate::request::cors;
use crate::request::credentials::{RequestCredentials, describe_locations, extract_key, strip_query_param};
use crate::request::mapping::Deltas;
use crate::request::models_api::{ModelsRequest, model_json, model_list, models_request, shared_allowed_methods};
use crate::request::request_path::normalize;
use crate::request::rewrite::{ClientUsage, Endpoint, ForwardPolicy, rewrite_request};
use crate::request::routing::{ProductRoute, Route, upstream_path};
use crate::request::tokenizer::count_prompt;
use crate::state::{KeyLookupError, ServingCatalog};

pub(crate) enum Next {
    Proxy,
    Answered,
}

/// A stage's outcome: Pingora's error (the connection is gone), or the
/// stage's answer, which is either what the next stage needs or the
/// refusal to send.
type Stage<T> = Result<Result<T, ApiError>>;

/// The value of a stage that awaits, or `prepare` ends with its refusal.
macro_rules! next {
    ($stage:expr) => {
        match $stage? {
            Ok(value) => value,
            Err(error) => return Ok(Err(error)),
        }
    };
}

/// The value of a stage that decides alone, or `prepare` ends with its refusal.
macro_rules! or_refuse {
    ($decision:expr) => {
        match $decision {
            Ok(value) => value,
            Err(error) => return Ok(Err(error)),
        }
    };
}

pub(crate) fn header_str(session: &Session, name: http::header::HeaderName) -> Option<&str> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request line and host, normalised once.
struct Target {
    method: String,
    host: Option<String>,
    /// The normal form of the path ([`normalize`]).
    path: String,
    query: Option<String>,
}

/// What routing found: a product's endpoint, or the shared `/v1`.
pub(crate) struct Routed {
    pub(crate) index: Option<usize>,
    /// The path below the product's prefix (the shared endpoint's whole path).
    pub(crate) api_path: String,
}

/// The body as the model server will read it.
#[derive(Default)]
struct Body {
    facts: RequestFacts,
    /// The body was read as a JSON object: it may be rewritten, and is
    /// forwarded as `application/json`.
    json: bool,
}

impl MaasProxy {
    /// Authenticates, routes and admits a request; `Err` is answered as is.
    pub(crate) async fn prepare(&self, session: &mut Session, ctx: &mut RequestCtx) -> Stage<Next> {
        if !self.state.has_catalog() {
            // Started while the store was down: nothing to route by yet.
            ctx.extra_headers.push(("retry-after", STORE_RETRY_SECS.to_string()));
            return Ok(Err(ApiError::store_unavailable()));
        }
        let catalog = self.state.catalog();
        ctx.catalog = Some(catalog.clone());
        let target = or_refuse!(read_target(session));
        let routed = or_refuse!(route(&catalog, &target));
        ctx.product = routed.index;
        if let Next::Answered = next!(self.answer_preflight(session, ctx, &catalog, &target, &routed).await) {
            return Ok(Ok(Next::Answered));
        }
        or_refuse!(check_method(ctx, &catalog, &target, &routed));
        let caller = next!(self.authenticate(session, ctx, &catalog, &target, &routed).await);
        let endpoint = Endpoint::of_path(&routed.api_path);
        let body = next!(self.read_request_body(session, ctx, &routed, endpoint).await);
        let endpoint = match endpoint {
            Endpoint::Invocations => or_refuse!(body.facts.invoked.ok_or_else(ApiError::unknown_invocation)),
            endpoint => endpoint,
        };
        ctx.operation = endpoint.operation_name();
        ctx.model = body.facts.model.clone();
        ctx.stream = body.facts.stream;
        ctx.json_body = body.json && endpoint.is_inference();
        let models_request = models_request(&target.method, &routed.api_path);
        if let Some(ModelsRequest::Retrieve(id)) = &models_request {
            ctx.model = Some(id.clone());
        }
        let is_model_list = models_request == Some(ModelsRequest::List);
        let (auth, product_index) = match caller {
            Caller::Key(auth) => {
                let index = or_refuse!(product_for(
                    &catalog,
                    &routed,
                    &auth,
                    ctx.model.as_deref(),
                    is_model_list
                ));
                or_refuse!(takes_keys(&catalog.routes.product(index).product));
                (auth, index)
            }
            Caller::Token(token) => {
                let index = match routed.index {
                    Some(index) => index,
                    None => or_refuse!(MaasProxy::token_product(
                        &catalog,
                        &token,
                        ctx.model.as_deref(),
                        is_model_list
                    )),
                };
                (or_refuse!(self.admit_token(ctx, &catalog, index, &token).await), index)
            }
        };
        ctx.product = Some(product_index);
        ctx.budget_limits = budget_limits(&auth.application, auth.key());
        ctx.account_limits = account_budget_limits(&auth.account);
        let held = auth.plan.limits_tokens() || !ctx.budget_limits.is_empty() || !ctx.account_limits.is_empty();
        or_refuse!(refuse_unmeterable(endpoint, &body.facts, held));
        let route = catalog.routes.product(product_index);
        if let Some(model) = ctx.model.as_deref()
            && !route.product.models.is_empty()
            && !route.product.models.iter().any(|m| m == model)
        {
            return Ok(Err(ApiError::model_not_found(model)));
        }
        let Some(deltas) = route.rules.deltas(&target.method, &routed.api_path) else {
            return Ok(Err(ApiError::no_mapping_rule(&target.method, &routed.api_path)));
        };
        let carries_body = !matches!(target.method.as_str(), "GET" | "HEAD" | "OPTIONS")
            || ctx.body.as_ref().is_some_and(|b| !b.is_empty());
        if endpoint == Endpoint::Other
            && carries_body
            && !route.rules.allows_unmetered(&target.method, &routed.api_path)
        {
            // Nothing would cap, hold or meter what it generates.
            return Ok(Err(ApiError::unmetered_endpoint(&target.method, &routed.api_path)));
        }
        let body_bytes = ctx.body.as_ref().map_or(0, Bytes::len);
        let holds = self.state.limiter.hold_policy();
        let model = route.product.settings_of(ctx.model.as_deref());
        let ask = Ask::new(endpoint, &body.facts, body_bytes, model);
        let budgeted = price_request(ctx, &auth, route, &ask);
        let mut spend = spend_of(&ask, &auth.plan, holds, budgeted);
        let headers_before = ctx.extra_headers.len();
        let mut admitted = self.admit(ctx, &auth, &deltas, &spend).await;
        if admitted
            .as_ref()
            .is_err_and(|refusal| matches!(refusal.reason, "insufficient_quota" | "budget_spent"))
            && let Some(counted) = count_prompt(&catalog, &ask, ctx.body.clone(), &route.product.system_name).await
        {
            // The cheap bound did not fit what is left: the model's own count may.
            ctx.extra_headers.truncate(headers_before);
            spend = spend_of(&counted, &auth.plan, holds, budgeted);
            admitted = self.admit(ctx, &auth, &deltas, &spend).await;
        }
        ctx.ceiling = spend.ceiling;
        ctx.prompt_estimate = spend.prompt_estimate;
        let completion_grant = or_refuse!(admitted);
        ctx.admitted = true;
        if let Some(request) = models_request {
            let body = match request {
                ModelsRequest::List => model_list(&route.product.models),
                ModelsRequest::Retrieve(id) => model_json(&id),
            };
            let mut headers = std::mem::take(&mut ctx.extra_headers);
            headers.push(("content-type", "application/json".into()));
            respond(session, 200, Bytes::from(body), &headers).await?;
            ctx.extra_headers = headers;
            return Ok(Ok(Next::Answered));
        }
        or_refuse!(choose_upstream(ctx, &catalog, route, &routed, &target));
        or_refuse!(rewrite_body(
            ctx,
            &auth,
            route,
            endpoint,
            &body,
            &spend,
            completion_grant
        ));
        or_refuse!(
            super::gateway_queue::wait_for_room(session, ctx, &auth, &route.product.system_name, &route.product.queue)
                .await
        );
        Ok(Ok(Next::Proxy))
    }

    /// CORS preflights of a product with a policy are answered here: they
    /// never need a key and never reach the upstream.
    async fn answer_preflight(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        catalog: &ServingCatalog,
        target: &Target,
        routed: &Routed,
    ) -> Stage<Next> {
        let policy = match routed.index {
            Some(index) => catalog.routes.product(index).product.cors.as_ref(),
            None => catalog.shared_cors.as_ref(),
        };
        let (Some(policy), Some(origin)) = (policy, header_str(session, http::header::ORIGIN).map(str::to_owned))
        else {
            return Ok(Ok(Next::Proxy));
        };
        let is_preflight = target.method == "OPTIONS"
            && session
                .req_header()
                .headers
                .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            let requested = header_str(session, http::header::ACCESS_CONTROL_REQUEST_HEADERS);
            let Some(headers) = cors::preflight_headers(policy, &origin, requested) else {
                let mut error = ApiError::no_route(&target.path);
                error.status = 403;
                error.message = format!("Origin `{origin}` may not call this API.");
                error.reason = "cors_origin";
                return Ok(Err(error));
            };
            respond(session, 204, Bytes::new(), &headers).await?;
            return Ok(Ok(Next::Answered));
        }
        ctx.extra_headers.extend(cors::response_headers(policy, &origin));
        Ok(Ok(Next::Proxy))
    }

    /// The key from the product's locations, checked, looked up, and its
    /// application's state and subscription checked; or, on a product
    /// taking them, an access token, verified.
    async fn authenticate(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        catalog: &ServingCatalog,
        target: &Target,
        routed: &Routed,
    ) -> Stage<Caller> {
        let headers = &session.req_header().headers;
        let authorization = headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        if let Some(token) = presented_token(authorization, catalog, routed) {
            return Ok(self.verify_token(ctx, token).await);
        }
        if let Some(index) = routed.index {
            or_refuse!(takes_keys(&catalog.routes.product(index).product));
        }
        let credentials = match routed.index {
            Some(index) => &catalog.routes.product(index).product.credentials,
            None => &catalog.shared_credentials,
        };
        let custom_header = credentials.header_name.to_ascii_lowercase();
        let found = extract_key(
            &RequestCredentials {
                authorization: headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes()),
                custom_header: headers.get(custom_header.as_str()).map(|v| v.as_bytes()),
                query: target.query.as_deref(),
            },
            credentials,
        );
        if credentials.locations.contains(&CredentialLocation::Query) {
            ctx.key_query_param = Some(credentials.query_param.clone());
        }
        if credentials.locations.contains(&CredentialLocation::Header) {
            ctx.custom_key_header = Some(custom_header);
        }
        let secret = match found {
            Ok(Some(secret)) => secret,
            Ok(None) => return Ok(Err(ApiError::missing_key(&describe_locations(credentials)))),
            Err(error) => return Ok(Err(error)),
        };
        if !has_valid_checksum(&secret) {
            METRICS.key_lookups.malformed.inc();
            return Ok(Err(ApiError::invalid_key()));
        }
        let auth = match self.state.lookup_key(KeyHash::of(&secret)).await {
            Ok(Some(auth)) => auth,
            Ok(None) => return Ok(Err(ApiError::invalid_key())),
            Err(KeyLookupError::Unverifiable(error)) => {
                METRICS.store_errors.with_label_values(&["lookup_key"]).inc();
                if !crate::limits::breaker::is_open_refusal(&error) {
                    tracing::warn!(%error, "a key could not be verified: the store does not answer");
                }
                ctx.extra_headers.push(("retry-after", STORE_RETRY_SECS.to_string()));
                return Ok(Err(ApiError::keys_unverifiable()));
            }
            Err(KeyLookupError::Store(error)) => {
                METRICS.store_errors.with_label_values(&["lookup_key"]).inc();
                tracing::error!(%error, "key lookup failed");
                return Ok(Err(ApiError::store_unavailable()));
            }
        };
        drop(secret);
        let now = OffsetDateTime::now_utc();
        let Some(key) = auth.key().filter(|key| key.is_usable_at(now)) else {
            return Ok(Err(ApiError::invalid_key()));
        };
        // Used, whatever is decided next: its owner sees it is in use.
        self.state.key_uses.note(&key.id, now.unix_timestamp());
        ctx.auth = Some(auth.clone());
        or_refuse!(check_application_state(&auth));
        if let Some(index) = routed.index {
            let product = &catalog.routes.product(index).product;
            if product.system_name != auth.application.product {
                let model = product.models.first().unwrap_or(&product.system_name);
                return Ok(Err(ApiError::not_subscribed(model)));
            }
        }
        Ok(Ok(Caller::Key(auth)))
    }

    /// The whole body, before the peer is chosen, read as the model server
    /// reads it: an inference endpoint's body is JSON whatever the
    /// `Content-Type` (vLLM's FastAPI parses it either way), the shared
    /// endpoint needs JSON to route, and elsewhere a body that declares or
    /// turns out to be a JSON object is checked like one.
    async fn read_request_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        routed: &Routed,
        endpoint: Endpoint,
    ) -> Stage<Body> {
        let headers = &session.req_header().headers;
        if !headers.contains_key(http::header::CONTENT_LENGTH) && !headers.contains_key(http::header::TRANSFER_ENCODING)
        {
            return Ok(Ok(Body::default()));
        }
        let declared_json = headers
            .get("content-type")
            .is_some_and(|v| is_json_content_type(v.as_bytes()));
        let bytes = next!(read_body(session, self.state.max_body_bytes).await);
        ctx.body = Some(bytes.clone());
        if bytes.is_empty() {
            return Ok(Ok(Body::default()));
        }
        let must_be_json =
            endpoint.is_inference() || routed.index.is_none() || declared_json || looks_like_json(&bytes);
        match inspect_json(&bytes) {
            Ok(facts) => Ok(Ok(Body { facts, json: true })),
            Err(refused) if must_be_json => Ok(Err(ApiError::invalid_body(&refused))),
            // Not JSON and not an endpoint that reads JSON (an upload, a
            // form): the model server's business.
            Err(_) => Ok(Ok(Body::default())),
        }
    }

    /// Checks and counts the plan's limits (holding the tokens asked for);
    /// the completion tokens granted, if any were asked for.
    async fn admit(
        &self,
        ctx: &mut RequestCtx,
        auth: &AuthContext,
        deltas: &Deltas,
        spend: &Spend,
    ) -> Result<Option<u64>, ApiError> {
        let now = OffsetDateTime::now_utc();
        let budget = std::mem::take(&mut ctx.budget_limits);
        let limits = all_limits(&auth.plan, &budget);
        let decision = self
            .state
            .limiter
            .admit_in_account(
                (&auth.account.id, &ctx.account_limits),
                &auth.application.id,
                &limits,
                deltas,
                spend.request.as_ref(),
                now,
            )
            .await;
        drop(limits);
        ctx.budget_limits = budget;
        match decision {
            Ok(Decision::Admitted(admitted)) => {
                ctx.extra_headers.extend(limit_headers(&admitted.statuses, now));
                ctx.hold = admitted.hold;
                Ok(admitted.completion_grant)
            }
            Ok(Decision::Rejected(status)) => {
                let retry_after = retry_after_secs(&status, now);
                ctx.extra_headers.push(("retry-after", retry_after.to_string()));
                if let Some(scope) = BudgetScope::of_metric(&status.limit.metric) {
                    // Spend does not come back by waiting a minute.
                    ctx.extra_headers.push(("x-should-retry", "false".into()));
                    let needed = spend.request.map_or(0, |t| t.rates.cost(t.prompt, t.completion_min));
                    return Err(ApiError::budget_spent(scope, &status, &auth.plan.currency, needed));
                }
                let is_tokens = TOKEN_METRICS.contains(&status.limit.metric.as_str());
                let quota_short = is_tokens && status.remaining > 0;
                if quota_short || retry_after > SDK_RETRY_HORIZON_SECS {
                    // The OpenAI SDKs retry a 429 within a minute whatever
                    // `Retry-After` says; this one would fail again.
                    ctx.extra_headers.push(("x-should-retry", "false".into()));
                }
                ctx.extra_headers
                    .extend(limit_headers(std::slice::from_ref(&status), now));
                if quota_short {
                    // Tokens are left, fewer than the prompt and one completion token.
                    let needed = spend.request.map_or(0, |t| t.prompt + t.completion_min);
                    return Err(ApiError::insufficient_quota(
                        &status.limit.metric,
                        status.remaining,
                        needed,
                    ));
                }
                let mut error = ApiError::rate_limited(
                    &status.limit.metric,
                    status.limit.period.as_str(),
                    status.limit.value,
                    retry_after,
                );
                if is_tokens {
                    error.reason = "token_limit";
                }
                Err(error)
            }
            Err(error) => {
                METRICS.store_errors.with_label_values(&["check_limits"]).inc();
                if !crate::limits::breaker::is_open_refusal(&error) {
                    tracing::error!(%error, "limit check failed");
                }
                ctx.extra_headers.push(("retry-after", STORE_RETRY_SECS.to_string()));
                Err(ApiError::store_unavailable())
            }
        }
    }
}

/// `Retry-After` of a request refused because the store does not answer:
/// about the breaker's probe interval, so a retry finds the store if it is
/// back.
pub(crate) const STORE_RETRY_SECS: u64 = 2;

/// The longest `Retry-After` the OpenAI SDKs wait out before retrying (60 s);
/// past it they retry sooner than the limit resets.
pub(super) const SDK_RETRY_HORIZON_SECS: u64 = 60;

/// Only a live application's callers are served.
pub(crate) fn check_application_state(auth: &AuthContext) -> Result<(), ApiError> {
    match auth.application.state {
        ApplicationState::Live => Ok(()),
        ApplicationState::Pending => Err(ApiError::application_pending(&auth.application.name)),
        ApplicationState::Suspended => Err(ApiError::application_suspended(&auth.application.name)),
    }
}

/// The method, host and normalised path; a path with no safe normal form
/// is refused.
fn read_target(session: &Session) -> Result<Target, ApiError> {
    let request = session.req_header();
    // A tunnel (WebSocket and the like) would carry tokens past every
    // check; only h2c, which is dropped before forwarding, is let by.
    if let Some(upgrade) = request.headers.get(http::header::UPGRADE)
        && !upgrade.as_bytes().eq_ignore_ascii_case(b"h2c")
    {
        return Err(ApiError::unsupported(
            "upgrade",
            "Protocol upgrades (WebSocket and others) are not served here.",
        ));
    }
    let path = normalize(request.uri.path()).map_err(|refused| ApiError::unsafe_path(refused.0))?;
    Ok(Target {
        method: request.method.as_str().to_owned(),
        host: header_str(session, http::header::HOST).map(str::to_owned),
        path: path.into_owned(),
        query: request.uri.query().map(str::to_owned),
    })
}

fn route(catalog: &ServingCatalog, target: &Target) -> Result<Routed, ApiError> {
    match catalog.routes.route(target.host.as_deref(), &target.path) {
        Route::Product { index, api_path } => Ok(Routed {
            index: Some(index),
            api_path: api_path.to_owned(),
        }),
        Route::Shared { api_path } => Ok(Routed {
            index: None,
            api_path: api_path.to_owned(),
        }),
        Route::Unknown => Err(ApiError::no_route(&target.path)),
    }
}

/// A method the path does not take is a 405 naming the ones it does, before
/// any key is asked for: on a product route by its mapping rules (a path no
/// rule knows stays a 404 later), on the shared endpoint by OpenAI's paths.
fn check_method(
    ctx: &mut RequestCtx,
    catalog: &ServingCatalog,
    target: &Target,
    routed: &Routed,
) -> Result<(), ApiError> {
    let allowed = match routed.index {
        Some(index) => {
            let rules = &catalog.routes.product(index).rules;
            if rules.takes(&target.method, &routed.api_path) {
                return Ok(());
            }
            let methods = rules.methods_for(&routed.api_path);
            if methods.is_empty() {
                return Ok(());
            }
            methods.join(", ")
        }
        None => match shared_allowed_methods(&target.method, &routed.api_path) {
            Some(allowed) => allowed.to_owned(),
            None => return Ok(()),
        },
    };
    let error = ApiError::method_not_allowed(&target.method, &target.path, &allowed);
    ctx.extra_headers.push(("allow", allowed));
    Err(error)
}

/// The product a request is for: its route's, or on the shared endpoint
/// the one serving the body's `model`, which must be the key's.
fn product_for(
    catalog: &ServingCatalog,
    routed: &Routed,
    auth: &AuthContext,
    model: Option<&str>,
    is_model_list: bool,
) -> Result<usize, ApiError> {
    if let Some(index) = routed.index {
        return Ok(index);
    }
    if is_model_list {
        return catalog
            .routes
            .find_product(&auth.application.product)
            .ok_or_else(|| ApiError::product_not_served(&auth.application.product));
    }
    let model = model.ok_or_else(ApiError::model_required)?;
    let index = catalog
        .routes
        .product_for_model(model)
        .ok_or_else(|| ApiError::model_not_found(model))?;
    let product = &catalog.routes.product(index).product;
    if product.system_name != auth.application.product {
        return Err(ApiError::not_subscribed(model));
    }
    Ok(index)
}

/// The body as forwarded: streams ask the upstream for usage; every
/// `max_tokens` field is capped at the plan's cap and at the share of the
/// hold's grant of each generation; an inference request without a model
/// names the product's, so a server hosting several cannot pick another;
/// vLLM's `priority` is the plan's on a backend with
/// `priority_scheduling`, else 0 if the client sent one.
fn rewrite_body(
    ctx: &mut RequestCtx,
    auth: &AuthContext,
    route: &ProductRoute,
    endpoint: Endpoint,
    body: &Body,
    spend: &Spend,
    completion_grant: Option<u64>,
) -> Result<(), ApiError> {
    let Some(bytes) = ctx.body.as_ref().filter(|_| body.json) else {
        return Ok(());
    };
    let plan_cap = auth.plan.max_tokens.map(u64::from);
    // Without clamping the grant is the whole ask (or the default bound
    // when none was asked), so capping at it changes only the absent bound.
    let grant_per_generation = completion_grant.map(|grant| grant / spend.generations);
    let max_tokens_cap = match (plan_cap, grant_per_generation) {
        (Some(cap), Some(grant)) => Some(cap.min(grant)),
        (cap, grant) => cap.or(grant),
    };
    let default_model = (endpoint.is_inference() && body.facts.model.is_none())
        .then(|| route.product.models.first().map(String::as_str))
        .flatten();
    // The backend was chosen just before (`choose_upstream`).
    let priority_scheduling = ctx.upstream.as_ref().is_some_and(|u| u.backend.priority_scheduling);
    let policy = ForwardPolicy {
        stream_usage: route.product.metering.stream_usage,
        max_tokens_cap,
        default_model,
        queue_priority: priority_scheduling.then(|| auth.plan.priority.queue_priority()),
    };
    let rewrite = rewrite_request(bytes, endpoint, &policy).map_err(|detail| ApiError::invalid_json(&detail))?;
    ctx.client_usage = rewrite.client_usage;
    if let (Some(bound), Some(ceiling)) = (rewrite.max_tokens, ctx.ceiling.as_mut()) {
        // The server was told at most `bound` a generation.
        *ceiling = ceiling.with_completion_at_most(bound.saturating_mul(spend.generations));
    }
    if rewrite.stream && endpoint == Endpoint::Responses {
        ctx.client_usage = ClientUsage {
            final_chunk: true,
            every_chunk: true,
        };
    }
    if let Some(forwarded) = rewrite.body {
        ctx.body = Some(Bytes::from(forwarded));
    }
    if let Some(model) = default_model {
        ctx.model = Some(model.to_owned());
    }
    Ok(())
}

/// What a token of the request's model costs (its own prices on the plan,
/// else the plan's; the product's first model when it names none), kept
/// for billing; the rates to hold its cost at when spend budgets apply.
/// Budgets are not checked on requests that cannot spend (no metered
/// endpoint, a free model).
fn price_request(ctx: &mut RequestCtx, auth: &AuthContext, route: &ProductRoute, ask: &Ask<'_>) -> Option<SpendRates> {
    let model = ctx
        .model
        .as_deref()
        .or(route.product.models.first().map(String::as_str));
    ctx.rates = auth.plan.spend_rates(model);
    let metered = ask.endpoint.generates() || ask.endpoint == Endpoint::Embeddings;
    if !metered || ctx.rates.is_free() {
        ctx.budget_limits.clear();
        ctx.account_limits.clear();
    }
    (!ctx.budget_limits.is_empty() || !ctx.account_limits.is_empty()).then_some(ctx.rates)
}

/// The backend and the path (normalised, below its base path) and query
/// (without the key) to send upstream.
fn choose_upstream(
    ctx: &mut RequestCtx,
    catalog: &ServingCatalog,
    route: &ProductRoute,
    routed: &Routed,
    target: &Target,
) -> Result<(), ApiError> {
    let upstream = catalog
        .upstreams
        .get(&route.product.backend)
        .cloned()
        .ok_or_else(|| ApiError::upstream_unavailable(&route.product.backend))?;
    let base = if route.product.backend_path == "/" {
        upstream.base_path.as_str()
    } else {
        route.product.backend_path.as_str()
    };
    let forwarded_query = target
        .query
        .as_deref()
        .map(|q| strip_query_param(q, ctx.key_query_param.as_deref()))
        .filter(|q| !q.is_empty());
    ctx.upstream_path = upstream_path(base, &routed.api_path, forwarded_query.as_deref());
    ctx.upstream = Some(upstream);
    Ok(())
}
