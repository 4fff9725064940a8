//! Errors as OpenAI clients expect them: `{"error":{"message","type","param","code"}}`
//! with the status code the SDKs map to their exception classes.

use serde::Serialize;
use std::borrow::Cow;

/// A refusal or failure the proxy answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `rate_limit_error`, …
    pub kind: &'static str,
    /// OpenAI's `code`: `invalid_api_key`, `model_not_found`, …
    pub code: &'static str,
    pub param: Option<Cow<'static, str>>,
    /// Why, for the rejected-by-reason counter and the access log.
    pub reason: &'static str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

impl ApiError {
    fn new(status: u16, kind: &'static str, code: &'static str, reason: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            message,
            kind,
            code,
            param: None,
            reason,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        // Serializing plain strings cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    pub fn missing_key(locations: &str) -> ApiError {
        ApiError::new(
            401,
            "invalid_request_error",
            "missing_api_key",
            "missing_key",
            format!("You didn't provide an API key. Send it as {locations}."),
        )
    }

    pub fn invalid_key() -> ApiError {
        ApiError::new(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "invalid_key",
            "Incorrect API key provided. It may be mistyped, revoked or expired; get a new one from the developer portal."
                .into(),
        )
    }

    /// An access token that is not valid, and what is wrong with it.
    pub fn invalid_token(why: &str) -> ApiError {
        ApiError::new(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "invalid_token",
            format!("Invalid access token: {why}."),
        )
    }

    pub fn tokens_not_configured() -> ApiError {
        ApiError::new(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "invalid_token",
            "This gateway verifies no access tokens (no issuer is configured in `access_tokens`); use an API key."
                .into(),
        )
    }

    /// A product that takes access tokens only, asked with a key or nothing.
    pub fn tokens_only(product: &str) -> ApiError {
        ApiError::new(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "missing_token",
            format!(
                "Product `{product}` takes access tokens of the company identity provider, not API keys: send one \
                 as `Authorization: Bearer <token>`."
            ),
        )
    }

    /// A valid token whose groups give no plan of `what` (a product, or
    /// any product).
    pub fn not_entitled(what: &str) -> ApiError {
        ApiError::new(
            403,
            "permission_error",
            "not_entitled",
            "not_entitled",
            format!("Your access token's groups give no plan of {what}; ask to join a group that does."),
        )
    }

    pub fn token_keys_unavailable() -> ApiError {
        ApiError::new(
            503,
            "server_error",
            "service_unavailable",
            "token_keys_unavailable",
            "The gateway cannot verify access tokens right now: the identity provider's keys could not be \
             fetched. Retry shortly."
                .into(),
        )
    }

    pub fn malformed_credentials(what: &str) -> ApiError {
        ApiError::new(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "invalid_key",
            format!("Malformed credentials: {what}."),
        )
    }

    pub fn application_pending(name: &str) -> ApiError {
        ApiError::new(
            403,
            "permission_error",
            "application_pending",
            "application_pending",
            format!(
                "Application `{name}` is awaiting approval by an administrator; its keys work once it is approved."
            ),
        )
    }

    pub fn application_suspended(name: &str) -> ApiError {
        ApiError::new(
            403,
            "permission_error",
            "application_suspended",
            "application_suspended",
            format!("Application `{name}` is suspended; ask an administrator to resume it."),
        )
    }

    /// A model that exists but not for this key: answered as OpenAI
    /// answers it (and as a model that does not exist, so keys cannot
    /// probe the catalog), counted apart for operators.
    pub fn not_subscribed(model: &str) -> ApiError {
        let mut error = ApiError::model_not_found(model);
        error.reason = "not_subscribed";
        error
    }

    /// The key's product is not released in the environment this proxy serves.
    pub fn product_not_served(product: &str) -> ApiError {
        ApiError::new(
            403,
            "permission_error",
            "product_not_served",
            "not_subscribed",
            format!("This API key's product `{product}` is not served here."),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> ApiError {
        ApiError::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            "method_not_allowed",
            format!("{method} is not allowed on {path}; use {allowed}."),
        )
    }

    pub fn model_not_found(model: &str) -> ApiError {
        let mut error = ApiError::new(
            404,
            "invalid_request_error",
            "model_not_found",
            "model_not_found",
            format!("The model `{model}` does not exist or you do not have access to it."),
        );
        error.param = Some(Cow::Borrowed("model"));
        error
    }

    pub fn model_required() -> ApiError {
        let mut error = ApiError::new(
            400,
            "invalid_request_error",
            "missing_model",
            "bad_request",
            "This endpoint routes by model: the JSON body needs a `model` string.".into(),
        );
        error.param = Some(Cow::Borrowed("model"));
        error
    }

    pub fn invalid_json(detail: &str) -> ApiError {
        ApiError::new(
            400,
            "invalid_request_error",
            "invalid_json",
            "bad_request",
            format!("The request body is not valid JSON: {detail}."),
        )
    }

    /// A request Pingora could not parse or read (`status` is 4xx).
    pub fn unreadable_request(status: u16) -> ApiError {
        ApiError::new(
            status,
            "invalid_request_error",
            "bad_request",
            "bad_request",
            format!("The request could not be processed (HTTP {status})."),
        )
    }

    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            404,
            "invalid_request_error",
            "unknown_url",
            "no_route",
            format!("No API is served at `{path}`."),
        )
    }

    pub fn no_mapping_rule(method: &str, path: &str) -> ApiError {
        ApiError::new(
            404,
            "invalid_request_error",
            "unknown_url",
            "no_mapping_rule",
            format!("No mapping rule matches {method} {path}; this product does not offer that endpoint."),
        )
    }

    /// A request with a body on a path the gateway cannot meter, which no
    /// mapping rule lets through unmetered.
    pub fn unmetered_endpoint(method: &str, path: &str) -> ApiError {
        ApiError::new(
            404,
            "invalid_request_error",
            "unknown_url",
            "unmetered_endpoint",
            format!(
                "{method} {path} is not served: the gateway meters /v1/chat/completions, /v1/completions, \
                 /v1/embeddings and /v1/responses, and forwards other requests with a body only where the \
                 product lets them through unmetered."
            ),
        )
    }

    /// An `/invocations` body that is none of the requests it takes.
    pub fn unknown_invocation() -> ApiError {
        let mut error = ApiError::new(
            400,
            "invalid_request_error",
            "invalid_request",
            "unknown_invocation",
            "An /invocations request must be a chat (`messages`), completions (`prompt`) or embeddings \
             (`input`) request."
                .to_owned(),
        );
        error.param = Some(Cow::Borrowed("messages"));
        error
    }

    pub fn body_too_large(limit: u64) -> ApiError {
        ApiError::new(
            413,
            "invalid_request_error",
            "request_too_large",
            "body_too_large",
            format!("The request body exceeds the limit of {limit} bytes."),
        )
    }

    pub fn length_required() -> ApiError {
        ApiError::new(
            411,
            "invalid_request_error",
            "length_required",
            "bad_request",
            "Chunked request bodies over 64 KiB need a Content-Length header on this endpoint.".into(),
        )
    }

    pub fn rate_limited(metric: &str, period: &str, limit: u64, retry_after_secs: u64) -> ApiError {
        let what = if maas_store::model::TOKEN_METRICS.contains(&metric) {
            format!("{metric} spent: the plan allows {limit} {metric} per {period}")
        } else {
            format!("the plan allows {limit} {metric} per {period}")
        };
        ApiError::new(
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            "rate_limited",
            format!("Rate limit reached: {what}. Retry in {retry_after_secs} s."),
        )
    }

    /// The token budget left cannot hold even the request's prompt.
    pub fn insufficient_quota(metric: &str, remaining: u64, needed: u64) -> ApiError {
        ApiError::new(
            429,
            "insufficient_quota",
            "insufficient_quota",
            "insufficient_quota",
            format!(
                "You exceeded your current quota: {remaining} {metric} left (after requests in flight), and \
                 this request needs about {needed}: its prompt and at least one completion token."
            ),
        )
    }

    /// A hard spend budget has no room for the request's least cost (its
    /// prompt and one completion token per generation, at its model's
    /// prices). `status` is the budget's spend counter, in nanos.
    pub fn budget_spent(
        scope: maas_store::model::BudgetScope,
        status: &maas_store::LimitStatus,
        currency: &str,
        needed_nanos: u64,
    ) -> ApiError {
        use maas_store::model::budget::nanos_to_money;
        let period = maas_store::model::BudgetPeriod::of(status.limit.period)
            .unwrap_or(maas_store::model::BudgetPeriod::Total)
            .adjective();
        let amount = nanos_to_money(status.limit.value);
        let used = nanos_to_money(status.used.min(status.limit.value));
        let needed = nanos_to_money(needed_nanos);
        let when = if status.limit.period == maas_store::period::Period::Eternity {
            "It does not start over: ask an admin to raise it.".to_owned()
        } else {
            let resets = status
                .resets_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            format!("It starts over at {resets}.")
        };
        ApiError::new(
            429,
            "insufficient_quota",
            "insufficient_quota",
            "budget_spent",
            format!(
                "The {scope}'s {period} budget of {amount} {currency} has {left} {currency} left ({used} {currency} \
                 used, requests in flight included), less than this request needs: at least {needed} {currency}. \
                 {when}",
                scope = scope.as_str(),
                // What is left rounds down, what is used and needed up.
                left = maas_store::model::Money::from_micros(status.limit.value.saturating_sub(status.used) / 1_000),
            ),
        )
    }

    /// Every replica of the backend was saturated and the request could
    /// not wait (longer) in the gateway's queue.
    pub fn saturated(
        backend: &str,
        priority: maas_store::model::Priority,
        refused: crate::upstream::Refused,
        retry_after_secs: u64,
    ) -> ApiError {
        let priority = priority.as_str();
        let (reason, why) = match refused {
            crate::upstream::Refused::Full => (
                "queue_full",
                "and as many of this model's requests as may wait are waiting already".to_owned(),
            ),
            crate::upstream::Refused::Displaced => (
                "queue_displaced",
                "and the request gave its place in the full queue to one of a higher priority or of an \
                 application with fewer requests waiting"
                    .to_owned(),
            ),
            crate::upstream::Refused::TimedOut { waited } => (
                "queue_timeout",
                format!(
                    "and the request waited {:.1} s for room, as long as this model allows",
                    waited.as_secs_f64()
                ),
            ),
        };
        ApiError::new(
            429,
            "rate_limit_error",
            "model_overloaded",
            reason,
            format!(
                "The servers of `{backend}` are at capacity ({priority} priority requests go in turn), {why}. \
                 Retry in {retry_after_secs} s."
            ),
        )
    }

    /// The client closed its connection before the request was sent on
    /// (nginx's 499: nobody reads the answer).
    pub fn client_gone() -> ApiError {
        ApiError::new(
            499,
            "invalid_request_error",
            "client_closed_request",
            "client_gone",
            "The client closed the connection while its request waited.".into(),
        )
    }

    pub fn store_unavailable() -> ApiError {
        ApiError::new(
            503,
            "server_error",
            "service_unavailable",
            "store_unavailable",
            "The gateway cannot reach its store right now; retry shortly.".into(),
        )
    }

    /// The store does not answer and this replica does not know the key.
    pub fn keys_unverifiable() -> ApiError {
        ApiError::new(
            503,
            "server_error",
            "service_unavailable",
            "keys_unverifiable",
            "The gateway cannot verify API keys right now: its store does not answer. Keys it verified \
             before keep working; retry shortly."
                .into(),
        )
    }

    pub fn upstream_unavailable(backend: &str) -> ApiError {
        ApiError::new(
            503,
            "server_error",
            "service_unavailable",
            "upstream_unavailable",
            format!("No healthy replica of backend `{backend}` is reachable; retry shortly."),
        )
    }

    pub fn upstream_failed() -> ApiError {
        ApiError::new(
            502,
            "server_error",
            "bad_gateway",
            "upstream_failed",
            "The model server failed to answer.".into(),
        )
    }

    /// Sent as the last event of a stream the model server broke off.
    pub fn stream_interrupted() -> ApiError {
        ApiError::new(
            502,
            "server_error",
            "stream_interrupted",
            "stream_interrupted",
            "The model server stopped in the middle of the stream; the output is incomplete.".into(),
        )
    }

    pub fn upstream_timeout() -> ApiError {
        ApiError::new(
            504,
            "server_error",
            "gateway_timeout",
            "upstream_timeout",
            "The model server did not answer in time.".into(),
        )
    }

    /// A body an endpoint reads as JSON that is not a JSON object the
    /// gateway can vouch for (see [`crate::request::body`]).
    /// A body refused by [`crate::request::body::inspect_json`], in its words.
    pub fn invalid_body(refused: &crate::request::body::BodyRefused) -> ApiError {
        let mut error = ApiError::invalid_json(&refused.message);
        error.message = refused.message.clone();
        error.code = refused.code;
        error.param = refused.param.clone();
        error
    }

    /// A parameter the gateway does not serve, because it could not meter
    /// or bound what it asks for.
    pub fn unsupported(param: &'static str, message: &str) -> ApiError {
        let mut error = ApiError::new(
            400,
            "invalid_request_error",
            "unsupported_parameter",
            "unsupported",
            message.into(),
        );
        error.param = Some(Cow::Borrowed(param));
        error
    }

    /// A path with no safe normal form ([`crate::request::request_path`]).
    pub fn unsafe_path(reason: &str) -> ApiError {
        ApiError::new(
            400,
            "invalid_request_error",
            "invalid_path",
            "invalid_path",
            format!("The request path was refused: {reason}."),
        )
    }

    /// A request body whose framing is broken (a malformed chunk).
    pub fn malformed_body(detail: &str) -> ApiError {
        ApiError::new(
            400,
            "invalid_request_error",
            "bad_request",
            "bad_request",
            format!("The request body could not be read: {detail}."),
        )
    }

    /// What Pingora refuses before the gateway sees the request: a header
    /// section it cannot parse (400) or the `CONNECT` method (405).
    pub fn unparsable_request(status: u16) -> ApiError {
        let message = match status {
            405 => "This method is not served here.".to_owned(),
            400 => "The request is not valid HTTP/1.1: a malformed request line or header, too many \
                    headers, a conflicting Content-Length or Transfer-Encoding, or a Host that \
                    does not match the request target."
                .to_owned(),
            _ => format!("The request could not be processed (HTTP {status})."),
        };
        ApiError::new(
            status,
            "invalid_request_error",
            if status == 405 {
                "method_not_allowed"
            } else {
                "bad_request"
            },
            "unparsable_request",
            message,
        )
    }

    pub fn internal(detail: &str) -> ApiError {
        ApiError::new(
            500,
            "server_error",
            "internal_error",
            "internal",
            format!("The gateway failed: {detail}."),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_in_openai_shape() {
        let json: serde_json::Value = serde_json::from_slice(&ApiError::model_not_found("gpt-x").to_json()).unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["error"]["code"], "model_not_found");
        assert_eq!(json["error"]["param"], "model");
        assert!(json["error"]["message"].as_str().unwrap().contains("gpt-x"));
        let json: serde_json::Value = serde_json::from_slice(&ApiError::invalid_key().to_json()).unwrap();
        assert_eq!(json["error"]["param"], serde_json::Value::Null);
    }

    #[test]
    fn rate_limit_message_names_the_limit() {
        let error = ApiError::rate_limited("total_tokens", "day", 1000, 42);
        assert_eq!(error.status, 429);
        assert!(error.message.contains("total_tokens spent"), "{}", error.message);
        assert!(error.message.contains("42 s"));
    }
}
