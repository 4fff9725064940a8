//! The MaaS data model and the store every other part reads and writes.
//!
//! - [`model`]: the domain types (backends, products, plans, accounts,
//!   users, applications, API keys) and [`validate`] for them;
//! - [`Store`]: the one API over them, with [`backend::StoreBackend`]
//!   implemented twice: [`backend::redis`] for production (many replicas)
//!   and [`backend::embedded`] (one file, one process) for small installs
//!   and demos. One conformance suite ([`conformance`], feature
//!   `conformance`) runs against both;
//! - [`period`]: the calendar buckets usage is counted in;
//! - [`changes`]: the change feed caches are invalidated by;
//! - [`document`]: the declarative catalog file, and `apply`/`export`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), maas_store::StoreError> {
//! use maas_store::{Store, StoreLocation, StoreOptions};
//! let store = Store::open(
//!     &StoreLocation::Embedded { data_dir: "./data".into() },
//!     StoreOptions::default(),
//! ).await?;
//! let catalog = store.catalog().await?;
//! println!("{} products", catalog.products.len());
//! # Ok(()) }
//! ```

pub mod backend;
pub mod changes;
pub mod clock;
pub mod document;
pub mod error;
pub mod ids;
pub mod limits;
pub mod model;
pub mod period;
mod store;
pub mod validate;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use changes::{Change, ChangeSubscription};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{StoreError, StoreResult};
pub use store::*;
