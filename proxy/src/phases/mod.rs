//! Where Pingora calls in: the `ProxyHttp` dispatcher ([`service`]), the
//! request phase it runs before anything goes upstream ([`admission`], with
//! [`request_body`] reading the body, [`gateway_queue`] holding requests
//! for a saturated backend, [`token_auth`] taking access tokens instead of
//! keys and [`reply`] writing the proxy's own answers), what one request
//! carries between phases ([`request_ctx`]),
//! and Pingora's own refusals written as OpenAI errors ([`edge`]). The
//! decisions these phases take live in the Pingora-free folders beside
//! this one.

mod admission;
pub mod edge;
mod gateway_queue;
mod reply;
mod request_body;
pub mod request_ctx;
pub mod service;
mod token_auth;
