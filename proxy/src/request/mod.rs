//! Reading a request, in the order the gateway does: the path's one
//! normal form ([`request_path`]), its id ([`request_id`]), CORS
//! ([`cors`]), the key ([`credentials`]), the product ([`routing`],
//! [`models_api`]), mapping rules ([`mapping`]), the body's facts in one
//! borrowed pass ([`body`], [`prompt`], [`tokenizer`]) and the body sent
//! upstream ([`rewrite`], by byte surgery: [`json_member`]). None of it
//! knows Pingora; the wire-protocol parts live in `maas-protocol` (which
//! the fuzz targets build on alone) and are re-exported here.

pub use maas_protocol::{body, json_member, prompt, request_path, rewrite};

pub mod cors;
pub mod credentials;
pub mod mapping;
pub mod models_api;
pub mod request_id;
pub mod routing;
pub mod tokenizer;
