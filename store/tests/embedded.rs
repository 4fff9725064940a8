//! The conformance suite against the embedded (redb) backend.

use std::sync::Arc;
use std::time::Duration;

use maas_store::backend::embedded::EmbeddedBackend;
use maas_store::conformance::Fixture;
use maas_store::{Store, StoreError, StoreOptions};

struct EmbeddedFixture {
    dir: tempfile::TempDir,
}

impl EmbeddedFixture {
    fn new() -> Self {
        EmbeddedFixture {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

impl Fixture for EmbeddedFixture {
    async fn open(&self, options: StoreOptions) -> Store {
        // A store dropped just before may still be closing its file in a
        // background task: give it a moment instead of failing the reopen.
        for _ in 0..100 {
            match EmbeddedBackend::open(self.dir.path(), options.clock.clone()) {
                Ok(backend) => return Store::with_backend(Arc::new(backend), options),
                Err(StoreError::Unavailable(reason)) if reason.contains("already open") => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot open the embedded store: {e}"),
            }
        }
        panic!("the embedded store stayed open after its Store was dropped");
    }

    async fn cleanup(&self) {}
}

maas_store::conformance_suite!(EmbeddedFixture::new());

#[tokio::test]
async fn a_second_process_cannot_open_the_same_file() {
    let fixture = EmbeddedFixture::new();
    let _first = fixture.open(StoreOptions::default()).await;
    match EmbeddedBackend::open(fixture.dir.path(), Arc::new(maas_store::SystemClock)) {
        Err(StoreError::Unavailable(reason)) => assert!(reason.contains("use Redis"), "{reason}"),
        Ok(_) => panic!("a second open of the same file must fail"),
        Err(other) => panic!("unexpected error: {other}"),
    }
}
