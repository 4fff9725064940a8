//! The change feed: what changed, so caches on every replica can drop it.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::model::KeyHash;

/// One change, published after the write that made it committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Backends, products (drafts) or plans changed; `revision` is the
    /// catalog's new revision.
    Catalog {
        revision: u64,
    },
    /// A product version was promoted to, or rolled back in, an environment.
    Release {
        product: String,
        environment: crate::Environment,
        version: u64,
    },
    Account {
        id: String,
    },
    User {
        id: String,
    },
    Application {
        id: String,
    },
    Key {
        id: String,
        hash: KeyHash,
    },
    /// Events may have been missed (reconnect, slow subscriber): drop every
    /// cached entry.
    Resync,
}

impl Change {
    /// The event's kind, as it is tagged on the wire (`key`, `catalog`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Catalog { .. } => "catalog",
            Change::Release { .. } => "release",
            Change::Account { .. } => "account",
            Change::User { .. } => "user",
            Change::Application { .. } => "application",
            Change::Key { .. } => "key",
            Change::Resync => "resync",
        }
    }
}

/// A subscription to the change feed.
pub struct ChangeSubscription {
    pub(crate) receiver: broadcast::Receiver<Change>,
}

impl ChangeSubscription {
    /// The next change; `None` once the store is closed. A subscriber that
    /// fell behind gets [`Change::Resync`] instead of the events it missed.
    pub async fn recv(&mut self) -> Option<Change> {
        match self.receiver.recv().await {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// A change if one is waiting, without blocking.
    pub fn try_recv(&mut self) -> Option<Change> {
        match self.receiver.try_recv() {
            Ok(change) => Some(change),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Change::Resync),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_the_wire_tag() {
        let changes = [
            Change::Catalog { revision: 3 },
            Change::Release {
                product: "granite".into(),
                environment: crate::Environment::Staging,
                version: 2,
            },
            Change::Account { id: "a".into() },
            Change::User { id: "u".into() },
            Change::Application { id: "p".into() },
            Change::Key {
                id: "k".into(),
                hash: KeyHash::of("sk-test"),
            },
            Change::Resync,
        ];
        for change in changes {
            let wire = serde_json::to_value(&change).unwrap();
            assert_eq!(wire["kind"], change.kind(), "{wire}");
        }
    }
}
