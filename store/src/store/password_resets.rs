//! Passwords changed by their owner, and reset by an admin's one-time
//! link: the secret (`pwr-…`) is shown once to the admin, stored as its
//! SHA-256, works until it expires, and a newer link for the same user
//! replaces it. Either way the user's other sessions end.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::{Store, decode, encode};
use crate::backend::{Condition, WriteBatch};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::ids::{hex, random_bytes};
use crate::model::{KeyHash, User};

/// How a reset link's secret begins.
pub const PASSWORD_RESET_PREFIX: &str = "pwr-";
/// The longest a reset link may work.
pub const MAX_PASSWORD_RESET_TTL: Duration = Duration::days(7);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PasswordReset {
    user_id: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

fn reset_record(hash: &KeyHash) -> String {
    format!("pwreset:{hash}")
}

fn reset_of_user(user_id: &str) -> String {
    format!("user-pwreset:{user_id}")
}

impl Store {
    /// Changes `user`'s password hash and ends every session of theirs
    /// (the caller opens a new one for the session that asked). Audited
    /// as `change_password`; the hash is scrubbed from the entry.
    pub async fn change_password(&self, user: &User, password_hash: String) -> StoreResult<User> {
        self.change_ending_sessions(user, "change_password", |after| {
            after.password_hash = Some(password_hash);
        })
        .await
    }

    /// A one-time link's secret that lets whoever holds it set user
    /// `user_id`'s password within `ttl`; replaces any earlier link of
    /// theirs. Only for users who sign in with a password (not through
    /// the company sign-in alone).
    pub async fn issue_password_reset(&self, user_id: &str, ttl: Duration) -> StoreResult<String> {
        let user = self
            .get_user(user_id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", user_id))?;
        if user.sso.is_some() && user.password_hash.is_none() {
            return Err(StoreError::Conflict(
                "this user signs in through the company sign-in: their password is the provider's".into(),
            ));
        }
        if ttl <= Duration::ZERO || ttl > MAX_PASSWORD_RESET_TTL {
            return Err(StoreError::invalid("ttl", "a reset link works from a minute to 7 days"));
        }
        let secret = format!("{PASSWORD_RESET_PREFIX}{}", hex(&random_bytes::<24>()));
        let hash = KeyHash::of(&secret);
        let reset = PasswordReset {
            user_id: user.id.clone(),
            expires_at: self.now() + ttl,
        };
        let mut batch = WriteBatch::default();
        if let Some(previous) = self.get_json::<KeyHash>(&reset_of_user(&user.id)).await? {
            batch.delete(reset_record(&previous));
        }
        batch
            .require(Condition::Exists(format!("user:{}", user.id)))
            .put(reset_record(&hash), encode(&reset)?)
            .put(reset_of_user(&user.id), encode(&hash)?);
        let audit = vec![self.audit_entry::<()>("issue_password_reset", "user", &user.id, None, None)];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::not_found("user", user_id))?;
        Ok(secret)
    }

    /// The user whose open reset link `secret` is.
    pub async fn password_reset_user(&self, secret: &str) -> StoreResult<Option<User>> {
        Ok(self.open_reset(secret).await?.map(|(_, user)| user))
    }

    async fn open_reset(&self, secret: &str) -> StoreResult<Option<(PasswordReset, User)>> {
        if !secret.starts_with(PASSWORD_RESET_PREFIX) || secret.len() > 200 {
            return Ok(None);
        }
        let record = reset_record(&KeyHash::of(secret));
        let Some(bytes) = self.backend.get(&record).await? else {
            return Ok(None);
        };
        let reset: PasswordReset = decode(&record, &bytes)?;
        if reset.expires_at <= self.now() {
            return Ok(None);
        }
        Ok(self.get_user(&reset.user_id).await?.map(|user| (reset, user)))
    }

    /// Sets the password of reset link `secret`'s user, uses the link up
    /// and ends their sessions, in one write. `NotFound` when the link
    /// was used, replaced or has expired.
    pub async fn reset_password(&self, secret: &str, password_hash: String) -> StoreResult<User> {
        let gone = || StoreError::not_found("password reset", "(from the link)");
        let Some((_, user)) = self.open_reset(secret).await? else {
            return Err(gone());
        };
        let hash = KeyHash::of(secret);
        let mut after = user.clone();
        after.password_hash = Some(password_hash);
        after.session_epoch = user.session_epoch.wrapping_add(1);
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Exists(reset_record(&hash)))
            .require(Condition::Equals(format!("user:{}", user.id), encode(&user)?))
            .delete(reset_record(&hash))
            .delete(reset_of_user(&user.id))
            .put(format!("user:{}", user.id), encode(&after)?)
            .publish(Change::User { id: user.id.clone() });
        let audit = vec![self.audit_entry::<()>("reset_password", "user", &user.id, None, None)];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok(after),
            Err(failed) if failed.0 == 0 => Err(gone()),
            Err(_) => Err(StoreError::Conflict(format!(
                "user `{}` changed meanwhile; try again",
                user.id
            ))),
        }
    }
}
