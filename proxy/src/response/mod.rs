//! Reading a response as it passes: the `usage` of JSON answers
//! ([`metering`]), server-sent-event streams parsed ([`sse`]) and metered
//! ([`stream_meter`]), and bodies an upstream compressed although asked
//! not to, decoded first ([`decoding`]). None of it knows Pingora; all
//! but [`decoding`] live in `maas-protocol`, re-exported here.

pub use maas_protocol::{metering, sse, stream_meter};

pub mod decoding;
