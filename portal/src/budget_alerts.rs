//! Budget alerts leave here: every `interval` the control plane compares
//! spend with budgets ([`Store::scan_budget_alerts`]: each threshold once
//! per period, whichever process scans) and POSTs the alerts due to the
//! webhook, signed, retrying with backoff. Every `maas portal` (and
//! `maas up`) runs this loop; the store decides which one sends an alert.
//!
//! A call is `POST {webhook_url}` with a JSON body (the alert, without its
//! delivery state, and `"type": "budget.alert"`) and the header
//! `X-MaaS-Signature: t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{body}"
//! keyed by the secret}`. A 2xx answer delivers it; anything else, or no
//! answer in 10 s, is retried after 1, 2, 4 … seconds (at most an hour),
//! `max_attempts` times in all.

use std::time::Duration;

use maas_store::{BudgetAlert, Store};
use sha2::{Digest, Sha256};

/// Where alerts go.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// `None`: alerts are raised and shown, not sent.
    pub webhook: Option<Webhook>,
    pub interval: Duration,
    pub max_attempts: u32,
}

/// Scans and delivers until the process ends.
pub async fn run(store: Store, options: AlertOptions) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "budget alerts: no HTTP client; alerts are not sent");
            return;
        }
    };
    let mut ticks = tokio::time::interval(options.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = tick(&store, &client, &options).await {
            tracing::warn!(%error, "budget alerts: the store did not answer; trying again next round");
        }
    }
}

/// One round: raise what spend has reached, then send what is due.
pub async fn tick(store: &Store, client: &reqwest::Client, options: &AlertOptions) -> maas_store::StoreResult<()> {
    for alert in store.scan_budget_alerts(options.webhook.is_some()).await? {
        tracing::info!(
            alert = %alert.id,
            scope = %alert.scope,
            id = %alert.scope_id,
            threshold = alert.threshold_percent,
            "budget alert raised"
        );
    }
    let Some(webhook) = &options.webhook else {
        return Ok(());
    };
    for due in store.due_alert_deliveries(100).await? {
        let Some(claimed) = store.claim_alert_delivery(&due).await? else {
            continue;
        };
        let outcome = send(client, webhook, &claimed).await;
        if let Err(error) = &outcome {
            tracing::warn!(alert = %claimed.id, attempt = claimed.delivery.attempts, %error, "budget alert not delivered");
        }
        store
            .finish_alert_delivery(&claimed, outcome, options.max_attempts)
            .await?;
    }
    Ok(())
}

/// The body of an alert's call: the alert without its delivery state.
pub fn payload(alert: &BudgetAlert) -> Vec<u8> {
    let mut value = serde_json::to_value(alert).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("delivery");
        object.insert("type".into(), "budget.alert".into());
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

async fn send(client: &reqwest::Client, webhook: &Webhook, alert: &BudgetAlert) -> Result<(), String> {
    let body = payload(alert);
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let response = client
        .post(&webhook.url)
        .header("content-type", "application/json")
        .header("x-maas-alert-id", &alert.id)
        .header(
            "x-maas-signature",
            signature(webhook.secret.as_bytes(), timestamp, &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|error| format!("no answer: {error}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// `t={timestamp},v1={hex HMAC-SHA256(secret, "{timestamp}.{body}")}`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(body.len() + 21);
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let mac = hmac_sha256(secret, &signed);
    format!("t={timestamp},v1={}", maas_store::ids::hex(&mac))
}

/// HMAC (RFC 2104) over SHA-256, block size 64.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test cases 2 and 6 (a key longer than a block).
    #[test]
    fn hmac_matches_rfc_4231() {
        let hex = |mac: [u8; 32]| maas_store::ids::hex(&mac);
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(
            signature(b"Jefe", 1, b"x"),
            format!("t=1,v1={}", hex(hmac_sha256(b"Jefe", b"1.x")))
        );
    }
}
