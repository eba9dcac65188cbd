//! Snapshots of the graph summary and detector state: written atomically (temp file, fsync,
//! rename, fsync of the directory) so a crash leaves either the old or the new snapshot,
//! never a torn one; restored at start.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::detectors::{Detection, DetectorState};
use super::graph::Layers;

/// What the last graph build produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GraphSummary {
    pub nodes: usize,
    pub edges: usize,
    pub layers: Layers,
    pub window_ms: i64,
    pub built_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotFile {
    pub generation: u64,
    pub saved_at_ms: i64,
    pub builds: u64,
    pub graph: Option<GraphSummary>,
    pub detectors: Vec<DetectorState>,
    pub detections: Vec<Detection>,
}

pub const FILE_NAME: &str = "graph.snapshot.json";

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Writes `snap` atomically; returns the path and size.
pub fn write(dir: &Path, snap: &SnapshotFile) -> std::io::Result<(PathBuf, u64)> {
    std::fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    let dest = path(dir);
    std::fs::rename(&tmp, &dest)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok((dest, bytes.len() as u64))
}

/// Reads the snapshot in `dir`, if any.
pub fn read(dir: &Path) -> std::io::Result<Option<SnapshotFile>> {
    match std::fs::read(path(dir)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let snap = SnapshotFile {
            generation: 3,
            saved_at_ms: 1,
            builds: 2,
            graph: Some(GraphSummary::default()),
            detectors: vec![],
            detections: vec![],
        };
        write(dir.path(), &snap).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(snap));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert_eq!(read(&dir.path().join("none")).unwrap(), None);
    }
}
