//! Alert files: one JSON line per alert (sf-processor's encoding) in `alerts-<secs>-<seq>.jsonl`
//! beside the SysFlow files, written as `.jsonl.partial` and renamed when rotated or finished,
//! like the `.sf` files. Only whole lines reach the file, so a crash leaves a readable file
//! (`recover_partials` completes its name at the next start). A failing write is counted by the
//! caller and the file is reopened at the next alert.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const PARTIAL_SUFFIX: &str = ".jsonl.partial";

struct Open {
    file: io::BufWriter<fs::File>,
    partial: PathBuf,
    done: PathBuf,
    opened: Instant,
}

pub struct AlertFiles {
    dir: PathBuf,
    rotate_every: Duration,
    current: Option<Open>,
    seq: u32,
    pub files_completed: u64,
}

impl AlertFiles {
    pub fn new(dir: &Path, rotate_every: Duration) -> AlertFiles {
        AlertFiles {
            dir: dir.to_path_buf(),
            rotate_every,
            current: None,
            seq: 0,
            files_completed: 0,
        }
    }

    /// Appends one line (without its newline); opens a file first if none is open.
    pub fn write(&mut self, line: &str, now: Instant) -> io::Result<()> {
        if self.current.is_none() {
            self.current = Some(self.open(now)?);
        }
        let Some(open) = self.current.as_mut() else {
            return Ok(());
        };
        let result = open
            .file
            .write_all(line.as_bytes())
            .and_then(|()| open.file.write_all(b"\n"))
            // Whole lines only: a line is on disk (in the page cache) before the next one.
            .and_then(|()| open.file.flush());
        if result.is_err() {
            // Start afresh at the next alert (the file keeps its `.partial` name).
            self.current = None;
        }
        result
    }

    fn open(&mut self, now: Instant) -> io::Result<Open> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.seq = (self.seq + 1) % 1000;
        let stem = format!("alerts-{secs:010}-{:03}", self.seq);
        let partial = self.dir.join(format!("{stem}{PARTIAL_SUFFIX}"));
        let done = self.dir.join(format!("{stem}.jsonl"));
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)?;
        Ok(Open {
            file: io::BufWriter::new(file),
            partial,
            done,
            opened: now,
        })
    }

    /// Completes the open file once it is `rotate_every` old.
    pub fn rotate_if_due(&mut self, now: Instant) -> io::Result<Option<PathBuf>> {
        match &self.current {
            Some(open) if now.duration_since(open.opened) >= self.rotate_every => self.finish(),
            _ => Ok(None),
        }
    }

    /// Completes the open file, if any: its final name.
    pub fn finish(&mut self) -> io::Result<Option<PathBuf>> {
        let Some(mut open) = self.current.take() else {
            return Ok(None);
        };
        open.file.flush()?;
        fs::rename(&open.partial, &open.done)?;
        self.files_completed += 1;
        Ok(Some(open.done))
    }
}

/// Completes the names of alert files a previous run left as `.partial`, cutting an
/// incomplete last line. Returns the completed paths.
pub fn recover_partials(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut recovered = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(PARTIAL_SUFFIX))
            .filter(|s| s.starts_with("alerts-"))
        else {
            continue;
        };
        let mut text = fs::read(&path)?;
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole == 0 {
            fs::remove_file(&path)?;
            continue;
        }
        if whole < text.len() {
            text.truncate(whole);
            fs::write(&path, &text)?;
        }
        let target = dir.join(format!("{stem}.jsonl"));
        fs::rename(&path, &target)?;
        recovered.push(target);
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn lines_go_to_a_partial_file_renamed_when_due_and_a_crash_leaves_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = AlertFiles::new(dir.path(), Duration::from_secs(60));
        let t0 = Instant::now();
        files.write("{\"a\":1}", t0).unwrap();
        files.write("{\"a\":2}", t0).unwrap();
        let open = names(dir.path());
        assert_eq!(open.len(), 1);
        assert!(open[0].starts_with("alerts-") && open[0].ends_with(".jsonl.partial"));
        assert_eq!(
            files.rotate_if_due(t0 + Duration::from_secs(59)).unwrap(),
            None
        );
        let done = files
            .rotate_if_due(t0 + Duration::from_secs(60))
            .unwrap()
            .unwrap();
        assert_eq!(fs::read_to_string(&done).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        // A crash mid-line: the next start keeps the whole lines only.
        let partial = dir.path().join("alerts-0000000001-001.jsonl.partial");
        fs::write(&partial, "{\"b\":1}\n{\"b\":").unwrap();
        let recovered = recover_partials(dir.path()).unwrap();
        assert_eq!(recovered, [dir.path().join("alerts-0000000001-001.jsonl")]);
        assert_eq!(fs::read_to_string(&recovered[0]).unwrap(), "{\"b\":1}\n");
    }
}
