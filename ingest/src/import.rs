//! Reading import inputs (files, gzip, standard input) into an [`Ingestor`].
//!
//! JSON-lines input, by far the largest (the API server's log backend), is streamed a block of
//! whole lines at a time, so memory does not grow with the file. Other shapes (one document, an
//! array, pretty-printed or YAML events) are read whole, since a value can span any distance.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use flate2::bufread::MultiGzDecoder;

use crate::decode::is_json_lines;
use crate::pipeline::{IngestError, Ingestor};

/// The name standing for standard input.
pub const STDIN: &str = "-";

/// How much decompressed input is decoded at a time.
pub const BLOCK_BYTES: usize = 16 << 20;

/// Counts the bytes read from the underlying file, for progress in on-disk bytes.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Appends up to `more` bytes of `source` to `buf`; says whether the input ended. A read error ends
/// the input too, and is returned as a description (the bytes read before it are kept).
fn fill(source: &mut dyn Read, buf: &mut Vec<u8>, more: usize) -> (bool, Option<String>) {
    let want = more.max(1) as u64;
    match source.take(want).read_to_end(buf) {
        Ok(n) => ((n as u64) < want, None),
        Err(e) => (true, Some(format!("{e}; everything read before that is imported"))),
    }
}

/// Imports one input (a path, or `-` for standard input) into `ingestor`, decompressing gzip
/// (detected by its magic bytes, not its name). An input that cannot be opened or read is recorded
/// as a rejection and everything read before a failure is still imported; the error returned is
/// only storage failing. `progress` is told the on-disk bytes of the input consumed so far.
pub fn import_input(ingestor: &mut Ingestor, name: &str, progress: &mut dyn FnMut(u64)) -> Result<(), IngestError> {
    let _span = tracing::info_span!("import", source = name).entered();
    import_blocks(ingestor, name, BLOCK_BYTES, progress)
}

fn import_blocks(
    ingestor: &mut Ingestor,
    name: &str,
    block: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(), IngestError> {
    let opened: io::Result<Box<dyn Read>> = if name == STDIN {
        Ok(Box::new(io::stdin().lock()))
    } else if Path::new(name).is_dir() {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "is a directory"))
    } else {
        File::open(name).map(|f| Box::new(f) as Box<dyn Read>)
    };
    let file = match opened {
        Ok(file) => file,
        Err(e) => return ingestor.reject_input(name, format!("cannot read: {e}")),
    };
    let count = Rc::new(Cell::new(0));
    let mut reader = BufReader::with_capacity(1 << 16, Counting { inner: file, count: Rc::clone(&count) });
    let gzip = match reader.fill_buf() {
        Ok(head) => head.starts_with(&[0x1f, 0x8b]),
        Err(e) => return ingestor.reject_input(name, format!("cannot read: {e}")),
    };
    let mut source: Box<dyn Read> = if gzip { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    let describe = |problem: String| {
        if gzip {
            format!("gzip stream is damaged or truncated ({problem})")
        } else {
            format!("read failed: {problem}")
        }
    };

    let mut buf = Vec::new();
    let (mut eof, mut problem) = fill(source.as_mut(), &mut buf, block);
    if !is_json_lines(&buf) {
        while !eof {
            (eof, problem) = fill(source.as_mut(), &mut buf, block);
        }
        if let Some(problem) = problem {
            ingestor.reject_input(name, describe(problem))?;
        }
        let mut ignore = |_| {};
        ingestor.ingest(name, &buf, &mut ignore)?;
        progress(count.get());
        return Ok(());
    }
    let mut lines_before = 0;
    loop {
        // Decode every whole line; a partial last line waits for the next block (or the end).
        let cut = if eof { buf.len() } else { memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1) };
        if cut > 0 {
            ingestor.ingest_lines(name, &buf[..cut], lines_before)?;
            lines_before += memchr::memchr_iter(b'\n', &buf[..cut]).count();
            buf.drain(..cut);
            progress(count.get());
        }
        if eof {
            break;
        }
        (eof, problem) = fill(source.as_mut(), &mut buf, block);
    }
    if let Some(problem) = problem {
        ingestor.reject_input(name, describe(problem))?;
    }
    Ok(())
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
        import_blocks(&mut ingestor, &file.display().to_string(), block, &mut |n| last = n).expect("import");
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
