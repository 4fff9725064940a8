//! The request phase: route, authenticate, read the body, route by model,
//! match mapping rules and admit against limits — everything
//! `request_filter` decides before a request may go upstream.

use bytes::Bytes;
use maas_store::model::{ApplicationState, CredentialLocation, KeyHash, TOKEN_METRICS, has_valid_checksum};
use pingora_error::Result;
use pingora_proxy::Session;
use time::OffsetDateTime;

use crate::body::{RequestFacts, inspect_json, is_json_content_type};
use crate::cors;
use crate::credentials::{RequestCredentials, describe_locations, extract_key};
use crate::error::ApiError;
use crate::limits::{Decision, TokenRequest, prompt_estimate};
use crate::metrics::METRICS;
use crate::ratelimit::{limit_headers, retry_after_secs};
use crate::reply::respond;
use crate::request_body::read_body;
use crate::rewrite::{ClientUsage, Endpoint, rewrite_request};
use crate::routing::{Route, upstream_path};
use crate::service::{MaasProxy, RequestCtx};

pub(crate) enum Next {
    Proxy,
    Answered,
}

pub(crate) fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok())
}

impl MaasProxy {
    /// Authenticates, routes and admits a request; `Err` is answered as is.
    pub(crate) async fn prepare(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Result<Next, ApiError>> {
        let catalog = self.state.catalog();
        ctx.catalog = Some(catalog.clone());
        let host = header_str(session, "host").map(str::to_owned);
        let path = session.req_header().uri.path().to_owned();
        let query = session.req_header().uri.query().map(str::to_owned);
        let method = session.req_header().method.as_str().to_owned();
        let (route_index, api_path) = match catalog.routes.route(host.as_deref(), &path) {
            Route::Product { index, api_path } => (Some(index), api_path.to_owned()),
            Route::Shared { api_path } => (None, api_path.to_owned()),
            Route::Unknown => return Ok(Err(ApiError::no_route(&path))),
        };
        ctx.product = route_index;
        let (credentials, cors_policy) = match route_index {
            Some(index) => {
                let product = &catalog.routes.product(index).product;
                (&product.credentials, product.cors.as_ref())
            }
            None => (&catalog.shared_credentials, catalog.shared_cors.as_ref()),
        };

        // CORS: preflights never need a key and never reach the upstream.
        let origin = header_str(session, "origin").map(str::to_owned);
        if let (Some(policy), Some(origin)) = (cors_policy, origin.as_deref()) {
            if method == "OPTIONS"
                && session
                    .req_header()
                    .headers
                    .contains_key("access-control-request-method")
            {
                let Some(headers) = cors::preflight_headers(policy, origin) else {
                    let mut error = ApiError::no_route(&path);
                    error.status = 403;
                    error.message = format!("Origin `{origin}` may not call this API.");
                    error.reason = "cors_origin";
                    return Ok(Err(error));
                };
                respond(session, 204, Bytes::new(), &headers).await?;
                return Ok(Ok(Next::Answered));
            }
            ctx.extra_headers.extend(cors::response_headers(policy, origin));
        }

        // Authenticate.
        let custom_header = credentials.header_name.to_ascii_lowercase();
        let found = extract_key(
            &RequestCredentials {
                authorization: session.req_header().headers.get("authorization").map(|v| v.as_bytes()),
                custom_header: session
                    .req_header()
                    .headers
                    .get(custom_header.as_str())
                    .map(|v| v.as_bytes()),
                query: query.as_deref(),
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
            Err(error) => {
                METRICS.store_errors.with_label_values(&["lookup_key"]).inc();
                tracing::error!(%error, "key lookup failed");
                return Ok(Err(ApiError::store_unavailable()));
            }
        };
        drop(secret);
        let now = OffsetDateTime::now_utc();
        if !auth.key.is_usable_at(now) {
            return Ok(Err(ApiError::invalid_key()));
        }
        ctx.auth = Some(auth.clone());
        match auth.application.state {
            ApplicationState::Live => {}
            ApplicationState::Pending => return Ok(Err(ApiError::application_pending(&auth.application.name))),
            ApplicationState::Suspended => return Ok(Err(ApiError::application_suspended(&auth.application.name))),
        }
        if let Some(index) = route_index {
            let product = &catalog.routes.product(index).product;
            if product.system_name != auth.application.product {
                return Ok(Err(ApiError::not_subscribed(&product.system_name)));
            }
        }

        // The body, whole, before the peer is chosen.
        let has_body = session.req_header().headers.contains_key("content-length")
            || session.req_header().headers.contains_key("transfer-encoding");
        if has_body {
            match read_body(session, self.state.max_body_bytes).await? {
                Ok(body) => ctx.body = Some(body),
                Err(error) => return Ok(Err(error)),
            }
        }
        let json_body = session
            .req_header()
            .headers
            .get("content-type")
            .is_some_and(|v| is_json_content_type(v.as_bytes()));
        let mut facts = RequestFacts::default();
        if let Some(body) = ctx
            .body
            .as_ref()
            .filter(|b| !b.is_empty() && (json_body || route_index.is_none()))
        {
            match inspect_json(body) {
                Ok(found) => facts = found,
                Err(detail) => return Ok(Err(ApiError::invalid_json(&detail))),
            }
            ctx.model = facts.model.take();
            ctx.stream = facts.stream;
        }

        // Route the shared endpoint by model; check the model on product routes.
        let is_model_list = method == "GET" && api_path == "/v1/models";
        let product_index = match route_index {
            Some(index) => index,
            None if is_model_list => match catalog.routes.find_product(&auth.application.product) {
                Some(index) => index,
                None => return Ok(Err(ApiError::not_subscribed(&auth.application.product))),
            },
            None => {
                let Some(model) = ctx.model.as_deref() else {
                    return Ok(Err(ApiError::model_required()));
                };
                let Some(index) = catalog.routes.product_for_model(model) else {
                    return Ok(Err(ApiError::model_not_found(model)));
                };
                if catalog.routes.product(index).product.system_name != auth.application.product {
                    return Ok(Err(ApiError::not_subscribed(
                        &catalog.routes.product(index).product.system_name,
                    )));
                }
                index
            }
        };
        ctx.product = Some(product_index);
        let route = catalog.routes.product(product_index);
        if let Some(model) = ctx.model.as_deref()
            && !route.product.models.is_empty()
            && !route.product.models.iter().any(|m| m == model)
        {
            return Ok(Err(ApiError::model_not_found(model)));
        }

        // Mapping rules and limits.
        let Some(deltas) = route.rules.deltas(&method, &api_path) else {
            return Ok(Err(ApiError::no_mapping_rule(&method, &api_path)));
        };
        // Requests that spend tokens hold them against the plan's token
        // limits; generation is capped at what the hold was granted.
        let endpoint = Endpoint::of_path(&api_path);
        let prompt_estimate = ctx.body.as_ref().map_or(0, |b| prompt_estimate(b.len()));
        let plan_cap = auth.plan.max_tokens.map(u64::from);
        let limits_tokens = auth
            .plan
            .limits
            .iter()
            .any(|l| TOKEN_METRICS.contains(&l.metric.as_str()));
        let tokens = (limits_tokens && (endpoint.generates() || endpoint == Endpoint::Embeddings)).then(|| {
            if endpoint.generates() {
                let policy = self.state.limiter.hold_policy();
                let wanted = facts
                    .max_tokens_for(endpoint)
                    .or(plan_cap)
                    .unwrap_or(policy.default_max_tokens);
                TokenRequest {
                    prompt: prompt_estimate,
                    completion_max: plan_cap.map_or(wanted, |cap| wanted.min(cap)),
                    completion_min: 1,
                }
            } else {
                TokenRequest {
                    prompt: prompt_estimate,
                    completion_max: 0,
                    completion_min: 0,
                }
            }
        });
        let decision = self
            .state
            .limiter
            .admit(&auth.application.id, &auth.plan.limits, &deltas, tokens.as_ref(), now)
            .await;
        let completion_grant = match decision {
            Ok(Decision::Admitted(admitted)) => {
                ctx.extra_headers.extend(limit_headers(&admitted.statuses, now));
                ctx.hold = admitted.hold;
                admitted.completion_grant
            }
            Ok(Decision::Rejected(status)) => {
                let retry_after = retry_after_secs(&status, now);
                ctx.extra_headers.push(("retry-after", retry_after.to_string()));
                ctx.extra_headers
                    .extend(limit_headers(std::slice::from_ref(&status), now));
                let is_tokens = TOKEN_METRICS.contains(&status.limit.metric.as_str());
                if is_tokens && status.remaining > 0 {
                    // Tokens are left, fewer than the prompt and one completion token.
                    let needed = prompt_estimate + tokens.map_or(0, |t| t.completion_min);
                    return Ok(Err(ApiError::insufficient_quota(
                        &status.limit.metric,
                        status.remaining,
                        needed,
                    )));
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
                return Ok(Err(error));
            }
            Err(error) => {
                METRICS.store_errors.with_label_values(&["check_limits"]).inc();
                tracing::error!(%error, "limit check failed");
                return Ok(Err(ApiError::store_unavailable()));
            }
        };

        if is_model_list {
            let body = model_list(&route.product.models);
            let mut headers = std::mem::take(&mut ctx.extra_headers);
            headers.push(("content-type", "application/json".into()));
            respond(session, 200, Bytes::from(body), &headers).await?;
            ctx.extra_headers = headers;
            return Ok(Ok(Next::Answered));
        }

        // Streams ask the upstream for usage; max_tokens is capped at the
        // plan's cap and at the tokens the hold was granted.
        let max_tokens_cap = match completion_grant.filter(|_| auth.plan.clamp_max_tokens) {
            Some(grant) => Some(plan_cap.map_or(grant, |cap| cap.min(grant))),
            None => plan_cap,
        };
        if let Some(body) = ctx
            .body
            .as_ref()
            .filter(|_| json_body && (ctx.stream || max_tokens_cap.is_some()))
        {
            match rewrite_request(body, endpoint, route.product.metering.stream_usage, max_tokens_cap) {
                Ok(rewrite) => {
                    ctx.client_usage = rewrite.client_usage;
                    if rewrite.stream && endpoint == Endpoint::Responses {
                        ctx.client_usage = ClientUsage {
                            final_chunk: true,
                            every_chunk: true,
                        };
                    }
                    if let Some(forwarded) = rewrite.body {
                        ctx.body = Some(Bytes::from(forwarded));
                    }
                }
                Err(detail) => return Ok(Err(ApiError::invalid_json(&detail))),
            }
        }

        let Some(upstream) = catalog.upstreams.get(&route.product.backend).cloned() else {
            return Ok(Err(ApiError::upstream_unavailable(&route.product.backend)));
        };
        let base = if route.product.backend_path == "/" {
            upstream.base_path.as_str()
        } else {
            route.product.backend_path.as_str()
        };
        let forwarded_query = query
            .as_deref()
            .map(|q| strip_query_param(q, ctx.key_query_param.as_deref()))
            .filter(|q| !q.is_empty());
        ctx.upstream_path = upstream_path(base, &api_path, forwarded_query.as_deref());
        ctx.upstream = Some(upstream);
        Ok(Ok(Next::Proxy))
    }
}

fn model_list(models: &[String]) -> Vec<u8> {
    let data: Vec<serde_json::Value> = models
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "maas"}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).unwrap_or_default()
}

/// The query string without the parameter that carried the key.
fn strip_query_param(query: &str, param: Option<&str>) -> String {
    let Some(param) = param else { return query.to_owned() };
    query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != param)
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_the_key_parameter() {
        assert_eq!(strip_query_param("user_key=sk&a=1&b", Some("user_key")), "a=1&b");
        assert_eq!(strip_query_param("a=1", None), "a=1");
        assert_eq!(strip_query_param("user_key=sk", Some("user_key")), "");
    }

    #[test]
    fn model_list_is_openai_shaped() {
        let json: serde_json::Value = serde_json::from_slice(&model_list(&["a".into(), "b".into()])).unwrap();
        assert_eq!(json["object"], "list");
        assert_eq!(json["data"][1]["id"], "b");
    }
}
