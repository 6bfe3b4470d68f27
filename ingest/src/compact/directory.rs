//! Compaction of a recording in a directory: the partition directory is swapped whole.
//!
//! A partition directory `operations/session_id=S/date=D/` is compacted as a whole:
//!
//! 1. its small files are merged (sorted, as every file is) into new files in a staging directory
//!    `DATA/compact/<id>/`, outside `operations/` so no reader's glob ever matches it, next to hard
//!    links of the files that are not being merged;
//! 2. the staging directory and the partition directory are swapped with one
//!    `renameat2(RENAME_EXCHANGE)`: a directory listing sees the old set of files or the new one;
//! 3. a file the ingest service wrote into the old directory meanwhile is moved across, and the
//!    old directory (now the staging path) is deleted.
//!
//! A manifest (`DATA/compact/<id>.manifest`: the partition and the merged inputs) is made durable
//! before the swap, so that the next run can finish an interrupted one: after the swap, every file
//! in the staging directory that is not an input goes back to the partition.
//!
//! A query that listed the old files before the swap and opens one after it finds it gone; the
//! query layer re-plans such a query. Two compactions never run at once (a lock file).

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use kubestep_schemas::schema::columns;

use super::{CompactError, GroupMerge, PartitionCompaction, plan_groups, read_batches};
use crate::layout::Layout;
use crate::writer::{ParquetWriter, create_dir_durably, fsync_dir};

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> CompactError + 'p {
    move |source| CompactError::Io { action, path: path.to_owned(), source }
}

/// Compacts every partition of `session` (or of every session) in the recording directory `root`.
pub fn compact_directory(
    root: &Path,
    session: Option<&str>,
    target_rows: usize,
) -> Result<Vec<PartitionCompaction>, CompactError> {
    let layout = Layout::new(root);
    let sessions = layout.stored_sessions();
    if let Some(wanted) = session
        && !sessions.iter().any(|s| s == wanted)
    {
        return Err(CompactError::NoSession { session: wanted.to_owned(), root: root.to_owned() });
    }
    let staging_root = root.join("compact");
    create_dir_durably(&staging_root)?;
    let lock_path = staging_root.join("lock");
    let lock = File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
    if lock.try_lock().is_err() {
        return Err(CompactError::Busy(root.to_owned()));
    }
    remove_stale_staging(&staging_root)?;
    let writer_id = format!("c{}", crate::random_writer_id());
    let mut writer = ParquetWriter::new(layout.clone(), writer_id);
    let mut done = Vec::new();
    let mut swapped_out = Vec::new();
    for name in sessions.iter().filter(|s| session.is_none_or(|w| w == s.as_str())) {
        let session_dir = layout.operations_dir().join(format!("{}={name}", columns::SESSION_ID));
        let mut dates: Vec<String> = fs::read_dir(&session_dir)
            .map_err(io_err("listing", &session_dir))?
            .flatten()
            .filter_map(|d| d.file_name().to_str()?.strip_prefix(&format!("{}=", columns::DATE)).map(str::to_owned))
            .collect();
        dates.sort();
        for date in dates {
            let dir = layout.partition_dir(name, &date);
            if let Some((merged, written, rows, old)) =
                compact_partition(&dir, &staging_root, &mut writer, target_rows)?
            {
                swapped_out.push(old);
                done.push(PartitionCompaction {
                    session: name.clone(),
                    date,
                    files_merged: merged,
                    files_written: written,
                    rows,
                });
            }
        }
    }
    remove_swapped_out(swapped_out)?;
    drop(lock);
    Ok(done)
}

/// How long the old partition directories stay after the swap. A query that opened one just before
/// it was swapped out may still be reading its entries: while they exist, it finds file names that
/// are gone from the partition, fails to open one and plans again over the new directory; once they
/// are removed it would find none and count nothing. Listing a directory takes milliseconds.
const SWAPPED_OUT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Removes the old partition directories (now in staging) once no listing can still be reading
/// them, carrying over any file that reached one since the swap.
fn remove_swapped_out(swapped_out: Vec<SwappedOut>) -> Result<(), CompactError> {
    if swapped_out.is_empty() {
        return Ok(());
    }
    std::thread::sleep(SWAPPED_OUT_GRACE);
    for SwappedOut { dir, old, inputs } in swapped_out {
        carry_over(&dir, &old, &inputs)?;
        fs::remove_dir_all(&old).map_err(io_err("removing", &old))?;
        let manifest = manifest_path(&old);
        fs::remove_file(&manifest).map_err(io_err("removing", &manifest))?;
    }
    Ok(())
}

/// A partition directory swapped out by a merge, waiting to be removed.
struct SwappedOut {
    /// The partition (now holding the merged files).
    dir: PathBuf,
    /// Where its old directory is now, in staging.
    old: PathBuf,
    /// The files that were merged.
    inputs: HashSet<PathBuf>,
}

/// Moves into `dir` every file of `old` (the swapped-out directory) that was not merged and is not
/// in `dir` already: files the ingest service wrote there while the merge ran.
fn carry_over(dir: &Path, old: &Path, inputs: &HashSet<PathBuf>) -> Result<(), CompactError> {
    let now_visible: HashSet<_> =
        parquet_files(dir)?.iter().filter_map(|p| p.file_name().map(|n| n.to_owned())).collect();
    let mut moved = false;
    for file in parquet_files(old)? {
        let Some(name) = file.file_name() else { continue };
        if !inputs.contains(&dir.join(name)) && !now_visible.contains(name) {
            let target = dir.join(name);
            fs::rename(&file, &target).map_err(io_err("moving a file written during compaction to", &target))?;
            tracing::info!(path = %target.display(), "kept a file written during compaction");
            moved = true;
        }
    }
    if moved {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Cleans up after an interrupted compaction. Its staging directory holds either a merge that
/// never became visible (before the swap: garbage), or the old partition directory (after the swap:
/// the merged inputs, which are garbage, and possibly files the ingest service wrote meanwhile,
/// which are not). The manifest written before the swap tells the two apart and names the inputs.
fn remove_stale_staging(staging_root: &Path) -> Result<(), CompactError> {
    for entry in fs::read_dir(staging_root).map_err(io_err("listing", staging_root))?.flatten() {
        let staging = entry.path();
        if !staging.is_dir() {
            continue;
        }
        let manifest = manifest_path(&staging);
        if let Ok(text) = fs::read_to_string(&manifest) {
            let mut lines = text.lines();
            let partition = PathBuf::from(lines.next().unwrap_or_default());
            let inputs: HashSet<&str> = lines.collect();
            let names = |dir: &Path| -> Result<Vec<String>, CompactError> {
                Ok(parquet_files(dir)?.iter().filter_map(|p| p.file_name()?.to_str().map(str::to_owned)).collect())
            };
            let in_staging = names(&staging)?;
            let swapped = in_staging.iter().any(|n| inputs.contains(n.as_str()));
            if swapped && partition.is_dir() {
                let visible: HashSet<String> = names(&partition)?.into_iter().collect();
                for name in in_staging.iter().filter(|n| !inputs.contains(n.as_str()) && !visible.contains(*n)) {
                    let (from, to) = (staging.join(name), partition.join(name));
                    fs::rename(&from, &to).map_err(io_err("restoring a file written during compaction to", &to))?;
                    tracing::warn!(path = %to.display(), "restored a file an interrupted compaction had left aside");
                }
                fsync_dir(&partition)?;
            }
        }
        tracing::warn!(path = %staging.display(), "removing the staging directory of an interrupted compaction");
        fs::remove_dir_all(&staging).map_err(io_err("removing", &staging))?;
        if manifest.exists() {
            fs::remove_file(&manifest).map_err(io_err("removing", &manifest))?;
        }
    }
    Ok(())
}

fn manifest_path(staging: &Path) -> PathBuf {
    staging.with_extension("manifest")
}

/// Records, durably and before the swap, which partition a staging directory belongs to and which
/// files it merges.
fn write_manifest(staging: &Path, partition: &Path, inputs: &HashSet<PathBuf>) -> Result<(), CompactError> {
    let path = manifest_path(staging);
    let mut text = format!("{}\n", partition.display());
    for input in inputs {
        if let Some(name) = input.file_name().and_then(|n| n.to_str()) {
            text.push_str(name);
            text.push('\n');
        }
    }
    let mut file = File::create(&path).map_err(io_err("creating", &path))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io_err("writing", &path))?;
    file.sync_all().map_err(io_err("fsyncing", &path))?;
    Ok(())
}

/// The visible Parquet files of a partition directory, sorted by name.
fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>, CompactError> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "parquet")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn row_count(path: &Path) -> Result<usize, CompactError> {
    let err = |reason: String| CompactError::Read { path: path.to_owned(), reason };
    let file = File::open(path).map_err(|e| err(e.to_string()))?;
    let reader = SerializedFileReader::new(file).map_err(|e| err(e.to_string()))?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as usize)
}

fn read_all(path: &Path) -> Result<Vec<RecordBatch>, CompactError> {
    let file = File::open(path).map_err(|e| CompactError::Read { path: path.to_owned(), reason: e.to_string() })?;
    read_batches(&path.display().to_string(), file)
}

/// Compacts one partition; `None` when there was nothing to merge.
fn compact_partition(
    dir: &Path,
    staging_root: &Path,
    writer: &mut ParquetWriter,
    target_rows: usize,
) -> Result<Option<(usize, usize, usize, SwappedOut)>, CompactError> {
    let files = parquet_files(dir)?;
    let mut small = Vec::new();
    for file in &files {
        let rows = row_count(file)?;
        if rows < target_rows {
            small.push((file.clone(), rows));
        }
    }
    let groups = plan_groups(small, target_rows);
    if groups.is_empty() {
        return Ok(None);
    }

    let staging = staging_root.join(format!("{}-{}", writer_tag(dir), crate::random_writer_id()));
    create_dir_durably(&staging)?;
    let inputs: HashSet<PathBuf> = groups.iter().flatten().map(|(p, _)| p.clone()).collect();
    let mut merged_rows = 0;
    for group in &groups {
        let mut merge = GroupMerge::default();
        for (file, _) in group {
            merge.add(&file.display().to_string(), read_all(file)?)?;
        }
        let written = writer.write_into(&staging, &merge.batches)?;
        merged_rows += written.rows;
    }
    for file in files.iter().filter(|f| !inputs.contains(*f)) {
        let Some(name) = file.file_name() else { continue };
        let link = staging.join(name);
        fs::hard_link(file, &link).map_err(io_err("linking", &link))?;
    }
    fsync_dir(&staging)?;
    write_manifest(&staging, dir, &inputs)?;
    fsync_dir(staging_root)?;

    exchange(dir, &staging)?;
    fsync_dir(dir.parent().unwrap_or(dir))?;
    fsync_dir(staging_root)?;

    // `staging` now holds the old directory: carry over what was written there meanwhile. It is
    // removed later (`remove_swapped_out`), once no query can still be listing it.
    carry_over(dir, &staging, &inputs)?;
    let merged = inputs.len();
    Ok(Some((merged, groups.len(), merged_rows, SwappedOut { dir: dir.to_owned(), old: staging, inputs })))
}

/// A readable prefix for a staging directory: `<session>_<date>`.
fn writer_tag(dir: &Path) -> String {
    let part = |p: Option<&Path>| {
        p.and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('='))
            .map(|(_, v)| v.to_owned())
    };
    format!("{}_{}", part(dir.parent()).unwrap_or_default(), part(Some(dir)).unwrap_or_default())
}

/// Swaps two directories atomically.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<(), CompactError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io_err("swapping", p)(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc != 0 {
        return Err(io_err("swapping in the compacted directory", a)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Swaps two directories atomically: only Linux has the system call this needs.
#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, _b: &Path) -> Result<(), CompactError> {
    Err(io_err("swapping", a)(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "atomic directory exchange (renameat2) is only available on Linux",
    )))
}
