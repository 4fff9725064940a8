//! The store's error type: what went wrong, in words a caller can pass on.

use crate::validate::ValidationErrors;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} `{id}` not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} with {field} `{value}` already exists")]
    AlreadyExists {
        kind: &'static str,
        field: &'static str,
        value: String,
    },
    #[error("invalid: {0}")]
    Invalid(#[from] ValidationErrors),
    /// The change contradicts what is stored (e.g. deleting a plan that
    /// applications use) or lost a race with a concurrent change.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A conditional write found another version than the one it named.
    #[error("{kind} `{id}` changed since it was read; read it again and reapply the change")]
    PreconditionFailed { kind: &'static str, id: String },
    /// The acting user may not do this (a member acting as an owner).
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write whose connection dropped or timed out after it was sent:
    /// the store may or may not have applied it.
    #[error("store unavailable (the write may have been applied): {0}")]
    Uncertain(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    pub(crate) fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound { kind, id: id.into() }
    }

    /// The store could not be reached, or did not answer (whether or not
    /// a write it was sent took effect).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Uncertain(_))
    }

    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::Invalid(ValidationErrors(vec![crate::validate::ValidationError {
            path: path.into(),
            message: message.into(),
        }]))
    }
}
