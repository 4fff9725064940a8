//! Reading a response as it passes: the `usage` of JSON answers
//! ([`metering`]), server-sent-event streams parsed ([`sse`]) and metered
//! ([`stream_meter`]), and bodies an upstream compressed although asked
//! not to, decoded first ([`decoding`]). None of it knows Pingora.

pub mod decoding;
pub mod metering;
pub mod sse;
pub mod stream_meter;
