//! Compaction of a recording in object storage, announced in the compaction journal.
//!
//! A bucket has no rename, so the new set of files cannot replace the old one in one step. For
//! each partition with small files to merge:
//!
//! 1. the files of each group are fetched whole, merged, and written as one sorted file into a
//!    local temporary directory (as a directory compaction writes them);
//! 2. `compact/<id>.merging` names the partition, the inputs and the outputs (create-only put):
//!    from here on a listing may hold inputs and outputs together, and readers know it;
//! 3. the outputs are uploaded with create-only puts, then the inputs are deleted;
//! 4. `compact/<id>.done` records the outcome, and the `.merging` journal is deleted.
//!
//! A failed upload rolls back (the outputs already there are deleted) and still ends with step 4.
//! A crash leaves the `.merging` journal behind; the next run, before anything else, finishes that
//! compaction (every output is there: the remaining inputs go) or rolls it back (some output is
//! missing: those that are there go). Readers wait while a `.merging` journal exists, so an
//! interrupted compaction holds them up until `kubestep compact` runs again, which they say.
//!
//! One compaction runs at a time: `compact/lock`, taken with a create-only put and deleted at the
//! end. Done journals older than a day are removed by the next compaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use futures::TryStreamExt;
use kubestep_schemas::compaction::{
    CompactionJournal, DONE_RETENTION_HOURS, DONE_SUFFIX, JOURNAL_DIR, JournalEntry, LOCK_NAME, journal_path,
    list_journal,
};
use kubestep_schemas::location::{RemoteRecording, store_error_line};
use kubestep_schemas::schema::columns;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{CompactError, GroupMerge, PartitionCompaction, plan_groups, read_batches};
use crate::layout::Layout;
use crate::writer::ParquetWriter;

/// Compacts every partition of `session` (or of every session) in the recording at `remote`.
pub fn compact_bucket(
    remote: &RemoteRecording,
    session: Option<&str>,
    target_rows: usize,
) -> Result<Vec<PartitionCompaction>, CompactError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CompactError::Location(format!("starting a runtime: {e}")))?;
    let bucket = Bucket { remote, runtime };
    let sessions: Vec<String> = bucket.partitions()?.into_keys().map(|(s, _)| s).collect();
    if sessions.is_empty() {
        return Err(CompactError::NotARecording(remote.url.clone()));
    }
    if let Some(wanted) = session
        && !sessions.iter().any(|s| s == wanted)
    {
        return Err(CompactError::NoSession { session: wanted.to_owned(), root: PathBuf::from(&remote.url) });
    }
    bucket.lock()?;
    let result = bucket.compact_locked(session, target_rows);
    let unlocked = bucket.unlock();
    let done = result?;
    unlocked?;
    Ok(done)
}

/// A recording in object storage, with the runtime its calls are made on.
struct Bucket<'r> {
    remote: &'r RemoteRecording,
    runtime: tokio::runtime::Runtime,
}

/// The Parquet files of each `(session, date)` partition.
type Partitions = BTreeMap<(String, String), Vec<ObjectMeta>>;

impl Bucket<'_> {
    fn url(&self, relative: &str) -> String {
        format!("{}/{relative}", self.remote.url)
    }

    fn store(&self) -> &dyn ObjectStore {
        self.remote.store.as_ref()
    }

    fn store_err<'a>(
        &'a self,
        action: &'static str,
        relative: &'a str,
    ) -> impl FnOnce(object_store::Error) -> CompactError + 'a {
        move |e| CompactError::Store { action, url: self.url(relative), reason: store_error_line(&e) }
    }

    /// Every Parquet file under `operations/`, by partition.
    fn partitions(&self) -> Result<Partitions, CompactError> {
        let operations = self.remote.path_of("operations");
        let listing = self
            .runtime
            .block_on(self.store().list(Some(&operations)).try_collect::<Vec<_>>())
            .map_err(self.store_err("listing", "operations/"))?;
        let mut partitions = Partitions::new();
        for object in listing {
            let parts: Vec<String> = object
                .location
                .prefix_match(&operations)
                .into_iter()
                .flatten()
                .map(|p| p.as_ref().to_owned())
                .collect();
            let [session, date, name] = parts.as_slice() else { continue };
            let (Some(session), Some(date)) =
                (hive_value(session, columns::SESSION_ID), hive_value(date, columns::DATE))
            else {
                continue;
            };
            if name.ends_with(".parquet") && !name.starts_with('.') {
                partitions.entry((session.to_owned(), date.to_owned())).or_default().push(object);
            }
        }
        for files in partitions.values_mut() {
            files.sort_by(|a, b| a.location.cmp(&b.location));
        }
        Ok(partitions)
    }

    fn lock(&self) -> Result<(), CompactError> {
        let relative = format!("{JOURNAL_DIR}/{LOCK_NAME}");
        let path = journal_path(self.remote, LOCK_NAME);
        let body = format!("taken at {} by process {}\n", now(), std::process::id());
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.runtime.block_on(self.store().put_opts(&path, PutPayload::from(body), options)) {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let since = self
                    .runtime
                    .block_on(async { self.store().get(&path).await?.bytes().await })
                    .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                    .unwrap_or_else(|e| format!("unreadable: {}", store_error_line(&e)));
                Err(CompactError::BusyBucket { lock: self.url(&relative), since })
            }
            Err(e) => Err(self.store_err("taking the compaction lock", &relative)(e)),
        }
    }

    fn unlock(&self) -> Result<(), CompactError> {
        let relative = format!("{JOURNAL_DIR}/{LOCK_NAME}");
        self.runtime
            .block_on(self.store().delete(&journal_path(self.remote, LOCK_NAME)))
            .map_err(self.store_err("releasing the compaction lock", &relative))
    }

    fn compact_locked(
        &self,
        session: Option<&str>,
        target_rows: usize,
    ) -> Result<Vec<PartitionCompaction>, CompactError> {
        self.recover()?;
        self.remove_old_journals()?;
        let staging = tempfile::tempdir().map_err(|source| CompactError::Io {
            action: "creating",
            path: std::env::temp_dir(),
            source,
        })?;
        let mut writer = ParquetWriter::new(Layout::new(staging.path()), format!("c{}", crate::random_writer_id()));
        let mut done = Vec::new();
        for ((name, date), files) in self.partitions()? {
            if session.is_some_and(|wanted| wanted != name) {
                continue;
            }
            if let Some(compaction) =
                self.compact_partition(&name, &date, files, staging.path(), &mut writer, target_rows)?
            {
                done.push(compaction);
            }
        }
        Ok(done)
    }

    /// Finishes or rolls back what interrupted compactions left in the journal.
    fn recover(&self) -> Result<(), CompactError> {
        let entries =
            self.runtime.block_on(list_journal(self.remote)).map_err(self.store_err("listing", JOURNAL_DIR))?;
        for entry in entries.into_iter().filter(|e| !e.done) {
            let name = entry.name();
            let relative = format!("{JOURNAL_DIR}/{name}");
            let bytes = self
                .runtime
                .block_on(async { self.store().get(&journal_path(self.remote, &name)).await?.bytes().await })
                .map_err(self.store_err("reading", &relative))?;
            let journal: CompactionJournal = serde_json::from_slice(&bytes)
                .map_err(|e| CompactError::Journal { url: self.url(&relative), reason: e.to_string() })?;
            let mut missing = 0;
            for output in &journal.outputs {
                let path = self.remote.path_of(&format!("{}/{output}", journal.partition));
                match self.runtime.block_on(self.store().head(&path)) {
                    Ok(_) => {}
                    Err(object_store::Error::NotFound { .. }) => missing += 1,
                    Err(e) => return Err(self.store_err("looking for", &format!("{}/{output}", journal.partition))(e)),
                }
            }
            let outcome = if missing == 0 {
                self.delete_all(&journal.partition, &journal.inputs)?;
                "merged (finished by a later run after an interruption)".to_owned()
            } else {
                self.delete_all(&journal.partition, &journal.outputs)?;
                format!("rolled back after an interruption ({missing} of its outputs were never uploaded)")
            };
            tracing::warn!(journal = %self.url(&relative), outcome, "finished an interrupted compaction");
            self.finish(&entry.id, journal, outcome)?;
        }
        Ok(())
    }

    /// Removes done journals older than the retention: no reader still runs a query that began
    /// before them.
    fn remove_old_journals(&self) -> Result<(), CompactError> {
        let dir = self.remote.path_of(JOURNAL_DIR);
        let listing = self
            .runtime
            .block_on(self.store().list_with_delimiter(Some(&dir)))
            .map_err(self.store_err("listing", JOURNAL_DIR))?;
        let cutoff = chrono::Utc::now() - chrono::Duration::hours(DONE_RETENTION_HOURS);
        for object in listing.objects {
            let done = object.location.filename().is_some_and(|n| n.ends_with(DONE_SUFFIX));
            if done && object.last_modified < cutoff {
                self.runtime
                    .block_on(self.store().delete(&object.location))
                    .map_err(self.store_err("removing an old journal", JOURNAL_DIR))?;
            }
        }
        Ok(())
    }

    /// Deletes `names` of `partition`; one that is already gone is fine.
    fn delete_all(&self, partition: &str, names: &[String]) -> Result<(), CompactError> {
        for name in names {
            let relative = format!("{partition}/{name}");
            match self.runtime.block_on(self.store().delete(&self.remote.path_of(&relative))) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_err("deleting", &relative)(e)),
            }
        }
        Ok(())
    }

    /// Ends a compaction in the journal: its done entry, then the merging entry goes.
    fn finish(&self, id: &str, mut journal: CompactionJournal, outcome: String) -> Result<(), CompactError> {
        journal.outcome = Some(outcome);
        let done = JournalEntry { id: id.to_owned(), done: true }.name();
        self.put_journal(&done, &journal)?;
        let merging = JournalEntry { id: id.to_owned(), done: false }.name();
        self.runtime
            .block_on(self.store().delete(&journal_path(self.remote, &merging)))
            .map_err(self.store_err("deleting", &format!("{JOURNAL_DIR}/{merging}")))
    }

    /// Writes a journal entry that must not exist yet (a done entry may: a retried finish).
    fn put_journal(&self, name: &str, journal: &CompactionJournal) -> Result<(), CompactError> {
        let relative = format!("{JOURNAL_DIR}/{name}");
        let body = serde_json::to_vec_pretty(journal)
            .map_err(|e| CompactError::Journal { url: self.url(&relative), reason: e.to_string() })?;
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.runtime.block_on(self.store().put_opts(&journal_path(self.remote, name), body.into(), options)) {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) if name.ends_with(DONE_SUFFIX) => Ok(()),
            Err(e) => Err(self.store_err("writing the journal entry", &relative)(e)),
        }
    }

    /// Row count of a stored file, from its footer: two ranged reads (the 8-byte tail says how
    /// long the metadata is), instead of fetching a file that may be large and is not merged.
    fn row_count(&self, file: &ObjectMeta) -> Result<usize, CompactError> {
        let err = |reason: String| CompactError::Read { path: PathBuf::from(self.shown(&file.location)), reason };
        let tail_start = file.size.checked_sub(8).ok_or_else(|| err("too short to be a Parquet file".to_owned()))?;
        let fetch = |range: std::ops::Range<u64>| {
            self.runtime.block_on(self.store().get_range(&file.location, range)).map_err(|e| err(store_error_line(&e)))
        };
        let tail = fetch(tail_start..file.size)?;
        let tail: [u8; 8] = tail.as_ref().try_into().map_err(|_| err("short read of the footer".to_owned()))?;
        let length = FooterTail::try_new(&tail).map_err(|e| err(e.to_string()))?.metadata_length() as u64;
        let start =
            tail_start.checked_sub(length).ok_or_else(|| err("its footer is longer than the file".to_owned()))?;
        let metadata =
            ParquetMetaDataReader::decode_metadata(&fetch(start..tail_start)?).map_err(|e| err(e.to_string()))?;
        Ok(metadata.file_metadata().num_rows().max(0) as usize)
    }

    fn shown(&self, location: &StorePath) -> String {
        let relative = match location.prefix_match(&self.remote.prefix) {
            Some(parts) => parts.map(|p| p.as_ref().to_owned()).collect::<Vec<_>>().join("/"),
            None => location.to_string(),
        };
        self.url(&relative)
    }

    /// Compacts one partition; `None` when there was nothing to merge.
    fn compact_partition(
        &self,
        session: &str,
        date: &str,
        files: Vec<ObjectMeta>,
        staging: &Path,
        writer: &mut ParquetWriter,
        target_rows: usize,
    ) -> Result<Option<PartitionCompaction>, CompactError> {
        let mut small = Vec::new();
        for file in files {
            let rows = self.row_count(&file)?;
            if rows < target_rows {
                small.push((file, rows));
            }
        }
        let groups = plan_groups(small, target_rows);
        if groups.is_empty() {
            return Ok(None);
        }
        let partition = format!("operations/{}={session}/{}={date}", columns::SESSION_ID, columns::DATE);
        let local_dir = staging.join(format!("{session}_{date}"));
        let mut outputs = Vec::new();
        let mut rows = 0;
        for group in &groups {
            let mut merge = GroupMerge::default();
            for (file, _) in group {
                let shown = self.shown(&file.location);
                let bytes = self
                    .runtime
                    .block_on(async { self.store().get(&file.location).await?.bytes().await })
                    .map_err(|e| CompactError::Read { path: PathBuf::from(&shown), reason: store_error_line(&e) })?;
                merge.add(&shown, read_batches(&shown, bytes)?)?;
            }
            let written = writer.write_into(&local_dir, &merge.batches)?;
            rows += written.rows;
            outputs.push(written.path);
        }
        let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let journal = CompactionJournal {
            partition: partition.clone(),
            inputs: groups.iter().flatten().filter_map(|(f, _)| f.location.filename().map(str::to_owned)).collect(),
            outputs: outputs.iter().map(|p| name_of(p)).collect(),
            started_at: now(),
            outcome: None,
        };
        let id = format!("{session}_{date}-{}", crate::random_writer_id());
        self.put_journal(&JournalEntry { id: id.clone(), done: false }.name(), &journal)?;

        if let Err(e) = self.upload_outputs(&partition, &outputs) {
            // Nothing was deleted yet: take back what was uploaded, and say so in the journal.
            self.delete_all(&partition, &journal.outputs)?;
            self.finish(&id, journal, format!("rolled back: {e}"))?;
            return Err(e);
        }
        // From here the merge is complete in the bucket; a failure leaves the merging journal for
        // the next run to finish.
        self.delete_all(&partition, &journal.inputs)?;
        let compaction = PartitionCompaction {
            session: session.to_owned(),
            date: date.to_owned(),
            files_merged: journal.inputs.len(),
            files_written: journal.outputs.len(),
            rows,
        };
        self.finish(&id, journal, "merged".to_owned())?;
        for output in &outputs {
            let _ = std::fs::remove_file(output);
        }
        Ok(Some(compaction))
    }

    fn upload_outputs(&self, partition: &str, outputs: &[PathBuf]) -> Result<(), CompactError> {
        for output in outputs {
            let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let relative = format!("{partition}/{name}");
            let bytes = std::fs::read(output).map_err(|source| CompactError::Io {
                action: "reading",
                path: output.clone(),
                source,
            })?;
            let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            self.runtime
                .block_on(self.store().put_opts(&self.remote.path_of(&relative), PutPayload::from(bytes), options))
                .map_err(self.store_err("uploading the merged file", &relative))?;
        }
        Ok(())
    }
}

fn hive_value<'a>(part: &'a str, key: &str) -> Option<&'a str> {
    part.strip_prefix(key)?.strip_prefix('=').filter(|v| !v.is_empty())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
