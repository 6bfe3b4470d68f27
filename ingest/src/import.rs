//! Reading import inputs (files, gzip, standard input) into an [`Ingestor`].
//!
//! JSON-lines input, by far the largest (the API server's log backend), is streamed a block of
//! whole lines at a time, so memory does not grow with the file, and the blocks are prepared
//! (decoded, normalized, built into Arrow) on every core at once while one thread commits them in
//! input order: a reader thread cuts blocks, worker threads prepare them, and the calling thread
//! commits (de-duplication, sessions, Parquet files; with `IngestConfig::write_in_background`, which
//! `kubestep import` sets, the files are written by a thread of their own meanwhile). A fixed number
//! of blocks is in flight at any time, so a slow commit holds the readers back instead of letting
//! prepared blocks pile up. Other shapes (one document, an array, pretty-printed or YAML events)
//! are read whole, since a value can span any distance.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Arc, Mutex};

use datafusion::arrow::error::ArrowError;
use flate2::bufread::MultiGzDecoder;

use crate::decode::is_json_lines;
use crate::pipeline::{IngestError, Ingestor};
use crate::prepare::{LinePreparer, PreparedBatch};
use crate::writer::WriteError;

/// The name standing for standard input.
pub const STDIN: &str = "-";

/// How much decompressed input is decoded at a time: one block is one unit of work for a core.
pub const BLOCK_BYTES: usize = 8 << 20;

/// Counts the bytes read from the underlying file, for progress in on-disk bytes.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Input read and not yet handed on. Its memory is zeroed only when it grows: `bytes` keeps its
/// length and `len` says how much of it is input, so filling a reused buffer again costs no more
/// than the read (reading into spare capacity would zero it every time).
#[derive(Default)]
struct ReadBuffer {
    bytes: Vec<u8>,
    len: usize,
}

impl ReadBuffer {
    /// The input it holds.
    fn filled(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Replaces what it holds with `input`, growing it to hold `room` more bytes after that.
    fn start_with(&mut self, input: &[u8], room: usize) {
        self.reserve(input.len() + room);
        self.bytes[..input.len()].copy_from_slice(input);
        self.len = input.len();
    }

    fn reserve(&mut self, total: usize) {
        if self.bytes.len() < total {
            self.bytes.resize(total, 0);
        }
    }

    /// Appends up to `more` bytes of `source`; says whether the input ended. A read error ends the
    /// input too, and is returned as a description (the bytes read before it are kept).
    fn fill(&mut self, source: &mut dyn Read, more: usize) -> (bool, Option<String>) {
        let end = self.len + more.max(1);
        self.reserve(end);
        while self.len < end {
            match source.read(&mut self.bytes[self.len..end]) {
                Ok(0) => return (true, None),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (true, Some(format!("{e}; everything read before that is imported"))),
            }
        }
        (false, None)
    }
}

/// Imports one input (a path, or `-` for standard input) into `ingestor`, decompressing gzip
/// (detected by its magic bytes, not its name). An input that cannot be opened or read is recorded
/// as a rejection and everything read before a failure is still imported; the error returned is
/// only storage failing. `progress` is told the on-disk bytes of the input consumed so far.
pub fn import_input(ingestor: &mut Ingestor, name: &str, progress: &mut dyn FnMut(u64)) -> Result<(), IngestError> {
    let _span = tracing::info_span!("import", source = name).entered();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    import_blocks(ingestor, name, BLOCK_BYTES, workers, progress)
}

fn import_blocks(
    ingestor: &mut Ingestor,
    name: &str,
    block: usize,
    workers: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(), IngestError> {
    let opened: io::Result<Box<dyn Read + Send>> = if name == STDIN {
        Ok(Box::new(io::stdin()))
    } else if Path::new(name).is_dir() {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "is a directory"))
    } else {
        File::open(name).map(|f| Box::new(f) as Box<dyn Read + Send>)
    };
    let file = match opened {
        Ok(file) => file,
        Err(e) => return ingestor.reject_input(name, format!("cannot read: {e}")),
    };
    let count = Arc::new(AtomicU64::new(0));
    let mut reader = BufReader::with_capacity(1 << 16, Counting { inner: file, count: Arc::clone(&count) });
    let gzip = match reader.fill_buf() {
        Ok(head) => head.starts_with(&[0x1f, 0x8b]),
        Err(e) => return ingestor.reject_input(name, format!("cannot read: {e}")),
    };
    let mut source: Box<dyn Read + Send> = if gzip { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    let describe = |problem: String| {
        if gzip {
            format!("gzip stream is damaged or truncated ({problem})")
        } else {
            format!("read failed: {problem}")
        }
    };

    let mut buf = ReadBuffer::default();
    let (mut eof, mut problem) = buf.fill(source.as_mut(), block);
    if is_json_lines(buf.filled()) {
        let start = ReadState { buf, eof, problem };
        problem = import_lines(ingestor, name, source, start, block, workers, &count, progress)?;
    } else {
        while !eof {
            (eof, problem) = buf.fill(source.as_mut(), block);
        }
        let mut ignore = |_| {};
        ingestor.ingest(name, buf.filled(), &mut ignore)?;
        progress(count.load(Ordering::Relaxed));
    }
    match problem {
        Some(problem) => ingestor.reject_input(name, describe(problem)),
        None => Ok(()),
    }
}

/// Where reading stands: the bytes read and not yet handed on, whether the input ended, and the
/// read error that ended it, if one did.
struct ReadState {
    buf: ReadBuffer,
    eof: bool,
    problem: Option<String>,
}

/// A block of whole lines on its way to a worker.
struct Block {
    seq: u64,
    bytes: ReadBuffer,
    /// On-disk bytes read when the block was cut, for progress once it is committed.
    read: u64,
}

/// Prepares the blocks of a JSON-lines input on `workers` threads and commits them in input
/// order. Returns the read error that ended the input early, if any; an error is storage failing,
/// and then reading stops.
#[allow(clippy::too_many_arguments)]
fn import_lines(
    ingestor: &mut Ingestor,
    name: &str,
    mut source: Box<dyn Read + Send>,
    start: ReadState,
    block: usize,
    workers: usize,
    count: &AtomicU64,
    progress: &mut dyn FnMut(u64),
) -> Result<Option<String>, IngestError> {
    let workers = workers.max(1);
    let in_flight = 2 * workers + 1;
    let config = ingestor.config().normalize.clone();
    // A block may be cut only with a token; a token comes back when its block is committed. The
    // work channel holds at most that many blocks, so the reader never blocks on it.
    let (token_tx, token_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = token_tx.send(());
    }
    let (work_tx, work_rx) = sync_channel::<Block>(in_flight);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = channel::<(u64, Result<PreparedBatch, ArrowError>, u64)>();
    // Block buffers go back to the reader once prepared, so the same few are filled again.
    let (spare_tx, spare_rx) = sync_channel::<ReadBuffer>(in_flight);
    let stop = AtomicBool::new(false);

    std::thread::scope(|scope| {
        let stop = &stop;
        let mut started = 0;
        for _ in 0..workers {
            let (done_tx, spare_tx) = (done_tx.clone(), spare_tx.clone());
            let (work_rx, config) = (&work_rx, &config);
            let spawned = std::thread::Builder::new().name("kubestep-prepare".into()).spawn_scoped(scope, move || {
                let mut preparer = LinePreparer::new(config.clone());
                loop {
                    let job = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let _span = tracing::debug_span!("prepare", source = name, block = job.seq).entered();
                    // A bug in preparing must not leave the committer waiting for this block forever.
                    let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        preparer.prepare(name, job.bytes.filled(), job.seq == 0)
                    }))
                    .unwrap_or_else(|_| Err(ArrowError::ComputeError(format!("preparing block {} failed", job.seq))));
                    let _ = spare_tx.try_send(job.bytes);
                    if done_tx.send((job.seq, prepared, job.read)).is_err() {
                        return;
                    }
                }
            });
            started += usize::from(spawned.is_ok());
        }
        // The reader owns the sending end of the work channel: when it returns, the workers drain
        // the channel and end.
        let reader = std::thread::Builder::new().name("kubestep-read".into()).spawn_scoped(scope, move || {
            let ReadState { mut buf, mut eof, mut problem } = start;
            let mut seq = 0;
            loop {
                // Hand on every whole line; a partial last line waits for the next read (or the end).
                let cut = if eof { buf.len } else { memchr::memrchr(b'\n', buf.filled()).map_or(0, |i| i + 1) };
                if cut > 0 {
                    if token_rx.recv().is_err() || stop.load(Ordering::Relaxed) {
                        return problem;
                    }
                    // The partial line moves to a buffer with room for a whole block (a used one
                    // when a worker has handed one back), so reading never grows a buffer.
                    let mut next = spare_rx.try_recv().unwrap_or_default();
                    next.start_with(&buf.filled()[cut..], block);
                    buf.len = cut;
                    let bytes = std::mem::replace(&mut buf, next);
                    let read = count.load(Ordering::Relaxed);
                    if work_tx.send(Block { seq, bytes, read }).is_err() {
                        return problem;
                    }
                    seq += 1;
                }
                if eof {
                    return problem;
                }
                (eof, problem) = buf.fill(source.as_mut(), block);
            }
        });
        let reader = match reader {
            Ok(reader) if started > 0 => reader,
            // Without these threads nothing is read; the input is reported, not silently skipped.
            _ => {
                stop.store(true, Ordering::Relaxed);
                return Ok(Some("the threads to read and decode it could not be started".to_owned()));
            }
        };
        drop((done_tx, spare_tx));

        let mut waiting = BTreeMap::new();
        let mut next = 0;
        let mut lines_before = 0;
        let mut failed = None;
        'commit: for (seq, prepared, read) in done_rx.iter() {
            waiting.insert(seq, (prepared, read));
            while let Some((prepared, read)) = waiting.remove(&next) {
                next += 1;
                let committed =
                    prepared.map_err(|e| IngestError::from(WriteError::Sort(e))).and_then(|mut prepared| {
                        prepared.follow_lines(lines_before);
                        lines_before += prepared.lines;
                        ingestor.commit(prepared, None)
                    });
                if let Err(e) = committed {
                    failed = Some(e);
                    break 'commit;
                }
                progress(read);
                let _ = token_tx.send(());
            }
        }
        if failed.is_some() {
            // Storage failed: the reader stops at its next block, the workers when it does.
            stop.store(true, Ordering::Relaxed);
        }
        drop(token_tx);
        drop(done_rx);
        let problem = reader.join().unwrap_or_else(|_| Some("the reading thread stopped unexpectedly".to_owned()));
        match failed {
            Some(e) => Err(e),
            None => Ok(problem),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::IngestConfig;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn event(i: usize) -> String {
        format!(
            r#"{{"auditID":"e{i}","stage":"ResponseComplete","verb":"get","requestReceivedTimestamp":"2024-05-01T10:00:00.{i:06}Z","stageTimestamp":"2024-05-01T10:00:01Z"}}"#
        )
    }

    fn run(content: &[u8], block: usize) -> crate::IngestStats {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("input");
        std::fs::write(&file, content).expect("write");
        let mut ingestor = Ingestor::new(&dir.path().join("data"), "t", IngestConfig::default());
        let mut last = 0;
        import_blocks(&mut ingestor, &file.display().to_string(), block, 2, &mut |n| last = n).expect("import");
        assert_eq!(last, content.len() as u64, "progress reaches the end of the input");
        ingestor.finish().expect("finish").0
    }

    #[test]
    fn lines_are_streamed_across_small_blocks_with_their_own_line_numbers() {
        let mut content = String::from("\u{feff}");
        for i in 0..50 {
            content.push_str(&event(i));
            content.push('\n');
            if i == 30 {
                content.push_str("{broken\n");
            }
        }
        let stats = run(content.as_bytes(), 100);
        assert_eq!(stats.records_stored, 50);
        assert_eq!(stats.rejected, 1);
        assert_eq!(stats.rejections[0].location.map(|l| l.line), Some(32));
    }

    #[test]
    fn blocks_prepared_on_many_threads_are_committed_in_input_order() {
        // Every 7th line repeats an earlier event and every 500th is broken; blocks of a few lines
        // finish out of order on 4 workers, yet duplicates and line numbers come out as in one pass.
        let mut content = String::new();
        let mut broken = Vec::new();
        for line in 1..=3000 {
            if line % 500 == 0 {
                content.push_str("{\"auditID\": oops\n");
                broken.push(line);
            } else if line % 7 == 0 {
                content.push_str(&event(line / 2));
                content.push('\n');
            } else {
                content.push_str(&event(line));
                content.push('\n');
            }
        }
        let runs: Vec<_> = [1, 4]
            .into_iter()
            .map(|workers| {
                let dir = tempfile::tempdir().expect("tempdir");
                let file = dir.path().join("input");
                std::fs::write(&file, &content).expect("write");
                let mut ingestor = Ingestor::new(&dir.path().join("data"), "t", IngestConfig::default());
                import_blocks(&mut ingestor, &file.display().to_string(), 600, workers, &mut |_| {}).expect("import");
                ingestor.finish().expect("finish").0
            })
            .collect();
        for stats in &runs {
            let lines: Vec<usize> = stats.rejections.iter().filter_map(|r| r.location.map(|l| l.line)).collect();
            assert_eq!(lines, broken);
            assert_eq!(stats.events_read + stats.rejected, 3000);
        }
        assert!(runs[1].duplicates > 100, "{}", runs[1].duplicates);
        assert_eq!(
            (runs[0].records_stored, runs[0].duplicates),
            (runs[1].records_stored, runs[1].duplicates),
            "one worker and four agree"
        );
    }

    #[test]
    fn files_written_in_the_background_hold_what_files_written_in_place_hold() {
        let lines: String = (0..5000).map(|i| event(i % 4000) + "\n").collect();
        let runs: Vec<_> = [false, true]
            .into_iter()
            .map(|write_in_background| {
                let dir = tempfile::tempdir().expect("tempdir");
                let file = dir.path().join("input");
                std::fs::write(&file, &lines).expect("write");
                let config = IngestConfig { max_rows_per_file: 300, write_in_background, ..IngestConfig::default() };
                let mut ingestor = Ingestor::new(&dir.path().join("data"), "t", config);
                import_blocks(&mut ingestor, &file.display().to_string(), 2000, 2, &mut |_| {}).expect("import");
                let (stats, files) = ingestor.finish().expect("finish");
                let mut names: Vec<String> =
                    files.iter().filter_map(|f| f.path.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
                names.sort();
                assert_eq!(files.iter().map(|f| f.rows).sum::<usize>(), 4000);
                assert!(files.iter().all(|f| f.path.exists()), "every file is in place when finish returns");
                (stats.records_stored, stats.duplicates, stats.files_written, names)
            })
            .collect();
        assert_eq!(runs[0].0, 4000);
        assert_eq!(runs[0].1, 1000);
        assert!(runs[0].2 > 10, "{}", runs[0].2);
        assert_eq!(runs[0], runs[1], "in place and in the background agree, file for file");
    }

    #[test]
    fn a_storage_failure_stops_the_import_instead_of_hanging_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("input");
        let lines: String = (0..5000).map(|i| event(i) + "\n").collect();
        std::fs::write(&file, lines).expect("write");
        // The recording would live under a regular file: the first partition written fails.
        for write_in_background in [false, true] {
            let config = IngestConfig { max_rows_per_file: 10, write_in_background, ..IngestConfig::default() };
            let mut ingestor = Ingestor::new(&file.join("data"), "t", config);
            let result = import_blocks(&mut ingestor, &file.display().to_string(), 300, 2, &mut |_| {});
            let error = result.expect_err("writing under a file fails");
            assert!(error.to_string().contains("creating directory"), "{error}");
        }
    }

    #[test]
    fn gzip_is_streamed_and_a_truncated_one_keeps_its_complete_lines() {
        let lines: String = (0..2000).map(|i| event(i) + "\n").collect();
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(lines.as_bytes()).expect("gzip");
        let mut compressed = gz.finish().expect("gzip");
        assert_eq!(run(&compressed, 4096).records_stored, 2000);
        compressed.truncate(compressed.len() / 2);
        let stats = run(&compressed, 4096);
        assert!(stats.records_stored > 100 && stats.records_stored < 2000, "{}", stats.records_stored);
        assert!(stats.rejections.iter().any(|r| r.reason.contains("truncated")), "{:?}", stats.rejections);
    }

    #[test]
    fn documents_are_read_whole_even_when_larger_than_a_block() {
        let items: Vec<String> = (0..40).map(event).collect();
        let list = format!("{{\n  \"kind\": \"EventList\",\n  \"items\": [{}]\n}}\n", items.join(",\n"));
        assert_eq!(run(list.as_bytes(), 64).records_stored, 40);
    }
}
