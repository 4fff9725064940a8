//! The Pingora `ProxyHttp` implementation: a thin dispatcher that calls the
//! pure modules in request order (see docs/ARCHITECTURE.md): authenticate,
//! route, match mapping rules, check limits, proxy, meter, record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName};
use maas_protocol::trace_context::TraceContext;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::phases::admission::Next;
use crate::phases::reply::respond_error;
pub use crate::phases::request_ctx::RequestCtx;
use crate::record::access_log::AccessLogLine;
use crate::record::genai::{self, GenAiCall, SpanFacts};
use crate::record::metrics::METRICS;
use crate::request::body::is_json_content_type;
use crate::response::decoding::Encoding;
use crate::response::metering::{TokenUsage, UsageScanner};
use crate::response::stream_meter::{StreamMeter, is_event_stream};
use crate::state::{ProxyState, ServingCatalog};

/// The header that tells the model server (and `maas sim`) whose request it is.
pub const APPLICATION_HEADER: &str = "x-maas-application-id";
/// Microseconds the gateway spent on the request before the response's
/// headers left (`proxy.overhead_header`).
pub const OVERHEAD_HEADER: &str = "x-maas-overhead-us";
/// Attempts per request across replicas (connect failures only).
const MAX_ATTEMPTS: u32 = 3;

pub struct MaasProxy {
    pub(crate) state: Arc<ProxyState>,
}

impl MaasProxy {
    pub fn new(state: Arc<ProxyState>) -> MaasProxy {
        MaasProxy { state }
    }
}

fn upstream_error(error: &Error, backend: &str) -> ApiError {
    match error.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => ApiError::upstream_timeout(),
        ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
            ApiError::upstream_unavailable(backend)
        }
        // The client cannot fix the backend's certificate; the operator
        // sees `kind="tls"` and the log line with the reason.
        _ if is_tls_failure(error) => ApiError::upstream_unavailable(backend),
        _ => ApiError::upstream_failed(),
    }
}

fn is_tls_failure(error: &Error) -> bool {
    matches!(
        error.etype(),
        ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError
            | ErrorType::TLSWantX509Lookup
    )
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C Trace Context.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Pingora's header edits parse the name and update two maps (values and
/// the client's spelling): an edit that changes nothing is skipped.
fn remove_if_present(request: &mut RequestHeader, name: &HeaderName) {
    if request.headers.contains_key(name) {
        request.remove_header(name);
    }
}

/// Sets `name` to `value` unless it has exactly that one value already.
fn set_unless_equal(request: &mut RequestHeader, name: HeaderName, value: &str) -> Result<()> {
    let mut present = request.headers.get_all(&name).iter();
    let same = present.next().is_some_and(|v| v.as_bytes() == value.as_bytes()) && present.next().is_none();
    if !same {
        request.insert_header(name, value)?;
    }
    Ok(())
}

#[async_trait]
impl ProxyHttp for MaasProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        METRICS.in_flight.inc();
        ctx.in_flight = true;
        // Requests a client writes back to back on one connection are
        // answered in order (RFC 9112 §9.3.2), not dropped with the connection.
        session.as_downstream_mut().set_pipelining_enabled(true);
        let client_id = session.req_header().headers.get(X_REQUEST_ID).map(|v| v.as_bytes());
        ctx.request_id = crate::request::request_id::accept_or_make(client_id);
        ctx.extra_headers.push(("x-request-id", ctx.request_id.clone()));
        if let Some(ratio) = self.state.trace_ratio {
            let parent = session.req_header().headers.get(TRACEPARENT).map(|v| v.as_bytes());
            let mut random = [0u8; 24];
            // A failing system RNG leaves zeros, which start() replaces.
            let _ = aws_lc_rs::rand::fill(&mut random);
            ctx.trace = Some(TraceContext::start(parent, ratio, random));
        }
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
        // The gateway queue picked the first attempt's replica as it let
        // the request through (and counts it there already).
        if ctx.attempts > 1 || ctx.at_replica.is_none() {
            ctx.replica = upstream.pick_for(ctx.body.as_deref());
            // A retry elsewhere drops the count at the replica that refused.
            ctx.at_replica = Some(upstream.begin(ctx.replica));
        }
        let replica = &upstream.replicas[ctx.replica];
        let mut peer = HttpPeer::new(replica.address, replica.tls, replica.host.clone());
        let timeouts = &upstream.backend.timeouts;
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
            let kind = if is_tls_failure(&e) { "tls" } else { "connect" };
            upstream.note_error(ctx.replica, format!("{kind}: {e}"));
            METRICS
                .upstream_errors
                .with_label_values(&[&upstream.backend.system_name, kind])
                .inc();
            if kind == "tls" {
                tracing::warn!(backend = %upstream.backend.system_name, error = %e, "TLS to the backend failed");
            }
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
        // retried like Pingora retries idempotent requests. Nothing came
        // back on a reused connection: whether the failure surfaced while
        // writing (a broken pipe, which Pingora does not mark retryable) or
        // while reading, the connection went stale under the request.
        if ctx.attempts >= MAX_ATTEMPTS {
            e.set_retry(false);
        } else if client_reused && ctx.upstream_headers_after.is_none() {
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
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
        request.insert_header(header::HOST, upstream.replicas[ctx.replica].authority.as_str())?;
        // The client's key never reaches the model server.
        remove_if_present(request, &header::AUTHORIZATION);
        if let Some(name) = &ctx.custom_key_header {
            request.remove_header(name.as_str());
        }
        if let Some(authorization) = &upstream.authorization {
            request.insert_header(header::AUTHORIZATION, authorization.as_str())?;
        }
        // Metering reads the response: ask for it uncompressed (without the
        // header any coding would be acceptable).
        set_unless_equal(request, header::ACCEPT_ENCODING, "identity")?;
        set_unless_equal(request, X_REQUEST_ID, &ctx.request_id)?;
        remove_if_present(request, &header::EXPECT);
        // Nothing is tunnelled: the gateway meters requests and responses.
        remove_if_present(request, &header::UPGRADE);
        remove_if_present(request, &HTTP2_SETTINGS);
        if let Some(auth) = &ctx.auth {
            request.insert_header(APPLICATION_HEADER, auth.application.id.as_str())?;
        }
        if let Some(body) = &ctx.body {
            remove_if_present(request, &header::TRANSFER_ENCODING);
            set_unless_equal(request, header::CONTENT_LENGTH, itoa::Buffer::new().format(body.len()))?;
        }
        if ctx.json_body {
            set_unless_equal(request, header::CONTENT_TYPE, "application/json")?;
        }
        if let Some(trace) = &ctx.trace {
            // The model server's spans are children of the gateway's.
            request.insert_header(TRACEPARENT, trace.traceparent())?;
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
        let now = Instant::now();
        ctx.upstream_headers_after = ctx.upstream_sent_at.map(|t| now.saturating_duration_since(t));
        ctx.gateway_time.start_at(now);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let now = Instant::now();
        ctx.gateway_time.stop_at(now);
        if self.state.overhead_header && ctx.upstream_sent_at.is_some() {
            let overhead = ctx.gateway_time.overhead(ctx.started, ctx.upstream_sent_at, now);
            response.insert_header(OVERHEAD_HEADER, overhead.as_micros().to_string())?;
        }
        for (name, value) in &ctx.extra_headers {
            response.insert_header(*name, value.as_str())?;
        }
        if !response.status.is_success() {
            return Ok(());
        }
        // Event streams and JSON bodies are metered; anything else passes.
        let stream = match response.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()) {
            Some(t) if is_event_stream(t) => true,
            Some(t) if is_json_content_type(t) => false,
            _ => return Ok(()),
        };
        match Encoding::of(response.headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes())) {
            Encoding::Identity => {}
            Encoding::Decodable(decoder) => {
                // The client gets the decoded body, as from a compliant upstream.
                ctx.decoder = Some(decoder);
                response.remove_header("content-encoding");
                response.remove_header("content-length");
            }
            Encoding::Unsupported => {
                let backend = ctx.upstream.as_ref().map_or("", |u| u.backend.system_name.as_str());
                METRICS
                    .upstream_errors
                    .with_label_values(&[backend, "undecodable_encoding"])
                    .inc();
                if let Some(upstream) = &ctx.upstream {
                    upstream.note_error(
                        ctx.replica,
                        "undecodable_encoding: a content coding the proxy cannot meter",
                    );
                }
                tracing::warn!(backend, "upstream sent a content coding the proxy cannot meter");
                return Ok(());
            }
        }
        if stream {
            let meter = StreamMeter::new(ctx.client_usage);
            if meter.filters() {
                // Events are taken out: the length changes.
                response.remove_header("content-length");
            }
            ctx.stream_meter = Some(meter);
            METRICS.streams_in_flight.inc();
            ctx.streaming = true;
        } else {
            ctx.usage_scanner = Some(UsageScanner::default());
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
        let entered = Instant::now();
        let filtered = filter_response_body(body, end_of_stream, ctx);
        ctx.gateway_time.add(entered.elapsed());
        filtered
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let backend = ctx.upstream.as_ref().map(|u| u.backend.system_name.clone());
        let error = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) if *code < 500 => Some(ApiError::unreadable_request(*code)),
            // The client is gone: nobody to answer.
            (ErrorSource::Downstream, _) => None,
            // Headers went out already: end the stream with an error event
            // rather than a silent cut. What streamed so far is billed.
            _ if session.response_written().is_some() => {
                ctx.stream_meter.as_ref().map(|_| ApiError::stream_interrupted())
            }
            _ => Some(upstream_error(e, backend.as_deref().unwrap_or(""))),
        };
        let Some(error) = error else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if let Some(backend) = backend.as_deref().filter(|_| error.status >= 500) {
            METRICS
                .upstream_errors
                .with_label_values(&[backend, error.reason])
                .inc();
            // Only once a replica was picked: an error before is not its.
            if let Some(upstream) = ctx.upstream.as_ref().filter(|_| ctx.attempts > 0) {
                upstream.note_error(ctx.replica, format!("{}: {e}", error.reason));
            }
        }
        let written = if session.response_written().is_none() {
            respond_error(session, ctx, &error).await
        } else {
            ctx.rejected = Some(error.reason);
            let mut event = b"data: ".to_vec();
            event.extend(error.to_json());
            event.extend_from_slice(b"\n\n");
            session.write_response_body(Some(Bytes::from(event)), true).await
        };
        if let Err(write_error) = written {
            tracing::debug!(%write_error, "could not send the error to the client");
        }
        FailToProxy {
            error_code: error.status,
            can_reuse_downstream: false,
        }
    }

    /// The request is done: settle its usage, then count it and log it.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let _leaves = LeavesFlight(std::mem::take(&mut ctx.in_flight));
        let now = OffsetDateTime::now_utc();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if std::mem::take(&mut ctx.streaming) {
            METRICS.streams_in_flight.dec();
        }
        let catalog = ctx.catalog.clone();
        let model = model_label(&catalog, ctx.product, ctx.model.as_deref());
        let usage = self.settle(ctx, status, model, now).await;
        // A refusal before routing (a model of another product) counts
        // under the key's product.
        let product =
            product_name(&catalog, ctx.product).or_else(|| ctx.auth.as_ref().map(|a| a.application.product.as_str()));
        let duration = ctx.started.elapsed();
        count_request(ctx, product.unwrap_or(""), model, status, duration);
        record_genai(ctx, product.unwrap_or(""), model, status, usage, duration);
        if self.state.access_log {
            log_request(session, ctx, product, status, usage, duration, now);
        }
    }
}

/// The `system_name` of the routed product, for metric labels.
fn product_name(catalog: &Option<Arc<ServingCatalog>>, index: Option<usize>) -> Option<&str> {
    let (catalog, index) = catalog.as_ref().zip(index)?;
    Some(catalog.routes.product(index).product.system_name.as_str())
}

/// The model label: the request's model when the routed product serves it,
/// else empty (a client's made-up names must not add series).
fn model_label<'a>(catalog: &'a Option<Arc<ServingCatalog>>, index: Option<usize>, model: Option<&str>) -> &'a str {
    let (Some(catalog), Some(index), Some(model)) = (catalog.as_ref(), index, model) else {
        return "";
    };
    let product = &catalog.routes.product(index).product;
    product
        .models
        .iter()
        .find(|m| m.as_str() == model)
        .map_or("", String::as_str)
}

/// Counts a request out of flight when `logging` ends, after its usage is
/// queued: draining on SIGTERM waits for the count to reach zero.
struct LeavesFlight(bool);

impl Drop for LeavesFlight {
    fn drop(&mut self) {
        if self.0 {
            METRICS.in_flight.dec();
        }
    }
}

/// Decodes, meters and reads the usage of one piece of the response body.
fn filter_response_body(
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut RequestCtx,
) -> Result<Option<Duration>> {
    if let Some(decoder) = ctx.decoder.as_mut() {
        let chunk = body.as_deref().unwrap_or_default();
        match decoder.decode(chunk, end_of_stream) {
            Ok(decoded) => *body = Some(Bytes::from(decoded)),
            Err(detail) => {
                ctx.decoder = None;
                return Error::e_explain(ErrorType::Custom("undecodable_body"), detail);
            }
        }
    }
    if let Some(meter) = ctx.stream_meter.as_mut() {
        let had_content = meter.content_chunks > 0;
        let mut out = match body.as_deref() {
            Some(chunk) => meter.filter(chunk),
            None => None,
        };
        if !had_content && meter.content_chunks > 0 {
            ctx.first_token_after = Some(ctx.started.elapsed());
            METRICS
                .time_to_first_token
                .with_label_values(&[product_name(&ctx.catalog, ctx.product).unwrap_or("")])
                .observe(ctx.started.elapsed().as_secs_f64());
        }
        if end_of_stream && let Some(tail) = meter.finish() {
            let mut filtered = out.take().unwrap_or_default();
            filtered.extend(tail);
            out = Some(filtered);
        }
        if let Some(filtered) = out {
            *body = Some(Bytes::from(filtered));
        }
    } else if let Some(scanner) = ctx.usage_scanner.as_mut() {
        if let Some(chunk) = body {
            scanner.push(chunk);
        }
        if end_of_stream {
            ctx.usage = scanner.usage();
            ctx.usage_scanner = None;
        }
    }
    Ok(None)
}

/// The request's Prometheus series: count, durations, the gateway's own time.
fn count_request(ctx: &RequestCtx, product: &str, model: &str, status: u16, duration: Duration) {
    METRICS
        .requests
        .with_label_values(&[product, model, itoa::Buffer::new().format(status)])
        .inc();
    METRICS
        .request_duration
        .with_label_values(&[product])
        .observe(duration.as_secs_f64());
    if let Some(upstream) = ctx.upstream_headers_after {
        METRICS
            .upstream_duration
            .with_label_values(&[product])
            .observe(upstream.as_secs_f64());
    }
    METRICS.gateway_overhead.with_label_values(&[product]).observe(
        ctx.gateway_time
            .overhead(ctx.started, ctx.upstream_sent_at, ctx.started + duration)
            .as_secs_f64(),
    );
}

/// OpenTelemetry's GenAI histograms of a request a model server answered,
/// and its span when its trace is sampled (refusals included: a trace
/// shows why a request went no further).
fn record_genai(ctx: &RequestCtx, product: &str, model: &str, status: u16, usage: TokenUsage, duration: Duration) {
    let call = GenAiCall {
        operation: ctx.operation,
        provider: ctx.upstream.as_ref().map_or("", |u| u.backend.system_name.as_str()),
        model,
        usage,
        status,
        duration,
        first_token_after: ctx.first_token_after,
    };
    if !ctx.operation.is_empty() && ctx.upstream_sent_at.is_some() {
        genai::record(&call);
    }
    if let Some(trace) = ctx.trace.filter(|trace| trace.sampled) {
        let facts = SpanFacts {
            product,
            application_id: ctx.auth.as_ref().map_or("", |a| a.application.id.as_str()),
            plan: ctx.auth.as_ref().map_or("", |a| a.plan.system_name.as_str()),
            decision: if ctx.admitted {
                "admitted"
            } else {
                ctx.rejected.unwrap_or("refused")
            },
            upstream: ctx.upstream_headers_after,
            request_id: &ctx.request_id,
        };
        let end = crate::record::otlp::unix_nanos(std::time::SystemTime::now());
        let start = end.saturating_sub(duration.as_nanos() as u64);
        genai::queue_span(genai::span_of(trace, &call, &facts, start));
    }
}

/// The request's access-log line.
fn log_request(
    session: &Session,
    ctx: &RequestCtx,
    product: Option<&str>,
    status: u16,
    usage: TokenUsage,
    duration: Duration,
    now: OffsetDateTime,
) {
    let request = session.req_header();
    let token_caller = ctx.auth.as_ref().and_then(|a| a.credential.token());
    AccessLogLine {
        ts: now,
        method: request.method.as_str(),
        path: request.uri.path(),
        status,
        product,
        application_id: ctx.auth.as_ref().map(|a| a.application.id.as_str()),
        application: ctx.auth.as_ref().map(|a| a.application.name.as_str()),
        key: ctx.auth.as_ref().and_then(|a| a.key()).map(|key| key.masked()),
        token_client: token_caller.map(|caller| caller.client_id.as_str()),
        user: token_caller.and_then(|caller| caller.user.as_deref()),
        model: ctx.model.as_deref(),
        backend: ctx.upstream.as_ref().map(|u| u.backend.system_name.as_str()),
        rejected: ctx.rejected,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens,
        tokens_estimated: ctx.tokens_estimated,
        stream: ctx.stream,
        request_bytes: ctx.body.as_ref().map_or(0, Bytes::len),
        duration,
        upstream: ctx.upstream_headers_after,
        client: session.client_addr().and_then(|a| a.as_inet()).copied(),
        request_id: Some(ctx.request_id.as_str()).filter(|id| !id.is_empty()),
    }
    .write();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(request: &RequestHeader, name: &HeaderName) -> Vec<String> {
        request
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn a_header_edit_is_skipped_only_when_nothing_would_change() {
        let mut request = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        request.append_header("Accept-Encoding", "identity").unwrap();
        request.append_header("accept-encoding", "gzip").unwrap();
        request.append_header("Content-Type", "Application/JSON").unwrap();
        request.append_header("content-length", "12").unwrap();
        request.append_header("Authorization", "Bearer sk-client").unwrap();

        // A second value, another spelling of the value, another length: set.
        set_unless_equal(&mut request, header::ACCEPT_ENCODING, "identity").unwrap();
        set_unless_equal(&mut request, header::CONTENT_TYPE, "application/json").unwrap();
        set_unless_equal(&mut request, header::CONTENT_LENGTH, "13").unwrap();
        assert_eq!(values(&request, &header::ACCEPT_ENCODING), ["identity"]);
        assert_eq!(values(&request, &header::CONTENT_TYPE), ["application/json"]);
        assert_eq!(values(&request, &header::CONTENT_LENGTH), ["13"]);
        // Already exactly right: left as it is.
        set_unless_equal(&mut request, header::CONTENT_LENGTH, "13").unwrap();
        assert_eq!(values(&request, &header::CONTENT_LENGTH), ["13"]);
        // Absent: added.
        set_unless_equal(&mut request, X_REQUEST_ID, "req_1").unwrap();
        assert_eq!(values(&request, &X_REQUEST_ID), ["req_1"]);

        // Removal whatever the client's spelling of the name.
        remove_if_present(&mut request, &header::AUTHORIZATION);
        remove_if_present(&mut request, &header::EXPECT);
        assert!(values(&request, &header::AUTHORIZATION).is_empty());
        let mut wire = Vec::new();
        request.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap().to_ascii_lowercase();
        assert!(!wire.contains("authorization") && !wire.contains("gzip"), "{wire}");
    }
}
