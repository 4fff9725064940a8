//! Portal sessions, shared by every portal replica through the store.
//! Stored under the SHA-256 of the session id, so a copy of the store does
//! not hand out live sessions.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::{Store, decode, encode};
use crate::error::{StoreError, StoreResult};
use crate::ids::hex;
use crate::model::User;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Whatever else the portal keeps (CSRF token, OIDC state, flash messages).
    #[serde(default)]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The user's [`User::session_epoch`] when the session opened; a
    /// session of another epoch was ended.
    #[serde(default)]
    pub user_epoch: u64,
}

impl SessionRecord {
    /// A session of `user`, opened now, keeping `data`.
    pub fn signed_in(user: &User, data: serde_json::Map<String, serde_json::Value>) -> SessionRecord {
        SessionRecord {
            user_id: Some(user.id.clone()),
            created_at: OffsetDateTime::now_utc(),
            data,
            user_epoch: user.session_epoch,
        }
    }

    /// Whether this session of `user` is still theirs: opened at their
    /// current epoch ([`Store::end_sessions`] ends the others).
    pub fn is_current_for(&self, user: &User) -> bool {
        self.user_id.as_deref() == Some(user.id.as_str()) && self.user_epoch == user.session_epoch
    }
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

    /// Session `id` and its user, while the session is current for the
    /// user ([`SessionRecord::is_current_for`]); whether the user may sign
    /// in (their state, their role) is the caller's to check.
    pub async fn session_with_user(&self, id: &str) -> StoreResult<Option<(SessionRecord, User)>> {
        let Some(record) = self.get_session(id).await? else {
            return Ok(None);
        };
        let Some(user_id) = record.user_id.as_deref() else {
            return Ok(None);
        };
        let Some(user) = self.get_user(user_id).await? else {
            return Ok(None);
        };
        Ok(record.is_current_for(&user).then_some((record, user)))
    }

    pub async fn delete_session(&self, id: &str) -> StoreResult<()> {
        self.backend.delete_ephemeral(&session_key(id)).await
    }
}
