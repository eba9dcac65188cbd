//! The pid file of `preflight serve --pid-file FILE`: how an operator's tooling (and a
//! preflight policy's `target.process.pid_file`) finds the running service.
//!
//! Written atomically (temporary file in the same directory, fsync, rename), so a reader
//! never sees an empty or half-written pid. Removed on a graceful exit — only while it still
//! holds this process's pid, so a stopping instance never deletes the file a newer one wrote.
//! A kill -9 leaves it behind (the stale pid is how operators see what died); the next start
//! overwrites it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Why the pid file could not be written; the cause is the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("creating {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating a temporary file in {}", dir.display())]
    Temp {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("writing the pid file {}", path.display())]
    Persist {
        path: PathBuf,
        #[source]
        source: tempfile::PersistError,
    },
}

/// A pid file written by this process; removed on drop if it still holds our pid.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes `pid` to `path` atomically, creating the parent directory.
    pub fn write(path: &Path, pid: u32) -> Result<PidFile, PidFileError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| PidFileError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".pid-")
            .tempfile_in(dir)
            .map_err(|source| PidFileError::Temp {
                dir: dir.to_path_buf(),
                source,
            })?;
        writeln!(tmp, "{pid}")?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|source| PidFileError::Persist {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(self.pid);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/core.pid");
        let f = PidFile::write(&path, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
        // Nothing but the pid file is left in the directory (no temporary files).
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["core.pid"]);
        drop(f);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_file_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core.pid");
        std::fs::write(&path, "999999\n").unwrap();
        let f = PidFile::write(&path, 7).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7\n");
        drop(f);
        assert!(!path.exists());
    }

    /// Regression guard: an old instance stopping must not delete the pid file of the new
    /// instance that overwrote it.
    #[test]
    fn a_newer_instances_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core.pid");
        let old = PidFile::write(&path, 100).unwrap();
        let new = PidFile::write(&path, 200).unwrap();
        drop(old);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "200\n");
        drop(new);
        assert!(!path.exists());
    }
}
