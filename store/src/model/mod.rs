//! The domain model shared by the control plane and the data plane.

pub mod admission;
pub mod catalog;
pub mod key;
pub mod money;
pub mod pattern;
pub mod tenancy;

pub use admission::{Priority, QueuePolicy, Saturation};
pub use catalog::*;
pub use key::{AdminScope, AdminToken, DEFAULT_KEY_PREFIX, KeyHash, KeySecret, has_valid_checksum, valid_key_prefix};
pub use money::Money;
pub use pattern::PathPattern;
pub use tenancy::*;
