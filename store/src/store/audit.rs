//! The audit log: who changed what, when, from where, before and after.
//! Entries are written in the same atomic batch as the change they record.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::{Store, now_ms};
use crate::error::StoreResult;
use crate::ids::new_id;

/// The author of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Actor {
    /// `system`, `cli`, `admin_token`, `user`.
    pub kind: String,
    /// Token id, user id or command name.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl Actor {
    pub fn system() -> Actor {
        Actor {
            kind: "system".into(),
            id: "maas".into(),
            ip: None,
        }
    }

    pub fn new(kind: &str, id: &str, ip: Option<String>) -> Actor {
        Actor {
            kind: kind.into(),
            id: id.into(),
            ip,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: Actor,
    /// `create`, `update`, `delete`, `promote`, `rollback`, `revoke`, …
    pub action: String,
    /// `backend`, `product`, `plan`, `account`, `user`, `application`, `key`, …
    pub entity: String,
    pub entity_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// Fields never copied into the audit log.
const SECRET_FIELDS: [&str; 3] = ["password_hash", "hash", "secret"];

fn redacted<T: Serialize>(value: Option<&T>) -> Option<Value> {
    fn scrub(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for field in SECRET_FIELDS {
                    map.remove(field);
                }
                map.values_mut().for_each(scrub);
            }
            Value::Array(items) => items.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(value?).ok()?;
    scrub(&mut value);
    Some(value)
}

/// Filters for [`Store::audit_log`]; newest entries first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub entity: Option<String>,
    pub entity_id: Option<String>,
    pub actor_id: Option<String>,
    /// Entries older than this entry id (the previous page's last id).
    pub before: Option<String>,
    /// Entries at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Entries before this instant.
    pub until: Option<OffsetDateTime>,
    pub limit: usize,
}

impl Store {
    pub(super) fn audit_entry<T: Serialize>(
        &self,
        action: &str,
        entity: &str,
        entity_id: &str,
        before: Option<&T>,
        after: Option<&T>,
    ) -> AuditEntry {
        let at = self.now();
        AuditEntry {
            id: new_id("aud", now_ms(at)),
            at,
            actor: self.actor.clone(),
            action: action.into(),
            entity: entity.into(),
            entity_id: entity_id.into(),
            before: redacted(before),
            after: redacted(after),
        }
    }

    /// Audit entries matching `query`, newest first.
    pub async fn audit_log(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let limit = query.limit.clamp(1, 1000);
        let mut out = Vec::new();
        let mut cursor = query.before.clone();
        loop {
            let ids = self.backend.members("audit", cursor.as_deref(), limit, true).await?;
            let Some(last) = ids.last() else { return Ok(out) };
            cursor = Some(last.clone());
            let keys: Vec<String> = ids.iter().map(|id| format!("audit:{id}")).collect();
            let exhausted = ids.len() < limit;
            for entry in self.get_many_json::<AuditEntry>(&keys).await?.into_iter().flatten() {
                if query.since.is_some_and(|since| entry.at < since) {
                    // Newest first: everything after this is older still.
                    return Ok(out);
                }
                let wanted = query.until.is_none_or(|until| entry.at < until)
                    && query.entity.as_ref().is_none_or(|e| *e == entry.entity)
                    && query.entity_id.as_ref().is_none_or(|e| *e == entry.entity_id)
                    && query.actor_id.as_ref().is_none_or(|a| *a == entry.actor.id);
                if wanted {
                    out.push(entry);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if exhausted {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_at_any_depth() {
        let value = serde_json::json!({"hash": "h", "a": {"password_hash": "p", "b": [{"secret": "s", "keep": 1}]}});
        let scrubbed = redacted(Some(&value)).unwrap();
        assert_eq!(scrubbed, serde_json::json!({"a": {"b": [{"keep": 1}]}}));
    }
}
