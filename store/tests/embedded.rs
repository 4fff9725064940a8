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

/// Key and password hashes, sessions and usage are the owner's alone: a
/// new data directory is 0700 and the store file 0600, and a file left
/// readable by an older version is tightened at the next open.
#[tokio::test]
async fn the_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data").join("maas");
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    {
        let backend = EmbeddedBackend::open(&dir, Arc::new(maas_store::SystemClock)).unwrap();
        let store = Store::with_backend(Arc::new(backend), StoreOptions::default());
        store.flush().await.unwrap();
    }
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("maas.redb")), 0o600);
    std::fs::set_permissions(dir.join("maas.redb"), std::fs::Permissions::from_mode(0o644)).unwrap();
    for _ in 0..100 {
        match EmbeddedBackend::open(&dir, Arc::new(maas_store::SystemClock)) {
            Ok(_) => break,
            Err(StoreError::Unavailable(reason)) if reason.contains("already open") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(mode(&dir.join("maas.redb")), 0o600);
}
