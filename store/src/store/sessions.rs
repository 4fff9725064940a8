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

/// How session `id` is named where its user sees it: the SHA-256 the
/// store keys it by, never the id itself.
pub fn session_handle(id: &str) -> String {
    hex(&Sha256::digest(id.as_bytes()))
}

fn session_key(id: &str) -> String {
    format!("session:{}", session_handle(id))
}

fn user_sessions_key(user_id: &str) -> String {
    format!("user-sessions:{user_id}")
}

/// Sessions a user's list keeps; the oldest go first.
pub const MAX_LISTED_SESSIONS: usize = 50;

/// A session as its user sees it listed: where and when it was opened.
/// Named by its handle (the SHA-256 the store keys it by), never its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    pub handle: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The browser's `User-Agent`, cut to 200 characters.
    #[serde(default)]
    pub agent: String,
}

impl SessionEntry {
    /// Whether this entry lists session `id`.
    pub fn is_session(&self, id: &str) -> bool {
        self.handle == session_handle(id)
    }
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

    /// Lists session `id` of `user`, opened now from `ip` with browser
    /// `agent`, for `ttl`, among their sessions ([`Store::user_sessions`]).
    /// The list is best effort (two sign-ins at the same instant may keep
    /// one): ending every other session goes by the user's epoch instead.
    pub async fn list_session(
        &self,
        user: &User,
        id: &str,
        ip: Option<String>,
        agent: &str,
        ttl: Duration,
    ) -> StoreResult<()> {
        let now = self.now();
        let mut entries = self.listed_sessions(&user.id).await?;
        entries.retain(|e| e.expires_at > now);
        entries.push(SessionEntry {
            handle: session_handle(id),
            created_at: now,
            expires_at: now + ttl,
            ip,
            agent: agent.chars().filter(|c| !c.is_control()).take(200).collect(),
        });
        let excess = entries.len().saturating_sub(MAX_LISTED_SESSIONS);
        entries.drain(..excess);
        self.write_session_list(&user.id, &entries).await
    }

    async fn listed_sessions(&self, user_id: &str) -> StoreResult<Vec<SessionEntry>> {
        let key = user_sessions_key(user_id);
        Ok(match self.backend.get_ephemeral(&key).await? {
            Some(bytes) => decode(&key, &bytes)?,
            None => Vec::new(),
        })
    }

    async fn write_session_list(&self, user_id: &str, entries: &[SessionEntry]) -> StoreResult<()> {
        let key = user_sessions_key(user_id);
        let now = self.now();
        let Some(last) = entries.iter().map(|e| e.expires_at).max().filter(|at| *at > now) else {
            return self.backend.delete_ephemeral(&key).await;
        };
        let secs = u64::try_from((last - now).whole_seconds().max(1)).unwrap_or(1);
        self.backend.put_ephemeral(&key, encode(&entries)?, secs).await
    }

    /// `user`'s sessions still open, oldest first: those ended (signed
    /// out, expired, or of an earlier epoch) drop out of the list.
    pub async fn user_sessions(&self, user: &User) -> StoreResult<Vec<SessionEntry>> {
        let listed = self.listed_sessions(&user.id).await?;
        let mut open = Vec::with_capacity(listed.len());
        for entry in &listed {
            let key = format!("session:{}", entry.handle);
            let Some(bytes) = self.backend.get_ephemeral(&key).await? else {
                continue;
            };
            let record: SessionRecord = decode(&key, &bytes)?;
            if record.is_current_for(user) {
                open.push(entry.clone());
            }
        }
        if open.len() != listed.len() {
            self.write_session_list(&user.id, &open).await?;
        }
        Ok(open)
    }

    /// Ends `user`'s session listed as `handle`; `false` when they have
    /// no such session open.
    pub async fn end_user_session(&self, user: &User, handle: &str) -> StoreResult<bool> {
        let open = self.user_sessions(user).await?;
        let Some(entry) = open.iter().find(|e| e.handle == handle) else {
            return Ok(false);
        };
        self.backend
            .delete_ephemeral(&format!("session:{}", entry.handle))
            .await?;
        let rest: Vec<SessionEntry> = open.into_iter().filter(|e| e.handle != handle).collect();
        self.write_session_list(&user.id, &rest).await?;
        Ok(true)
    }
}
