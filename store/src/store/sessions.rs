//! Portal sessions, shared by every portal replica through the store.
//! Stored under the SHA-256 of the session id, so a copy of the store does
//! not hand out live sessions.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::{Store, decode, encode};
use crate::error::{StoreError, StoreResult};
use crate::ids::hex;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Whatever else the portal keeps (CSRF token, OIDC state, flash messages).
    #[serde(default)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

fn session_key(id: &str) -> String {
    format!("session:{}", hex(&Sha256::digest(id.as_bytes())))
}

impl Store {
    /// Stores (or replaces) a session that lives `ttl` from now.
    pub async fn put_session(&self, id: &str, session: &SessionRecord, ttl: Duration) -> StoreResult<()> {
        let secs = u64::try_from(ttl.whole_seconds())
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| StoreError::invalid("ttl", "a session lives at least one second"))?;
        self.backend
            .put_ephemeral(&session_key(id), encode(session)?, secs)
            .await
    }

    pub async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let key = session_key(id);
        self.backend
            .get_ephemeral(&key)
            .await?
            .map(|bytes| decode(&key, &bytes))
            .transpose()
    }

    pub async fn delete_session(&self, id: &str) -> StoreResult<()> {
        self.backend.delete_ephemeral(&session_key(id)).await
    }
}
