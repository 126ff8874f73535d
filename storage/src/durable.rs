//! Directories that survive a power loss: each new entry's parent is synced.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::Path;

/// Syncs a directory, so the entries made in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, and syncs each new entry's parent so
/// the directories survive a power loss.
pub(crate) fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
        fs::create_dir(dir).or_else(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        sync_dir(parent)
    } else {
        fs::create_dir_all(dir)
    }
}
