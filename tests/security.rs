//! The security suite: every way around metering, limits, approval or
//! admin rights that has been found, tried again as an attacker would,
//! one file per class, against real `maas` processes and a real store
//! (Redis, and the embedded store where the class depends on it).

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "proxy/harness.rs"]
mod harness;

mod security {
    pub mod fixtures;
    pub mod raw_http;

    mod admin_roles;
    mod body_content_type;
    mod error_shapes;
    mod key_location;
    mod metering_truth;
    mod organizations;
    mod plan_approval;
    mod portal_headers;
    mod prompt_bounds;
    mod request_paths;
    mod sign_in_throttling;
    mod sign_up;
    mod sso_claims;
    mod sso_providers;
    mod store_files;
    mod token_budgets;
}
