//! Reading a whole request body before the peer is chosen, within
//! Pingora's rules (see `read_body`).

use bytes::{Bytes, BytesMut};
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::Session;

use crate::error::ApiError;
use crate::phases::admission::header_str;

/// Pingora's retry buffer: request bodies are replayed from our own copy,
/// handed over when at most this much is left to read.
const RETRY_BUFFER_BYTES: u64 = 64 * 1024;

/// Reads the whole request body (up to `max` bytes). Pingora replays a
/// body to the upstream only from its 64 KiB retry buffer, so retry
/// buffering is switched on once at most that much is left: the buffer
/// then holds the tail, Pingora hands it to `request_body_filter`, and
/// that filter sends our full copy instead.
pub(crate) async fn read_body(session: &mut Session, max: u64) -> Result<Result<Bytes, ApiError>> {
    let declared: Option<u64> = header_str(session, http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
    let expects_continue =
        header_str(session, http::header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
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
        let read = match session.read_request_body().await {
            Ok(read) => read,
            Err(error) => return framing_error(error),
        };
        match read {
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

/// A body that could not be read: broken framing is the client's mistake
/// (400, not Pingora's 502); a timeout or a hang-up is the client leaving.
fn framing_error(mut error: Box<Error>) -> Result<Result<Bytes, ApiError>> {
    match error.etype() {
        ErrorType::Custom(kind @ ("InvalidChunk" | "InvalidTrailerEnd")) => {
            let detail = if *kind == "InvalidChunk" {
                "a chunk of the chunked encoding is malformed"
            } else {
                "the chunked encoding's trailer is malformed"
            };
            Ok(Err(ApiError::malformed_body(detail)))
        }
        ErrorType::InvalidHTTPHeader => Ok(Err(ApiError::malformed_body("its framing is invalid"))),
        _ => {
            error.as_down();
            Err(error)
        }
    }
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
