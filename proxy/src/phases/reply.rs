//! Responses the proxy writes itself (errors, preflights, the model list).

use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::error::ApiError;
use crate::phases::service::RequestCtx;
use crate::record::metrics::METRICS;

/// Writes a complete response the proxy makes itself.
pub(crate) async fn respond(
    session: &mut Session,
    status: u16,
    body: Bytes,
    headers: &[(&'static str, String)],
) -> Result<()> {
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

pub(crate) async fn respond_error(session: &mut Session, ctx: &mut RequestCtx, error: &ApiError) -> Result<()> {
    ctx.rejected = Some(error.reason);
    METRICS.rejected.with_label_values(&[error.reason]).inc();
    let mut headers = std::mem::take(&mut ctx.extra_headers);
    headers.push(("content-type", "application/json".into()));
    let result = respond(session, error.status, Bytes::from(error.to_json()), &headers).await;
    ctx.extra_headers = headers;
    result
}
