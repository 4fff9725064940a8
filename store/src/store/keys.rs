//! API keys: issued once in clear, stored as SHA-256, resolved per request.

use time::{Duration, OffsetDateTime};

use super::applications::stage_key_delete;
use super::{Store, decode, encode, now_ms};
use crate::backend::{Condition, Link, WriteBatch};
use crate::changes::Change;
use crate::error::{StoreError, StoreResult};
use crate::ids::new_id;
use crate::model::{ApiKey, AuthContext, Budget, Credential, KeyHash, KeySecret};

#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub label: String,
    pub expires_at: Option<OffsetDateTime>,
}

/// A new key: the secret exists only here, shown to its owner once.
#[derive(Debug)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: KeySecret,
}

impl Store {
    pub async fn create_key(&self, application_id: &str, new: NewKey) -> StoreResult<IssuedKey> {
        self.issue_key(application_id, new, None, Vec::new()).await
    }

    /// A new key of `application_id`; a rotation passes on the old key's
    /// spend `lineage` and `budgets`.
    async fn issue_key(
        &self,
        application_id: &str,
        new: NewKey,
        lineage: Option<String>,
        budgets: Vec<Budget>,
    ) -> StoreResult<IssuedKey> {
        if new.label.chars().count() > 200 || new.label.chars().any(char::is_control) {
            return Err(StoreError::invalid(
                "label",
                "at most 200 characters without control characters",
            ));
        }
        let now = self.now();
        if new.expires_at.is_some_and(|at| at <= now) {
            return Err(StoreError::invalid("expires_at", "must be in the future"));
        }
        let secret = KeySecret::generate(&self.key_prefix);
        let key = ApiKey {
            id: new_id("key", now_ms(now)),
            application_id: application_id.to_owned(),
            hash: secret.hash(),
            display_prefix: secret.display_prefix(),
            last4: secret.last4(),
            label: new.label,
            lineage,
            budgets,
            created_at: now,
            expires_at: new.expires_at,
            revoked_at: None,
        };
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Exists(format!("app:{application_id}")))
            .require(Condition::Absent(format!("key:{}", key.hash)))
            .put(format!("key:{}", key.hash), encode(&key)?)
            .put(format!("key-id:{}", key.id), encode(&key.hash)?)
            .add_member(format!("app-keys:{application_id}"), key.id.clone())
            .publish(Change::Key {
                id: key.id.clone(),
                hash: key.hash,
            });
        let audit = vec![self.audit_entry("create", "key", &key.id, None, Some(&key))];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok(IssuedKey { key, secret }),
            Err(failed) if failed.0 == 0 => Err(StoreError::not_found("application", application_id)),
            Err(_) => Err(StoreError::Conflict("key collision; try again".into())),
        }
    }

    pub async fn get_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        match self.get_json::<KeyHash>(&format!("key-id:{id}")).await? {
            Some(hash) => self.get_json(&format!("key:{hash}")).await,
            None => Ok(None),
        }
    }

    /// Every key of an application (revoked and expired ones included).
    pub async fn application_keys(&self, application_id: &str) -> StoreResult<Vec<ApiKey>> {
        let ids = self.all_members(&format!("app-keys:{application_id}")).await?;
        let index: Vec<String> = ids.iter().map(|id| format!("key-id:{id}")).collect();
        let hashes: Vec<KeyHash> = self.get_many_json(&index).await?.into_iter().flatten().collect();
        let keys: Vec<String> = hashes.iter().map(|h| format!("key:{h}")).collect();
        Ok(self.get_many_json(&keys).await?.into_iter().flatten().collect())
    }

    pub(super) async fn change_key(
        &self,
        id: &str,
        action: &str,
        edit: impl FnOnce(&mut ApiKey) -> StoreResult<()>,
    ) -> StoreResult<ApiKey> {
        let before = self
            .get_key(id)
            .await?
            .ok_or_else(|| StoreError::not_found("key", id))?;
        let mut after = before.clone();
        edit(&mut after)?;
        let record = format!("key:{}", before.hash);
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(record.clone(), encode(&before)?))
            .put(record, encode(&after)?)
            .publish(Change::Key {
                id: id.to_owned(),
                hash: before.hash,
            });
        let audit = vec![self.audit_entry(action, "key", id, Some(&before), Some(&after))];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict(format!("key `{id}` changed meanwhile; try again")))?;
        Ok(after)
    }

    /// Refuses the key from now on; it stays listed as revoked.
    pub async fn revoke_key(&self, id: &str) -> StoreResult<ApiKey> {
        let now = self.now();
        self.change_key(id, "revoke", |key| {
            key.revoked_at.get_or_insert(now);
            Ok(())
        })
        .await
    }

    pub async fn set_key_expiry(&self, id: &str, expires_at: Option<OffsetDateTime>) -> StoreResult<ApiKey> {
        self.change_key(id, "update", |key| {
            key.expires_at = expires_at;
            Ok(())
        })
        .await
    }

    /// Issues a new key for the same application; the old one keeps working
    /// for `grace`, then expires.
    pub async fn rotate_key(&self, id: &str, grace: Duration) -> StoreResult<IssuedKey> {
        let old = self
            .get_key(id)
            .await?
            .ok_or_else(|| StoreError::not_found("key", id))?;
        if !old.is_usable_at(self.now()) {
            return Err(StoreError::Conflict(format!("key `{id}` is revoked or expired")));
        }
        let issued = self
            .issue_key(
                &old.application_id,
                NewKey {
                    label: old.label.clone(),
                    expires_at: None,
                },
                Some(old.spend_lineage().to_owned()),
                old.budgets.clone(),
            )
            .await?;
        if !issued.key.budgets.is_empty() {
            // The old key is indexed until it goes; the chain alerts once.
            self.index_budgeted(format!("key:{}", issued.key.id)).await?;
        }
        let ends = self.now() + grace;
        self.change_key(id, "rotate", |key| {
            key.expires_at = Some(key.expires_at.map_or(ends, |at| at.min(ends)));
            Ok(())
        })
        .await?;
        Ok(issued)
    }

    /// Deletes a key record entirely (revocation keeps it listed).
    pub async fn delete_key(&self, id: &str) -> StoreResult<()> {
        let key = self
            .get_key(id)
            .await?
            .ok_or_else(|| StoreError::not_found("key", id))?;
        let mut batch = WriteBatch::default();
        batch.require(Condition::Exists(format!("key:{}", key.hash)));
        stage_key_delete(&mut batch, &key);
        let audit = vec![self.audit_entry("delete", "key", id, Some(&key), None)];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::not_found("key", id))
    }

    /// What the proxy needs for a key: the key, its application, account
    /// and plan. `None` for unknown, revoked and expired keys. Applications
    /// that are not live are returned: the caller says why it refuses them.
    pub async fn lookup_key(&self, hash: &KeyHash) -> StoreResult<Option<AuthContext>> {
        const LINKS: [Link; 3] = [
            Link {
                from: 0,
                template: "app:{application_id}",
            },
            Link {
                from: 1,
                template: "account:{account_id}",
            },
            Link {
                from: 1,
                template: "plan:{product}/{plan}",
            },
        ];
        let key_record = format!("key:{hash}");
        let records = self.backend.get_linked(&key_record, &LINKS).await?;
        let [Some(key), Some(application), Some(account), Some(plan)] = <[_; 4]>::try_from(records)
            .map_err(|_| StoreError::Corrupt("a linked read returned the wrong number of records".into()))?
        else {
            // Unknown key, or an application deleted in the same instant.
            return Ok(None);
        };
        let key: ApiKey = decode(&key_record, &key)?;
        if !key.is_usable_at(self.now()) {
            return Ok(None);
        }
        Ok(Some(AuthContext {
            application: decode(&format!("app:{}", key.application_id), &application)?,
            account: decode("account", &account)?,
            plan: decode("plan", &plan)?,
            credential: Credential::Key(key),
        }))
    }
}
