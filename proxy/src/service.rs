//! The Pingora `ProxyHttp` implementation: a thin dispatcher that calls the
//! pure modules in request order (see docs/ARCHITECTURE.md): authenticate,
//! route, match mapping rules, check limits, proxy, meter, record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use maas_store::model::{ApplicationState, AuthContext, CredentialLocation, KeyHash, TOKEN_METRICS};
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use time::OffsetDateTime;

use crate::access_log::AccessLogLine;
use crate::body::{inspect_json, is_json_content_type};
use crate::credentials::{RequestCredentials, describe_locations, extract_key};
use crate::error::ApiError;
use crate::limits::Decision;
use crate::metering::{BodyCollector, TokenUsage};
use crate::metrics::METRICS;
use crate::ratelimit::{limit_headers, retry_after_secs};
use crate::routing::{Route, upstream_path};
use crate::state::{ProxyState, ServingCatalog};
use crate::upstream::Upstream;
use crate::{cors, error};

/// The header that tells the model server (and `maas sim`) whose request it is.
pub const APPLICATION_HEADER: &str = "x-maas-application-id";
/// Pingora's retry buffer: request bodies are replayed from our own copy,
/// handed over when at most this much is left to read.
const RETRY_BUFFER_BYTES: u64 = 64 * 1024;
/// Attempts per request across replicas (connect failures only).
const MAX_ATTEMPTS: u32 = 3;

pub struct MaasProxy {
    state: Arc<ProxyState>,
}

impl MaasProxy {
    pub fn new(state: Arc<ProxyState>) -> MaasProxy {
        MaasProxy { state }
    }
}

/// Everything one request carries between phases.
pub struct RequestCtx {
    started: Instant,
    catalog: Option<Arc<ServingCatalog>>,
    product: Option<usize>,
    auth: Option<Arc<AuthContext>>,
    upstream: Option<Arc<Upstream>>,
    replica: usize,
    attempts: u32,
    /// Path (and query) to send upstream.
    upstream_path: String,
    /// The whole request body, read before the peer is chosen.
    body: Option<Bytes>,
    model: Option<String>,
    /// Query parameter that carried the key, removed before forwarding.
    key_query_param: Option<String>,
    custom_key_header: Option<String>,
    extra_headers: Vec<(&'static str, String)>,
    collector: Option<BodyCollector>,
    usage: Option<TokenUsage>,
    rejected: Option<&'static str>,
    upstream_sent_at: Option<Instant>,
    upstream_headers_after: Option<Duration>,
    /// Counted in the in-flight gauge (Pingora may skip `request_filter`).
    in_flight: bool,
}

enum Next {
    Proxy,
    Answered,
}

fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok())
}

impl MaasProxy {
    /// Authenticates, routes and admits a request; `Err` is answered as is.
    async fn prepare(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Result<Next, ApiError>> {
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
        if let Some(body) = ctx
            .body
            .as_ref()
            .filter(|b| !b.is_empty() && (json_body || route_index.is_none()))
        {
            match inspect_json(body) {
                Ok(facts) => ctx.model = facts.model,
                Err(detail) => return Ok(Err(ApiError::invalid_json(&detail))),
            }
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
        let decision = self
            .state
            .limiter
            .admit(&auth.application.id, &auth.plan.limits, &deltas, now)
            .await;
        match decision {
            Ok(Decision::Admitted(statuses)) => ctx.extra_headers.extend(limit_headers(&statuses, now)),
            Ok(Decision::Rejected(status)) => {
                let retry_after = retry_after_secs(&status, now);
                let mut error = ApiError::rate_limited(
                    &status.limit.metric,
                    status.limit.period.as_str(),
                    status.limit.value,
                    retry_after,
                );
                if TOKEN_METRICS.contains(&status.limit.metric.as_str()) {
                    error.reason = "token_limit";
                }
                ctx.extra_headers.push(("retry-after", retry_after.to_string()));
                ctx.extra_headers
                    .extend(limit_headers(std::slice::from_ref(&status), now));
                return Ok(Err(error));
            }
            Err(error) => {
                METRICS.store_errors.with_label_values(&["check_limits"]).inc();
                tracing::error!(%error, "limit check failed");
                return Ok(Err(ApiError::store_unavailable()));
            }
        }

        if is_model_list {
            let body = model_list(&route.product.models);
            let mut headers = std::mem::take(&mut ctx.extra_headers);
            headers.push(("content-type", "application/json".into()));
            respond(session, 200, Bytes::from(body), &headers).await?;
            ctx.extra_headers = headers;
            return Ok(Ok(Next::Answered));
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

/// Reads the whole request body (up to `max` bytes). Pingora replays a
/// body to the upstream only from its 64 KiB retry buffer, so retry
/// buffering is switched on once at most that much is left: the buffer
/// then holds the tail, Pingora hands it to `request_body_filter`, and
/// that filter sends our full copy instead.
async fn read_body(session: &mut Session, max: u64) -> Result<Result<Bytes, ApiError>> {
    let declared: Option<u64> = header_str(session, "content-length").and_then(|v| v.trim().parse().ok());
    let expects_continue = header_str(session, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if declared.is_some_and(|len| len > max) {
        if expects_continue {
            // The client waits for our answer before sending the body.
            session.set_keepalive(None);
        } else {
            drain_body(session, max).await;
        }
        return Ok(Err(ApiError::body_too_large(max)));
    }
    if expects_continue {
        session.as_downstream_mut().write_continue_response().await?;
    }
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0).min(max) as usize);
    if declared.is_none() {
        session.as_downstream_mut().enable_retry_buffering();
    }
    loop {
        if let Some(len) = declared
            && len.saturating_sub(buffer.len() as u64) <= RETRY_BUFFER_BYTES
        {
            session.as_downstream_mut().enable_retry_buffering();
        }
        match session.read_request_body().await? {
            Some(chunk) => {
                if buffer.len() as u64 + chunk.len() as u64 > max {
                    drain_body(session, max).await;
                    return Ok(Err(ApiError::body_too_large(max)));
                }
                buffer.extend_from_slice(&chunk);
            }
            None => break,
        }
    }
    if !buffer.is_empty() && session.as_downstream().get_retry_buffer().is_none() {
        return Ok(Err(if declared.is_none() {
            ApiError::length_required()
        } else {
            ApiError::internal("the request body could not be handed to the upstream")
        }));
    }
    Ok(Ok(buffer.freeze()))
}

/// Reads and drops the rest of a refused body, up to a bound, so clients
/// that send the whole body before reading (most SDKs) see the 413 rather
/// than a broken pipe. Past the bound the connection is closed.
async fn drain_body(session: &mut Session, max: u64) {
    let bound = max.saturating_mul(4).max(64 * 1024 * 1024);
    let mut drained = 0u64;
    while drained <= bound {
        match session.read_request_body().await {
            Ok(Some(chunk)) => drained += chunk.len() as u64,
            _ => break,
        }
    }
    session.set_keepalive(None);
}

/// Writes a complete response the proxy makes itself.
async fn respond(session: &mut Session, status: u16, body: Bytes, headers: &[(&'static str, String)]) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(headers.len() + 2))?;
    for (name, value) in headers {
        header.append_header(*name, value.as_str())?;
    }
    header.insert_header("content-length", body.len().to_string())?;
    if !session.is_body_done() {
        // The unread request body would be taken for the next request.
        session.set_keepalive(None);
    }
    let empty = body.is_empty();
    session.write_response_header(Box::new(header), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

async fn respond_error(session: &mut Session, ctx: &mut RequestCtx, error: &ApiError) -> Result<()> {
    ctx.rejected = Some(error.reason);
    METRICS.rejected.with_label_values(&[error.reason]).inc();
    let mut headers = std::mem::take(&mut ctx.extra_headers);
    headers.push(("content-type", "application/json".into()));
    let result = respond(session, error.status, Bytes::from(error.to_json()), &headers).await;
    ctx.extra_headers = headers;
    result
}

fn upstream_error(error: &Error) -> ApiError {
    match error.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            error::ApiError::upstream_timeout()
        }
        ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
            ApiError::upstream_unavailable("model server")
        }
        _ => ApiError::upstream_failed(),
    }
}

#[async_trait]
impl ProxyHttp for MaasProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            catalog: None,
            product: None,
            auth: None,
            upstream: None,
            replica: 0,
            attempts: 0,
            upstream_path: String::new(),
            body: None,
            model: None,
            key_query_param: None,
            custom_key_header: None,
            extra_headers: Vec::new(),
            collector: None,
            usage: None,
            rejected: None,
            upstream_sent_at: None,
            upstream_headers_after: None,
            in_flight: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        METRICS.in_flight.inc();
        ctx.in_flight = true;
        match self.prepare(session, ctx).await? {
            Ok(Next::Proxy) => Ok(false),
            Ok(Next::Answered) => Ok(true),
            Err(error) => {
                respond_error(session, ctx, &error).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let upstream = ctx
            .upstream
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))?;
        ctx.attempts += 1;
        ctx.replica = upstream.pick();
        let replica = &upstream.replicas[ctx.replica];
        let mut peer = HttpPeer::new(replica.address, replica.tls, replica.host.clone());
        let timeouts = &upstream.timeouts;
        peer.options.connection_timeout = Some(Duration::from_millis(timeouts.connect_ms));
        peer.options.read_timeout = Some(Duration::from_millis(timeouts.read_ms));
        peer.options.write_timeout = Some(Duration::from_millis(timeouts.write_ms));
        peer.options.idle_timeout = Some(Duration::from_millis(timeouts.pool_idle_ms));
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(upstream) = &ctx.upstream {
            upstream.eject(ctx.replica);
            METRICS
                .upstream_errors
                .with_label_values(&[&upstream.name, "connect"])
                .inc();
            // Nothing reached the upstream: another replica may take it.
            if ctx.attempts < MAX_ATTEMPTS && upstream.replicas.len() > 1 {
                e.set_retry(true);
            }
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        _session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {}", peer.address()));
        // The body is replayed from our own copy, so a POST that failed on a
        // stale pooled connection (the backend closed it while idle) is
        // retried like Pingora retries idempotent requests.
        if ctx.attempts < MAX_ATTEMPTS {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let upstream = ctx
            .upstream
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))?;
        let uri: http::Uri = ctx
            .upstream_path
            .parse()
            .map_err(|_| Error::explain(ErrorType::InternalError, "invalid upstream path"))?;
        request.set_uri(uri);
        request.insert_header("host", upstream.replicas[ctx.replica].authority.as_str())?;
        // The client's key never reaches the model server.
        request.remove_header("authorization");
        if let Some(name) = &ctx.custom_key_header {
            request.remove_header(name.as_str());
        }
        if let Some(authorization) = &upstream.authorization {
            request.insert_header("authorization", authorization.as_str())?;
        }
        // Metering reads the response: ask for it uncompressed.
        request.remove_header("accept-encoding");
        request.remove_header("expect");
        if let Some(auth) = &ctx.auth {
            request.insert_header(APPLICATION_HEADER, auth.application.id.as_str())?;
        }
        if let Some(body) = &ctx.body {
            request.remove_header("transfer-encoding");
            request.insert_header("content-length", body.len().to_string())?;
        }
        ctx.upstream_sent_at = Some(Instant::now());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(full) = &ctx.body {
            // See `read_body`: the one call per attempt carries the tail.
            *body = if end_of_stream {
                Some(full.clone())
            } else {
                Some(Bytes::new())
            };
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_headers_after = ctx.upstream_sent_at.map(|t| t.elapsed());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        for (name, value) in &ctx.extra_headers {
            response.insert_header(*name, value.as_str())?;
        }
        let is_json = response
            .headers
            .get("content-type")
            .is_some_and(|v| is_json_content_type(v.as_bytes()));
        if is_json && response.status.is_success() {
            ctx.collector = Some(BodyCollector::default());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(collector) = ctx.collector.as_mut() {
            if let Some(chunk) = body {
                collector.push(chunk);
            }
            if end_of_stream {
                ctx.usage = collector.usage();
                ctx.collector = None;
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let status = match e.esource() {
            ErrorSource::Downstream => match e.etype() {
                ErrorType::HTTPStatus(code) => *code,
                _ => 0,
            },
            _ => match e.etype() {
                ErrorType::HTTPStatus(code) => *code,
                _ => upstream_error(e).status,
            },
        };
        if status > 0 && session.response_written().is_none() {
            let error = match e.etype() {
                ErrorType::HTTPStatus(code) if *code < 500 => {
                    let mut error = ApiError::invalid_json("the request could not be read");
                    error.status = *code;
                    error.message = format!("The request could not be processed (HTTP {code}).");
                    error
                }
                _ => upstream_error(e),
            };
            if let Some(upstream) = &ctx.upstream {
                METRICS
                    .upstream_errors
                    .with_label_values(&[&upstream.name, error.reason])
                    .inc();
            }
            if let Err(write_error) = respond_error(session, ctx, &error).await {
                tracing::debug!(%write_error, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.in_flight {
            METRICS.in_flight.dec();
        }
        let now = OffsetDateTime::now_utc();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let catalog = ctx.catalog.clone();
        let product = catalog
            .as_ref()
            .zip(ctx.product)
            .map(|(c, i)| c.routes.product(i).product.system_name.as_str());
        let usage = ctx.usage.unwrap_or_default();
        if let (Some(auth), Some(_)) = (&ctx.auth, ctx.usage) {
            self.state.limiter.record(
                &auth.application.id,
                &[
                    ("prompt_tokens", usage.prompt_tokens),
                    ("completion_tokens", usage.completion_tokens),
                    ("total_tokens", usage.total_tokens),
                ],
                now,
            );
            let labels = [
                auth.application.product.as_str(),
                auth.application.product.as_str(),
                auth.application.id.as_str(),
                auth.application.name.as_str(),
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
        let product_label = product.unwrap_or("");
        let status_label = status.to_string();
        METRICS
            .requests
            .with_label_values(&[product_label, &status_label])
            .inc();
        let duration = ctx.started.elapsed();
        METRICS
            .request_duration
            .with_label_values(&[product_label])
            .observe(duration.as_secs_f64());
        if let Some(upstream) = ctx.upstream_headers_after {
            METRICS
                .upstream_duration
                .with_label_values(&[product_label])
                .observe(upstream.as_secs_f64());
        }
        if self.state.access_log {
            let request = session.req_header();
            AccessLogLine {
                ts: now
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                method: request.method.as_str(),
                path: request.uri.path(),
                status,
                product,
                application_id: ctx.auth.as_ref().map(|a| a.application.id.as_str()),
                application: ctx.auth.as_ref().map(|a| a.application.name.as_str()),
                key: ctx.auth.as_ref().map(|a| a.key.masked()),
                model: ctx.model.as_deref(),
                backend: ctx.upstream.as_ref().map(|u| u.name.as_str()),
                rejected: ctx.rejected,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total_tokens,
                request_bytes: ctx.body.as_ref().map_or(0, Bytes::len),
                duration_ms: duration.as_secs_f64() * 1000.0,
                upstream_ms: ctx.upstream_headers_after.map(|d| d.as_secs_f64() * 1000.0),
                client: session.client_addr().map(|a| a.to_string()),
            }
            .write();
        }
    }
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
