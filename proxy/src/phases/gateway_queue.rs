//! The last stage of admission on a backend with `saturation:`: wait in
//! its gateway queue ([`crate::upstream::queue`]) for a replica with room,
//! or be refused with 429 and `Retry-After`. A request let through carries
//! its replica to `upstream_peer` (picked as it left the queue). A client
//! that goes away while its request waits takes it out of the queue.

use std::time::Duration;

use maas_store::model::{AuthContext, QueuePolicy};
use pingora_proxy::Session;

use crate::error::ApiError;
use crate::phases::request_ctx::RequestCtx;
use crate::record::metrics::METRICS;
use crate::upstream::{Admission, QueueEntry, Refused};

/// Admits the request to its upstream's replicas, waiting in the queue
/// while they are saturated. Nothing to do on a backend without
/// `saturation:` (the replica is picked in `upstream_peer`).
pub(crate) async fn wait_for_room(
    session: &mut Session,
    ctx: &mut RequestCtx,
    auth: &AuthContext,
    product: &str,
    policy: &QueuePolicy,
) -> Result<(), ApiError> {
    let Some(upstream) = ctx.upstream.clone().filter(|u| u.backend.saturation.is_some()) else {
        return Ok(());
    };
    let priority = auth.plan.priority;
    let entry = QueueEntry {
        priority,
        application: auth.application.id.as_str().into(),
        product: product.into(),
        max_queue: Duration::from_millis(policy.max_queue_ms),
        max_waiting: policy.max_waiting,
        body: ctx.body.clone(),
    };
    let entered = std::time::Instant::now();
    let outcome = match upstream.enter(entry) {
        Admission::Granted(granted) => Ok(granted),
        Admission::Queued(queued) => {
            tokio::select! {
                outcome = queued.wait() => outcome,
                () = client_gone(session) => {
                    observe_wait(product, priority, "gone", entered.elapsed());
                    return Err(ApiError::client_gone());
                }
            }
        }
        Admission::Refused(refused) => Err(refused),
    };
    let observe = |outcome: &str, waited: Duration| observe_wait(product, priority, outcome, waited);
    match outcome {
        Ok(granted) => {
            observe("released", granted.waited);
            ctx.replica = granted.replica;
            ctx.at_replica = Some(granted.at_replica);
            Ok(())
        }
        Err(refused) => {
            let outcome = match refused {
                Refused::Full => "full",
                Refused::Displaced => "displaced",
                Refused::TimedOut { .. } => "timeout",
            };
            observe(outcome, entered.elapsed());
            let retry_after = retry_after_secs(policy);
            ctx.extra_headers.push(("retry-after", retry_after.to_string()));
            Err(ApiError::saturated(
                &upstream.backend.system_name,
                priority,
                refused,
                retry_after,
            ))
        }
    }
}

fn observe_wait(product: &str, priority: maas_store::model::Priority, outcome: &str, waited: Duration) {
    METRICS
        .queue_wait
        .with_label_values(&[product, priority.as_str(), outcome])
        .observe(waited.as_secs_f64());
}

/// Resolves when the client closes its connection (its request's body was
/// read already). Bytes of a pipelined next request are kept for it by
/// Pingora; then there is nothing more to watch.
async fn client_gone(session: &mut Session) {
    match session.as_downstream_mut().read_body_or_idle(true).await {
        Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// When a refused request may come back: after another wait as long as
/// the product allows (at least a second; at most the horizon within
/// which the OpenAI SDKs honour `Retry-After`).
pub fn retry_after_secs(policy: &QueuePolicy) -> u64 {
    policy
        .max_queue_ms
        .div_ceil(1000)
        .clamp(1, super::admission::SDK_RETRY_HORIZON_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_follows_the_products_wait() {
        let policy = |max_queue_ms| QueuePolicy {
            max_queue_ms,
            max_waiting: 1,
        };
        assert_eq!(retry_after_secs(&policy(1)), 1);
        assert_eq!(retry_after_secs(&policy(2_500)), 3);
        assert_eq!(retry_after_secs(&policy(600_000)), 60);
    }
}
