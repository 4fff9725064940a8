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
