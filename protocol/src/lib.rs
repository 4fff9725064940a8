//! The OpenAI-compatible wire protocol as the gateway reads it, with no I/O
//! and no proxy types, so each part is unit-tested and fuzzed alone
//! (`proxy/fuzz` builds on this crate only):
//!
//! - a request: its path's one normal form ([`request_path`]), its body's
//!   facts in one borrowed pass ([`body`]) with what its prompt can cost
//!   ([`prompt`]) and the key of its prompt's start ([`prompt_prefix`]), and
//!   the body sent upstream ([`rewrite`], by byte surgery: [`json_member`]);
//! - a response: the `usage` of JSON answers ([`metering`]), server-sent
//!   event streams parsed ([`sse`]) and metered ([`stream_meter`]);
//! - a model server's load from its `/metrics` ([`model_metrics`]);
//! - an access token read and its claims checked, before any key
//!   ([`access_token`]);
//! - W3C trace context continued and sampled ([`trace_context`]).
//!
//! `maas-proxy` re-exports these where it uses them (`request`, `response`,
//! `upstream`).

pub mod access_token;
pub mod body;
pub mod json_member;
pub mod metering;
pub mod model_metrics;
pub mod prompt;
pub mod prompt_prefix;
pub mod request_path;
pub mod rewrite;
pub mod sse;
pub mod stream_meter;
pub mod trace_context;
