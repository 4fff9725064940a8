//! The request phase's stages for callers with an access token instead of
//! an API key: the token is verified as soon as it is read (a bad one is a
//! 401 before the body is read), and the caller is admitted to a product
//! once the product is known (on the shared `/v1` endpoint, after the
//! body's `model` named it).

use std::sync::Arc;

use maas_store::model::{AuthContext, AuthMethod, Product, token_plan};

use crate::error::ApiError;
use crate::identity::jwt::TokenError;
use crate::identity::{TokenRefusal, VerifiedToken, looks_like_jwt};
use crate::phases::admission::{Routed, STORE_RETRY_SECS};
use crate::phases::service::{MaasProxy, RequestCtx};
use crate::record::metrics::METRICS;
use crate::request::credentials::bearer;
use crate::state::ServingCatalog;

/// Who authenticated: an API key's context, complete, or a verified
/// token, admitted once its product is known.
pub(crate) enum Caller {
    Key(Arc<AuthContext>),
    Token(VerifiedToken),
}

/// The bearer credential, when it is shaped like a JWT and the request
/// may be for a product that takes access tokens.
pub(crate) fn presented_token<'h>(
    authorization: Option<&'h [u8]>,
    catalog: &ServingCatalog,
    routed: &Routed,
) -> Option<&'h str> {
    let credential = authorization.and_then(bearer).filter(|value| looks_like_jwt(value))?;
    let takes_tokens = match routed.index {
        Some(index) => catalog.routes.product(index).product.accepts(AuthMethod::Oidc),
        None => catalog
            .routes
            .products()
            .iter()
            .any(|route| route.product.accepts(AuthMethod::Oidc)),
    };
    takes_tokens.then_some(credential)
}

/// A product with `auth: [oidc]` takes no API key, and says what it takes.
pub(crate) fn takes_keys(product: &Product) -> Result<(), ApiError> {
    if product.accepts(AuthMethod::ApiKey) {
        Ok(())
    } else {
        Err(ApiError::tokens_only(&product.system_name))
    }
}

impl MaasProxy {
    /// The caller a token names, once its signature and claims verify.
    pub(crate) async fn verify_token(&self, ctx: &mut RequestCtx, token: &str) -> Result<Caller, ApiError> {
        let Some(verifier) = &self.state.tokens else {
            METRICS.access_tokens.with_label_values(&["not_configured"]).inc();
            return Err(ApiError::tokens_not_configured());
        };
        match verifier.verify(token).await {
            Ok(caller) => Ok(Caller::Token(caller)),
            Err(TokenError::KeysUnavailable) => {
                METRICS.access_tokens.with_label_values(&["keys_unavailable"]).inc();
                ctx.extra_headers.push(("retry-after", STORE_RETRY_SECS.to_string()));
                Err(ApiError::token_keys_unavailable())
            }
            Err(error) => {
                METRICS.access_tokens.with_label_values(&[refusal_reason(&error)]).inc();
                // RFC 6750: the challenge says the token, not the request, is at fault.
                ctx.extra_headers.push((
                    "www-authenticate",
                    format!(
                        "Bearer realm=\"maas\", error=\"invalid_token\", error_description=\"{}\"",
                        error.to_string().replace(['"', '\\'], "'")
                    ),
                ));
                Err(ApiError::invalid_token(&error.to_string()))
            }
        }
    }

    /// The context of a verified token's caller on product `index`: the
    /// plan its groups give, its organization's application for the
    /// client, which must be live.
    pub(crate) async fn admit_token(
        &self,
        ctx: &mut RequestCtx,
        catalog: &ServingCatalog,
        index: usize,
        caller: &VerifiedToken,
    ) -> Result<Arc<AuthContext>, ApiError> {
        let route = catalog.routes.product(index);
        if !route.product.accepts(AuthMethod::Oidc) {
            METRICS.access_tokens.with_label_values(&["product_takes_keys"]).inc();
            let mut error =
                ApiError::invalid_token(&format!("product `{}` takes API keys only", route.product.system_name));
            error.status = 403;
            return Err(error);
        }
        let verifier = self.state.tokens.as_ref().ok_or_else(ApiError::tokens_not_configured)?;
        let auth = match verifier.admit(&self.state.store, caller, route).await {
            Ok(auth) => auth,
            Err(TokenRefusal::NotEntitled) => {
                METRICS.access_tokens.with_label_values(&["not_entitled"]).inc();
                return Err(ApiError::not_entitled(&format!(
                    "product `{}`",
                    route.product.system_name
                )));
            }
            Err(TokenRefusal::Store(error)) => {
                METRICS.store_errors.with_label_values(&["token_caller"]).inc();
                tracing::error!(%error, "a token caller's application could not be found or made");
                ctx.extra_headers.push(("retry-after", STORE_RETRY_SECS.to_string()));
                return Err(ApiError::store_unavailable());
            }
        };
        METRICS.access_tokens.with_label_values(&["accepted"]).inc();
        ctx.auth = Some(auth.clone());
        super::admission::check_application_state(&auth)?;
        Ok(auth)
    }

    /// The product of a token caller's request on the shared endpoint: the
    /// one serving its model, or for a model listing the first product
    /// the caller's groups give a plan of.
    pub(crate) fn token_product(
        catalog: &ServingCatalog,
        caller: &VerifiedToken,
        model: Option<&str>,
        is_model_list: bool,
    ) -> Result<usize, ApiError> {
        if is_model_list {
            return catalog
                .routes
                .products()
                .iter()
                .position(|route| {
                    route.product.accepts(AuthMethod::Oidc)
                        && token_plan(&route.product.token_plans, &caller.groups).is_some()
                })
                .ok_or_else(|| ApiError::not_entitled("any product served here"));
        }
        let model = model.ok_or_else(ApiError::model_required)?;
        catalog
            .routes
            .product_for_model(model)
            .ok_or_else(|| ApiError::model_not_found(model))
    }
}

/// The `outcome` label of a refused token.
fn refusal_reason(error: &TokenError) -> &'static str {
    match error {
        TokenError::Malformed(_) | TokenError::CriticalHeader => "malformed",
        TokenError::Algorithm(_) => "algorithm",
        TokenError::UnknownKey => "unknown_key",
        TokenError::BadSignature => "bad_signature",
        TokenError::Issuer(_) => "issuer",
        TokenError::Audience => "audience",
        TokenError::Expired | TokenError::NotYetValid => "expired",
        TokenError::MissingClaim(_) | TokenError::BadClaim(..) => "claims",
        TokenError::KeysUnavailable => "keys_unavailable",
    }
}
