//! The embedded store holds key and password hashes, sessions and usage:
//! `maas up` creates its data directory 0700 and its file 0600.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;

#[test]
fn maas_up_keeps_its_store_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state").join("maas");
    let portal = free_port();
    let mut up = Command::new(env!("CARGO_BIN_EXE_maas"))
        .arg("up")
        .env("MAAS_DATA_DIR", &data)
        .env("MAAS_PROXY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("MAAS_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("MAAS_PORTAL_LISTEN", format!("127.0.0.1:{portal}"))
        .env("MAAS_LOG_LEVEL", "warn")
        .env_remove("MAAS_CONFIG")
        .env_remove("MAAS_REDIS_URL")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", portal)).is_err() {
        if let Ok(Some(status)) = up.try_wait() {
            panic!("maas up exited: {status}");
        }
        assert!(Instant::now() < deadline, "maas up did not serve the portal in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let (dir_mode, file_mode) = (mode(&data), mode(&data.join("maas.redb")));
    let _ = up.kill();
    let _ = up.wait();
    assert_eq!(dir_mode, 0o700, "the data directory");
    assert_eq!(file_mode, 0o600, "the store file");
}
