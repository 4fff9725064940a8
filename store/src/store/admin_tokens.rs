//! Admin API tokens made through the API: issued once in clear, stored as
//! SHA-256 under the hash (for lookups) with an id index (for listing and
//! revocation).

use super::{Store, decode, encode, now_ms};
use crate::backend::{Condition, WriteBatch};
use crate::error::{StoreError, StoreResult};
use crate::ids::new_id;
use crate::model::{AdminScope, AdminToken, KeyHash, KeySecret};

/// Prefix of admin token secrets, so they are told apart from API keys.
pub const ADMIN_TOKEN_PREFIX: &str = "maas-admin-";

impl Store {
    /// A new admin token; its secret is returned here only.
    pub async fn create_admin_token(&self, name: &str, scope: AdminScope) -> StoreResult<(AdminToken, KeySecret)> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(StoreError::invalid(
                "name",
                "1-100 characters without control characters",
            ));
        }
        let now = self.now();
        let secret = KeySecret::generate(ADMIN_TOKEN_PREFIX);
        let token = AdminToken {
            id: new_id("adm", now_ms(now)),
            name: name.to_owned(),
            scope,
            hash: secret.hash(),
            last4: secret.last4(),
            created_at: now,
        };
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Absent(format!("admin-token:{}", token.hash)))
            .put(format!("admin-token:{}", token.hash), encode(&token)?)
            .put(format!("admin-token-id:{}", token.id), encode(&token.hash)?)
            .add_member("admin-tokens", token.id.clone());
        let audit = vec![self.audit_entry("create", "admin_token", &token.id, None, Some(&token))];
        match self.commit(batch, audit).await? {
            Ok(()) => Ok((token, secret)),
            Err(_) => Err(StoreError::Conflict("token collision; try again".into())),
        }
    }

    /// The token a secret's hash belongs to.
    pub async fn lookup_admin_token(&self, hash: &KeyHash) -> StoreResult<Option<AdminToken>> {
        self.get_json(&format!("admin-token:{hash}")).await
    }

    /// Every admin token made through the API, oldest first.
    pub async fn list_admin_tokens(&self) -> StoreResult<Vec<AdminToken>> {
        let ids = self.all_members("admin-tokens").await?;
        let keys: Vec<String> = ids.iter().map(|id| format!("admin-token-id:{id}")).collect();
        let hashes: Vec<KeyHash> = self.get_many_json(&keys).await?.into_iter().flatten().collect();
        let records: Vec<String> = hashes.iter().map(|h| format!("admin-token:{h}")).collect();
        Ok(self.get_many_json(&records).await?.into_iter().flatten().collect())
    }

    /// Revokes (deletes) an admin token: refused from the next request on.
    pub async fn delete_admin_token(&self, id: &str) -> StoreResult<()> {
        let raw = self
            .backend
            .get(&format!("admin-token-id:{id}"))
            .await?
            .ok_or_else(|| StoreError::not_found("admin token", id))?;
        let hash: KeyHash = decode(&format!("admin-token-id:{id}"), &raw)?;
        let before: Option<AdminToken> = self.get_json(&format!("admin-token:{hash}")).await?;
        let mut batch = WriteBatch::default();
        batch
            .require(Condition::Equals(format!("admin-token-id:{id}"), raw))
            .delete(format!("admin-token:{hash}"))
            .delete(format!("admin-token-id:{id}"))
            .remove_member("admin-tokens", id);
        let audit = vec![self.audit_entry("delete", "admin_token", id, before.as_ref(), None)];
        self.commit(batch, audit)
            .await?
            .map_err(|_| StoreError::Conflict(format!("admin token `{id}` changed meanwhile; try again")))
    }
}
