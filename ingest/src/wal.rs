//! The write-ahead log: every batch the server accepts is appended here and fsynced before it is
//! acknowledged, and stays here until the Parquet files holding its records are durable.
//!
//! The log is a directory of segments, `DATA/wal/<id>.wal`, ids counting up. A segment starts with
//! an 8-byte magic; each entry is
//!
//! ```text
//! u32 LE  payload length
//! u32 LE  CRC-32 of the payload
//! payload: u8 entry version (1) | u16 LE session name length | session name | body
//! ```
//!
//! where an empty session name means "automatic sessions" and the body is the request body exactly
//! as it arrived: recovery prepares it again, and de-duplication against the stored files makes the
//! replay exactly-once. Only the newest segment is ever appended to; older ones are sealed and are
//! deleted once everything in them is in Parquet.
//!
//! A crash can leave a torn entry at the end of the newest segment. Opening the log cuts a segment
//! back to its last complete entry and says so; an entry that fails its checksum anywhere else is
//! reported and the rest of that segment skipped, since nothing after it can be trusted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::writer::{create_dir_durably, fsync_dir};

/// First bytes of every segment.
const MAGIC: &[u8; 8] = b"KSWAL1\n\0";
/// Version byte of the entry payload.
const ENTRY_VERSION: u8 = 1;
/// Entry header: length and checksum.
const HEADER: usize = 8;
/// An entry larger than this is not believed (a torn or corrupt length field).
const MAX_ENTRY_BYTES: usize = 1 << 30;

/// A WAL operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Reading, writing, syncing or removing a segment failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The segment or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The directory could not be created or synced.
    #[error(transparent)]
    Dir(#[from] crate::writer::WriteError),
}

impl WalError {
    /// Whether the failure is a full disk or quota: the client should retry later.
    pub fn is_storage_full(&self) -> bool {
        match self {
            WalError::Io { source, .. } => is_storage_full(source),
            WalError::Dir(e) => e.is_storage_full(),
        }
    }
}

/// Whether an I/O error means "no space left" (or quota exceeded).
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        || e.get_ref().and_then(|inner| inner.downcast_ref::<io::Error>()).is_some_and(is_storage_full)
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io { action, path: path.to_owned(), source }
}

/// One accepted batch, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry {
    /// The named session the batch was accepted into, or `None` for automatic sessions.
    pub session: Option<String>,
    /// The request body.
    pub body: Vec<u8>,
}

/// What opening the log found and repaired.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Segments that existed, oldest first; their entries are to be replayed.
    pub segments: Vec<u64>,
    /// Entries found in them.
    pub entries: u64,
    /// What was repaired or skipped, one line each, for the log.
    pub repairs: Vec<String>,
}

/// The open log: appends go to the newest segment.
pub struct Wal {
    dir: PathBuf,
    file: File,
    id: u64,
    len: u64,
    entries_in_segment: u64,
    scratch: Vec<u8>,
    /// A failed append could not be cut back: the segment must not be appended to again.
    torn: bool,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

/// The ids of the segments in `dir`, oldest first.
pub fn segment_ids(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut ids = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else { continue };
        if let Ok(id) = stem.parse::<u64>() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Reads every entry of the segments in `dir`, oldest first, handing each to `replay`; torn tails
/// are cut off on disk. Call before [`Wal::create`]; delete the segments (with
/// [`remove_segments_through`]) once what `replay` produced is durable.
pub fn recover(dir: &Path, mut replay: impl FnMut(WalEntry)) -> Result<Recovery, WalError> {
    let mut recovery = Recovery { segments: segment_ids(dir)?, ..Recovery::default() };
    for &id in &recovery.segments {
        let path = segment_path(dir, id);
        let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
        let (valid_len, problem) = read_segment(&bytes, |entry| {
            recovery.entries += 1;
            replay(entry);
        });
        if let Some(problem) = problem {
            recovery.repairs.push(format!(
                "{}: {problem}; kept the {valid_len} bytes before it, discarded {} bytes",
                path.display(),
                bytes.len() - valid_len
            ));
            let file = OpenOptions::new().write(true).open(&path).map_err(io_err("opening", &path))?;
            file.set_len(valid_len as u64).map_err(io_err("truncating", &path))?;
            file.sync_all().map_err(io_err("fsyncing", &path))?;
        }
    }
    Ok(recovery)
}

/// What one segment holds, read without changing it (for `kubestep verify`).
#[derive(Debug, Clone)]
pub struct SegmentState {
    /// The segment file.
    pub path: PathBuf,
    /// Complete entries in it.
    pub entries: u64,
    /// Its size in bytes.
    pub len: u64,
    /// Bytes of complete entries (and the header) at its start.
    pub valid_len: u64,
    /// What follows the complete entries, when anything does.
    pub problem: Option<String>,
}

/// Reads every segment in `dir`, oldest first, without repairing anything.
pub fn inspect(dir: &Path) -> Result<Vec<SegmentState>, WalError> {
    let mut states = Vec::new();
    for id in segment_ids(dir)? {
        let path = segment_path(dir, id);
        let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
        let mut entries = 0;
        let (valid_len, problem) = read_segment(&bytes, |_| entries += 1);
        states.push(SegmentState { path, entries, len: bytes.len() as u64, valid_len: valid_len as u64, problem });
    }
    Ok(states)
}

/// Parses a segment, returning how many leading bytes hold complete entries and, if anything
/// follows them, what it was.
fn read_segment(bytes: &[u8], mut entry: impl FnMut(WalEntry)) -> (usize, Option<String>) {
    if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
        // Created but never written to (a crash between create and the header's fsync).
        return (bytes.len(), None);
    }
    if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return (0, Some("this is not a KubeStep WAL segment".into()));
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < HEADER {
            return (at, Some(format!("a torn entry header at byte {at}")));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_ENTRY_BYTES || rest.len() < HEADER + len {
            return (at, Some(format!("a torn entry at byte {at}")));
        }
        let payload = &rest[HEADER..HEADER + len];
        if crc32fast::hash(payload) != crc {
            return (at, Some(format!("an entry with a bad checksum at byte {at}")));
        }
        match parse_payload(payload) {
            Some(e) => entry(e),
            None => return (at, Some(format!("an entry of an unknown format at byte {at}"))),
        }
        at += HEADER + len;
    }
    (at, None)
}

fn parse_payload(payload: &[u8]) -> Option<WalEntry> {
    let (&version, rest) = payload.split_first()?;
    if version != ENTRY_VERSION || rest.len() < 2 {
        return None;
    }
    let name_len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
    let rest = &rest[2..];
    if rest.len() < name_len {
        return None;
    }
    let session = match name_len {
        0 => None,
        _ => Some(std::str::from_utf8(&rest[..name_len]).ok()?.to_owned()),
    };
    Some(WalEntry { session, body: rest[name_len..].to_vec() })
}

/// Deletes the segments with ids up to and including `last`, oldest first; returns how many.
pub fn remove_segments_through(dir: &Path, last: u64) -> Result<usize, WalError> {
    let mut removed = 0;
    for id in segment_ids(dir)?.into_iter().take_while(|&id| id <= last) {
        let path = segment_path(dir, id);
        fs::remove_file(&path).map_err(io_err("removing", &path))?;
        removed += 1;
    }
    if removed > 0 {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

impl Wal {
    /// Starts a new segment after every segment already in `dir`.
    pub fn create(dir: &Path) -> Result<Self, WalError> {
        create_dir_durably(dir)?;
        let id = segment_ids(dir)?.last().map_or(1, |last| last + 1);
        let file = new_segment(dir, id)?;
        Ok(Self {
            dir: dir.to_owned(),
            file,
            id,
            len: MAGIC.len() as u64,
            entries_in_segment: 0,
            scratch: Vec::new(),
            torn: false,
        })
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id of the segment appended to.
    pub fn current_segment(&self) -> u64 {
        self.id
    }

    /// Bytes in the current segment.
    pub fn current_len(&self) -> u64 {
        self.len
    }

    /// Entries in the current segment.
    pub fn entries_in_segment(&self) -> u64 {
        self.entries_in_segment
    }

    /// Appends `entries` and makes them durable with one fsync (group commit). On failure none of
    /// them is in the log: the segment is cut back to where it was.
    pub fn append_group<'e>(
        &mut self,
        entries: impl IntoIterator<Item = (Option<&'e str>, &'e [u8])>,
    ) -> Result<(), WalError> {
        if self.torn {
            self.rotate()?;
        }
        self.scratch.clear();
        let mut count = 0;
        for (session, body) in entries {
            let name = session.unwrap_or("").as_bytes();
            let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX);
            let payload_len = 1 + 2 + name_len as usize + body.len();
            let header_at = self.scratch.len();
            self.scratch.extend_from_slice(&(payload_len as u32).to_le_bytes());
            self.scratch.extend_from_slice(&[0; 4]);
            let payload_at = self.scratch.len();
            self.scratch.push(ENTRY_VERSION);
            self.scratch.extend_from_slice(&name_len.to_le_bytes());
            self.scratch.extend_from_slice(&name[..name_len as usize]);
            self.scratch.extend_from_slice(body);
            let crc = crc32fast::hash(&self.scratch[payload_at..]);
            self.scratch[header_at + 4..header_at + 8].copy_from_slice(&crc.to_le_bytes());
            count += 1;
        }
        let path = segment_path(&self.dir, self.id);
        let written = self
            .file
            .write_all(&self.scratch)
            .map_err(io_err("appending to", &path))
            .and_then(|()| self.file.sync_data().map_err(io_err("fsyncing", &path)));
        if let Err(e) = written {
            // Cut off whatever part was written, so the next group starts on an entry boundary.
            if let Err(cut) = self.file.set_len(self.len) {
                tracing::error!(path = %path.display(), error = %cut, "could not cut back the WAL after a failed append");
                // Garbage may follow the last good entry: nothing more goes into this segment.
                self.torn = true;
            }
            return Err(e);
        }
        self.len += self.scratch.len() as u64;
        self.entries_in_segment += count;
        if self.scratch.capacity() > 64 << 20 {
            self.scratch = Vec::new();
        }
        Ok(())
    }

    /// Seals the current segment and starts the next one; returns the sealed segment's id.
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        let next = new_segment(&self.dir, self.id + 1)?;
        let sealed = self.id;
        self.file = next;
        self.id += 1;
        self.len = MAGIC.len() as u64;
        self.entries_in_segment = 0;
        self.torn = false;
        Ok(sealed)
    }
}

fn new_segment(dir: &Path, id: u64) -> Result<File, WalError> {
    let path = segment_path(dir, id);
    let mut file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(io_err("creating", &path))?;
    let ready = file
        .write_all(MAGIC)
        .map_err(io_err("writing the header of", &path))
        .and_then(|()| file.sync_all().map_err(io_err("fsyncing", &path)))
        .and_then(|()| fsync_dir(dir).map_err(WalError::from));
    if let Err(e) = ready {
        // Leave nothing behind, so that the next attempt can create it again.
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> (Vec<WalEntry>, Recovery) {
        let mut found = Vec::new();
        let recovery = recover(dir, |e| found.push(e)).unwrap();
        (found, recovery)
    }

    #[test]
    fn appended_entries_come_back_in_order_across_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(tmp.path()).unwrap();
        wal.append_group([(None, &b"one"[..]), (Some("s1"), &b"two"[..])]).unwrap();
        let sealed = wal.rotate().unwrap();
        wal.append_group([(None, &b"three"[..])]).unwrap();
        let (found, recovery) = entries(tmp.path());
        assert_eq!(recovery.segments, vec![sealed, sealed + 1]);
        assert!(recovery.repairs.is_empty());
        let bodies: Vec<&[u8]> = found.iter().map(|e| e.body.as_slice()).collect();
        assert_eq!(bodies, [&b"one"[..], b"two", b"three"]);
        assert_eq!(found[1].session.as_deref(), Some("s1"));
        assert_eq!(found[0].session, None);
    }

    #[test]
    fn a_torn_tail_is_cut_back_to_the_last_complete_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(tmp.path()).unwrap();
        wal.append_group([(None, &b"kept"[..])]).unwrap();
        wal.append_group([(None, &b"torn away"[..])]).unwrap();
        let path = segment_path(tmp.path(), wal.current_segment());
        let full = fs::metadata(&path).unwrap().len();
        drop(wal);
        OpenOptions::new().write(true).open(&path).unwrap().set_len(full - 3).unwrap();
        let (found, recovery) = entries(tmp.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].body, b"kept");
        assert_eq!(recovery.repairs.len(), 1, "{:?}", recovery.repairs);
        assert!(recovery.repairs[0].contains("torn entry"), "{}", recovery.repairs[0]);
        // The cut is on disk: a second recovery finds nothing to repair.
        let (found, recovery) = entries(tmp.path());
        assert_eq!(found.len(), 1);
        assert!(recovery.repairs.is_empty());
        // And a new log continues after it.
        let wal = Wal::create(tmp.path()).unwrap();
        assert!(wal.current_segment() > recovery.segments[0]);
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_checksum() {
        let tmp = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(tmp.path()).unwrap();
        wal.append_group([(None, &b"first"[..]), (None, &b"second"[..])]).unwrap();
        let path = segment_path(tmp.path(), wal.current_segment());
        drop(wal);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let (found, recovery) = entries(tmp.path());
        assert_eq!(found.len(), 1);
        assert!(recovery.repairs[0].contains("bad checksum"), "{}", recovery.repairs[0]);
    }

    #[test]
    fn a_short_foreign_segment_is_reported_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(segment_path(tmp.path(), 1), b"junk").unwrap();
        let (found, recovery) = entries(tmp.path());
        assert!(found.is_empty());
        assert!(recovery.repairs[0].contains("not a KubeStep WAL segment"), "{:?}", recovery.repairs);
    }

    #[test]
    fn removing_sealed_segments_keeps_newer_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(tmp.path()).unwrap();
        wal.append_group([(None, &b"a"[..])]).unwrap();
        let first = wal.rotate().unwrap();
        wal.append_group([(None, &b"b"[..])]).unwrap();
        assert_eq!(remove_segments_through(tmp.path(), first).unwrap(), 1);
        let (found, _) = entries(tmp.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].body, b"b");
    }
}
