//! The output folder as the exporter's spool: every completed file (`.sf`, `.parquet`,
//! `alerts-*.jsonl`; never a `.partial` one) waits there until the store confirmed it. A
//! restarted agent finds what was not uploaded simply by listing the folder again. The spool
//! is bounded by bytes: past the bound the oldest files are dropped, never the newest.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

/// The kinds of files the exporter ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Sysflow,
    Parquet,
    Alerts,
}

impl FileKind {
    /// The `format` label of the upload metrics.
    pub const fn label(self) -> &'static str {
        match self {
            FileKind::Sysflow => "sysflow",
            FileKind::Parquet => "parquet",
            FileKind::Alerts => "alerts",
        }
    }

    pub const ALL: [FileKind; 3] = [FileKind::Sysflow, FileKind::Parquet, FileKind::Alerts];

    /// The kind of a completed file's name, if it is one the exporter ships.
    pub fn of(name: &str) -> Option<FileKind> {
        if name.starts_with('.') {
            None
        } else if name.ends_with(".sf") {
            Some(FileKind::Sysflow)
        } else if name.ends_with(".parquet") {
            Some(FileKind::Parquet)
        } else if name.starts_with("alerts-") && name.ends_with(".jsonl") {
            Some(FileKind::Alerts)
        } else {
            None
        }
    }

    pub const fn content_type(self) -> &'static str {
        match self {
            FileKind::Sysflow => "application/avro",
            FileKind::Parquet => "application/vnd.apache.parquet",
            FileKind::Alerts => "application/jsonl",
        }
    }
}

/// A completed file waiting for upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub path: PathBuf,
    pub name: String,
    pub kind: FileKind,
    pub bytes: u64,
    /// When the file was started, seconds since the epoch: from its name
    /// (`<node>-<secs>-<seq>.sf`, `alerts-<secs>-<seq>.jsonl`), else its modification time.
    pub started: i64,
    /// When it was completed (its modification time).
    pub completed: SystemTime,
}

/// The start second in one of our file names: the second-last `-` field of the stem.
fn started_from_name(name: &str) -> Option<i64> {
    let (stem, _extension) = name.rsplit_once('.')?;
    let mut fields = stem.rsplit('-');
    let seq = fields.next()?;
    let secs = fields.next()?;
    (seq.bytes().all(|b| b.is_ascii_digit()) && secs.len() >= 9)
        .then(|| secs.parse().ok())
        .flatten()
}

/// Every completed file of `dir` the exporter ships, oldest first (start second, then name:
/// our names sort in the order they were written).
pub fn scan(dir: &Path) -> io::Result<Vec<Waiting>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(kind) = FileKind::of(&name) else {
            continue;
        };
        // A file removed between listing and here is simply not waiting any more.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let completed = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let started = started_from_name(&name).unwrap_or_else(|| {
            completed
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        out.push(Waiting {
            path: entry.path(),
            name,
            kind,
            bytes: meta.len(),
            started,
            completed,
        });
    }
    out.sort_by(|a, b| (a.started, &a.name).cmp(&(b.started, &b.name)));
    Ok(out)
}

/// The files to drop so the spool holds at most `max_bytes`: the oldest first, never the
/// newest (it is the one most worth keeping, and dropping it would not make room for more).
pub fn over_limit(waiting: &[Waiting], max_bytes: u64) -> usize {
    let mut total: u64 = waiting.iter().map(|w| w.bytes).sum();
    let mut drop = 0;
    while total > max_bytes && drop + 1 < waiting.len() {
        total -= waiting[drop].bytes;
        drop += 1;
    }
    drop
}

/// Where uploaded files are kept when `export.keep_local_secs` asks for it.
pub const UPLOADED_DIR: &str = "uploaded";

/// An uploaded file leaves the spool: removed, or moved into `uploaded/` to be kept a while.
pub fn release(file: &Waiting, keep: bool) -> io::Result<()> {
    if keep {
        let dir = file
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join(UPLOADED_DIR);
        fs::create_dir_all(&dir)?;
        fs::rename(&file.path, dir.join(&file.name))
    } else {
        fs::remove_file(&file.path)
    }
}

/// Removes kept files older than `keep`; returns how many.
pub fn prune_uploaded(dir: &Path, keep: Duration, now: SystemTime) -> io::Result<usize> {
    let dir = dir.join(UPLOADED_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > keep);
        if old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str, bytes: usize) {
        fs::write(dir.join(name), vec![b'x'; bytes]).unwrap();
    }

    #[test]
    fn only_completed_files_are_waiting_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "node-1700000100-000.sf", 10);
        touch(d, "node-1700000000-001.sf", 20);
        touch(d, "node-1700000000-000.sf", 30);
        touch(d, "node-1700000000-000.parquet", 5);
        touch(d, "alerts-1700000050-000.jsonl", 7);
        touch(d, "node-1700000200-000.sf.partial", 99);
        touch(d, "alerts-1700000200-001.jsonl.partial", 99);
        touch(d, "node-1700000200-000.parquet.partial", 99);
        touch(d, ".nri-sysflow-write-test-1", 0);
        touch(d, "notes.txt", 1);
        fs::create_dir(d.join("uploaded")).unwrap();
        touch(&d.join("uploaded"), "node-1600000000-000.sf", 1);
        let names: Vec<(String, FileKind, u64, i64)> = scan(d)
            .unwrap()
            .into_iter()
            .map(|w| (w.name, w.kind, w.bytes, w.started))
            .collect();
        assert_eq!(
            names,
            vec![
                (
                    "node-1700000000-000.parquet".into(),
                    FileKind::Parquet,
                    5,
                    1_700_000_000
                ),
                (
                    "node-1700000000-000.sf".into(),
                    FileKind::Sysflow,
                    30,
                    1_700_000_000
                ),
                (
                    "node-1700000000-001.sf".into(),
                    FileKind::Sysflow,
                    20,
                    1_700_000_000
                ),
                (
                    "alerts-1700000050-000.jsonl".into(),
                    FileKind::Alerts,
                    7,
                    1_700_000_050
                ),
                (
                    "node-1700000100-000.sf".into(),
                    FileKind::Sysflow,
                    10,
                    1_700_000_100
                ),
            ]
        );
    }

    #[test]
    fn the_bound_drops_the_oldest_and_never_the_newest() {
        let file = |bytes| Waiting {
            path: PathBuf::new(),
            name: String::new(),
            kind: FileKind::Sysflow,
            bytes,
            started: 0,
            completed: SystemTime::UNIX_EPOCH,
        };
        let spool = [file(100), file(100), file(100), file(500)];
        assert_eq!(over_limit(&spool, 800), 0);
        assert_eq!(over_limit(&spool, 799), 1);
        assert_eq!(over_limit(&spool, 600), 2);
        // Even a newest file larger than the bound stays.
        assert_eq!(over_limit(&spool, 10), 3);
        assert_eq!(over_limit(&[], 0), 0);
    }

    #[test]
    fn released_files_are_removed_or_kept_then_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "n-1700000000-000.sf", 3);
        touch(d, "n-1700000001-000.sf", 3);
        let spool = scan(d).unwrap();
        release(&spool[0], false).unwrap();
        release(&spool[1], true).unwrap();
        assert!(scan(d).unwrap().is_empty());
        assert!(d.join("uploaded/n-1700000001-000.sf").exists());
        let now = SystemTime::now();
        assert_eq!(prune_uploaded(d, Duration::from_secs(60), now).unwrap(), 0);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            prune_uploaded(d, Duration::from_secs(60), later).unwrap(),
            1
        );
        assert!(!d.join("uploaded/n-1700000001-000.sf").exists());
    }
}
