//! Kubernetes probes: `/healthz` (liveness: the process answers) and
//! `/readyz` (readiness: the store answers a read; if not, it names the
//! store and its error).

use axum::extract::State;
use axum::http::StatusCode;

use crate::PortalState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<PortalState>) -> (StatusCode, String) {
    match state.inner.store.list_backends().await {
        Ok(_) => (StatusCode::OK, "ready\n".to_owned()),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the store ({}) does not answer: {error}\n",
                state.inner.store.backend_kind()
            ),
        ),
    }
}
