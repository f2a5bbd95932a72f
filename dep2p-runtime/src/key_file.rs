//! Key files written whole or not at all: the contents go to a temporary file beside the
//! target, created readable by its owner only (mode 0600 on Unix), written and synced to disk,
//! and only then moved into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `contents` to `path`, replacing whatever file is there, permissions included: a
/// reader sees the old file or the new one, never a part.
pub(crate) fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut temp = TempFile::write(path, contents)?;
    fs::rename(&temp.path, path)?;
    temp.moved = true;
    sync_parent(path);
    Ok(())
}

/// Writes `contents` to `path` unless a file already exists there, which fails with
/// [`io::ErrorKind::AlreadyExists`]. Of processes racing to create the same file, exactly one
/// succeeds, and the file appears complete: it is linked into place after it is written.
pub(crate) fn create(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temp = TempFile::write(path, contents)?;
    fs::hard_link(&temp.path, path)?;
    sync_parent(path);
    Ok(())
}

/// A written temporary file, removed when dropped unless it was moved.
struct TempFile {
    path: PathBuf,
    moved: bool,
}

/// Distinguishes the temporary files of one process.
static NEXT: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    /// Creates a new file in `target`'s directory, with a name of its own, and writes and
    /// syncs `contents` to it.
    fn write(target: &Path, contents: &[u8]) -> io::Result<TempFile> {
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
        let dir = target.parent().unwrap_or(Path::new(""));
        let mut attempts = 0;
        let (path, mut file) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let temp = format!(".{}.{}.{n}.tmp", name.to_string_lossy(), std::process::id());
            let path = dir.join(temp);
            match create_private(&path) {
                Ok(file) => break (path, file),
                // Left over by an earlier process that had the same id.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let temp = TempFile { path, moved: false };
        file.write_all(contents)?;
        file.sync_all()?;
        Ok(temp)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.moved {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates a file that must not exist yet, readable and writable by its owner only.
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes a new directory entry durable where the system allows it (best effort: the file's
/// contents are already on disk).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
