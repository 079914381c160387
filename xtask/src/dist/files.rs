//! Small file-system helpers for dist: private temporary directories,
//! listing a tree, and `SHA256SUMS`.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::util;

/// A directory only this user can enter, removed with its contents on drop.
/// It lives in the system temporary directory: GnuPG homes must have short
/// paths (their sockets' names are limited to about 100 bytes).
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    pub fn new(prefix: &str) -> anyhow::Result<PrivateDir> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let name = format!(
                "{prefix}-{}-{}-{nanos:08x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = base.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
        bail!(
            "cannot find a free name for a temporary directory in {}",
            base.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes `contents` to a new file only its owner can read.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Every file under `dir`, as paths relative to it, sorted.
pub fn list(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot stat {}", path.display()))?;
            if kind.is_dir() {
                walk(root, &path, found)?;
            } else {
                let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                found.push(relative);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found)?;
    found.sort();
    Ok(found)
}

/// Writes `sums` with the SHA-256 of every other file under `dir` (as
/// `sha256sum -c` reads it from `dir`), in a stable order.
pub fn write_sha256sums(dir: &Path, sums: &Path) -> anyhow::Result<()> {
    let files: Vec<PathBuf> = list(dir)?
        .into_iter()
        .filter(|f| {
            let name = f.to_string_lossy();
            name != "SHA256SUMS" && name != "SHA256SUMS.asc"
        })
        .collect();
    let mut cmd = Command::new("sha256sum");
    cmd.current_dir(dir).arg("--").args(&files);
    let text = util::output(&mut cmd)?;
    std::fs::write(sums, text).with_context(|| format!("cannot write {}", sums.display()))?;
    println!("{} files in {}", files.len(), sums.display());
    Ok(())
}

/// Copies the tree `from` to `to` (which must not exist), every file dated
/// `mtime`: tools that only clamp times to `SOURCE_DATE_EPOCH` would
/// otherwise keep the checkout's times of files older than that.
pub fn copy_tree_dated(from: &Path, to: &Path, mtime: SystemTime) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for rel in list(from)? {
        let (src, dst) = (from.join(&rel), to.join(&rel));
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        copy_dated(&src, &dst, mtime)?;
    }
    Ok(())
}

/// Copies one file and dates the copy `mtime`.
pub fn copy_dated(from: &Path, to: &Path, mtime: SystemTime) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::File::options()
        .write(true)
        .open(to)
        .and_then(|f| f.set_modified(mtime))
        .with_context(|| format!("cannot set the time of {}", to.display()))
}

/// Copies the files of the working tree at `root` that git would commit
/// (tracked and untracked-but-not-ignored) to `dest`. Returns how many.
pub fn copy_source_tree(root: &Path, dest: &Path) -> anyhow::Result<usize> {
    let listing = util::output(Command::new("git").current_dir(root).args([
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
    ]))
    .context("cannot list the source files")?;
    let mut count = 0;
    for name in listing.split('\0').filter(|n| !n.is_empty()) {
        let from = root.join(name);
        // A file deleted in the working tree but still in the index.
        if !from.is_file() {
            continue;
        }
        let to = dest.join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        count += 1;
    }
    Ok(count)
}
