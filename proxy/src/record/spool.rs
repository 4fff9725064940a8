//! The durable usage spool: usage batches the store did not take, appended
//! to a file so a proxy that dies during an outage loses none of them.
//!
//! Each proxy process appends to its own file, `usage-<writer>.jsonl` in
//! the spool directory, one JSON line per batch (its writer id, sequence
//! number and records), and holds an exclusive lock on it while it runs.
//! The file is emptied once every batch in it reached the store. A proxy
//! that starts takes over the files no running process holds, and resends
//! their batches under their own writer ids and numbers: the store counts
//! each batch once ([`maas_store::Store::record_usage_once`]), so a batch
//! that was sent before the crash is not counted twice.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use maas_store::UsageRecord;
use serde::{Deserialize, Serialize};

use crate::record::metrics::METRICS;

/// A batch as the spool holds it: usage counted once by its writer id and
/// number, or, with `hold`, a settle whose outcome was unknown, resent to
/// apply only if that hold is still there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpooledBatch {
    pub writer: String,
    pub seq: u64,
    pub records: Vec<UsageRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

/// How the spool writes (`store.spool_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    /// Past this many bytes batches stay in memory only (a loud log, and
    /// `maas_usage_spool_full_total`).
    pub max_bytes: u64,
    /// fsync after every append (else the OS writes it back when it will:
    /// a crash of the machine, not of the process, may lose the tail).
    pub fsync: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the usage spool {path} is full ({bytes} of {max} bytes)")]
    Full { path: String, bytes: u64, max: u64 },
    #[error("the usage spool {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

pub struct Spool {
    settings: SpoolSettings,
    path: PathBuf,
    /// Open, and exclusively locked, for the life of the process.
    file: File,
    bytes: u64,
}

/// Batches left by processes that stopped before the store took them,
/// and the files that held them (removed once the batches are written).
#[derive(Debug, Default)]
pub struct Leftovers {
    pub batches: Vec<SpooledBatch>,
    pub files: Vec<(PathBuf, File)>,
}

impl Spool {
    /// Opens this process's spool file and takes over the files no running
    /// process holds.
    pub fn open(settings: SpoolSettings, writer: &str) -> Result<(Spool, Leftovers), SpoolError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SpoolError::Io { path, source }
        };
        // Private, as the embedded store's directory: whoever may write here
        // could add usage to any application.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&settings.dir)
            .map_err(io(&settings.dir))?;
        let leftovers = take_over(&settings.dir)?;
        let path = settings.dir.join(format!("usage-{writer}.jsonl"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        file.try_lock().map_err(|e| SpoolError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        METRICS.usage_spool_bytes.set(0);
        Ok((
            Spool {
                settings,
                path,
                file,
                bytes: 0,
            },
            leftovers,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one batch (and syncs it, if so configured).
    pub fn append(&mut self, batch: &SpooledBatch) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(batch).map_err(|e| self.io(std::io::Error::other(e)))?;
        line.push(b'\n');
        let bytes = self.bytes.saturating_add(line.len() as u64);
        if bytes > self.settings.max_bytes {
            METRICS.usage_spool_full.inc();
            return Err(SpoolError::Full {
                path: self.path.display().to_string(),
                bytes: self.bytes,
                max: self.settings.max_bytes,
            });
        }
        self.file.write_all(&line).map_err(|e| self.io(e))?;
        if self.settings.fsync {
            self.file.sync_data().map_err(|e| self.io(e))?;
        }
        self.bytes = bytes;
        METRICS.usage_spool_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Every batch appended reached the store: the file starts over.
    pub fn clear(&mut self) -> Result<(), SpoolError> {
        if self.bytes == 0 {
            return Ok(());
        }
        self.file.set_len(0).map_err(|e| self.io(e))?;
        if self.settings.fsync {
            self.file.sync_all().map_err(|e| self.io(e))?;
        }
        self.bytes = 0;
        METRICS.usage_spool_bytes.set(0);
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

/// The batches of every spool file in `dir` that no process holds, in
/// each file's order; the files stay locked until the caller drops them.
fn take_over(dir: &Path) -> Result<Leftovers, SpoolError> {
    let mut leftovers = Leftovers::default();
    let entries = std::fs::read_dir(dir).map_err(|source| SpoolError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_spool = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("usage-") && n.ends_with(".jsonl"));
        if !is_spool {
            continue;
        }
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // A running process's own spool.
        }
        for (number, line) in BufReader::new(&file).lines().enumerate() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<SpooledBatch>(&line) {
                Ok(batch) => leftovers.batches.push(batch),
                // The last line of a process that died while writing it.
                Err(error) => tracing::warn!(
                    path = %path.display(),
                    line = number + 1,
                    %error,
                    "skipping an unreadable spooled batch"
                ),
            }
        }
        leftovers.files.push((path, file));
    }
    Ok(leftovers)
}

impl Leftovers {
    /// Every batch was written: the files go.
    pub fn remove_files(&mut self) {
        for (path, _lock) in self.files.drain(..) {
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "removing a replayed usage spool");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn settings(dir: &Path, max_bytes: u64) -> SpoolSettings {
        SpoolSettings {
            dir: dir.to_owned(),
            max_bytes,
            fsync: true,
        }
    }

    fn batch(writer: &str, seq: u64, value: u64) -> SpooledBatch {
        SpooledBatch {
            writer: writer.into(),
            seq,
            records: vec![UsageRecord::new(
                "app1",
                "total_tokens",
                value,
                OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            )],
            hold: None,
        }
    }

    #[test]
    fn a_new_process_takes_over_what_a_dead_one_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let (mut first, leftovers) = Spool::open(settings(dir.path(), 1 << 20), "aaa").unwrap();
        assert!(leftovers.batches.is_empty());
        first.append(&batch("aaa", 1, 5)).unwrap();
        first.append(&batch("aaa", 2, 7)).unwrap();
        // A torn last line, as a crash mid-write leaves it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(first.path())
            .unwrap()
            .write_all(b"{\"writer\":\"aaa\",\"se")
            .unwrap();
        let (_other, held) = Spool::open(settings(dir.path(), 1 << 20), "bbb").unwrap();
        assert!(held.batches.is_empty(), "a running process's spool is not taken");
        drop(first);
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("usage-aaa.jsonl")), 0o600);
        let (_third, mut leftovers) = Spool::open(settings(dir.path(), 1 << 20), "ccc").unwrap();
        assert_eq!(leftovers.batches, vec![batch("aaa", 1, 5), batch("aaa", 2, 7)]);
        leftovers.remove_files();
        assert!(!dir.path().join("usage-aaa.jsonl").exists());
    }

    #[test]
    fn a_full_spool_refuses_and_a_cleared_one_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_vec(&batch("aaa", 1, 5)).unwrap().len() as u64 + 1;
        let (mut spool, _) = Spool::open(settings(&dir.path().join("spool"), line * 3 / 2), "aaa").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("spool"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "a directory only the proxy may write to");
        spool.append(&batch("aaa", 1, 5)).unwrap();
        assert!(matches!(
            spool.append(&batch("aaa", 2, 5)),
            Err(SpoolError::Full { .. })
        ));
        spool.clear().unwrap();
        assert_eq!(std::fs::metadata(spool.path()).unwrap().len(), 0);
        spool.append(&batch("aaa", 2, 5)).unwrap();
    }
}
