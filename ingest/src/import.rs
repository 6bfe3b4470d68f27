//! Reading import inputs: files, gzip files, and standard input.

use std::io::{self, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

/// The name standing for standard input.
pub const STDIN: &str = "-";

/// An input read into memory, and what went wrong while reading it (the bytes read before a
/// failure are kept: a truncated gzip still yields every complete event before the cut).
pub struct InputBytes {
    /// The (decompressed) content.
    pub bytes: Vec<u8>,
    /// Compressed size, when the input was gzip.
    pub compressed_len: Option<u64>,
    /// Why the input ended early, if it did.
    pub problem: Option<String>,
}

/// Reads `name` (a path, or `-` for standard input), decompressing gzip (detected by its magic
/// bytes, not its name). Fails only when nothing at all could be read.
pub fn read_input(name: &str) -> io::Result<InputBytes> {
    let raw = if name == STDIN {
        let mut buf = Vec::new();
        io::stdin().lock().read_to_end(&mut buf)?;
        buf
    } else {
        let path = Path::new(name);
        if path.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "is a directory"));
        }
        std::fs::read(path)?
    };
    Ok(gunzip_if_needed(raw))
}

/// Decompresses `raw` if it is gzip (one or several members), keeping what was decompressed before
/// an error.
pub fn gunzip_if_needed(raw: Vec<u8>) -> InputBytes {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return InputBytes { bytes: raw, compressed_len: None, problem: None };
    }
    let mut bytes = Vec::with_capacity(raw.len().saturating_mul(6));
    let mut decoder = MultiGzDecoder::new(&raw[..]);
    let problem = match decoder.read_to_end(&mut bytes) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "gzip stream is damaged or truncated ({e}); kept the {} bytes decompressed before that",
            bytes.len()
        )),
    };
    InputBytes { bytes, compressed_len: Some(raw.len() as u64), problem }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn plain_gzip_and_concatenated_members() {
        assert_eq!(gunzip_if_needed(b"plain".to_vec()).bytes, b"plain");
        let mut two = gzip(b"one\n");
        two.extend(gzip(b"two\n"));
        let input = gunzip_if_needed(two);
        assert_eq!(input.bytes, b"one\ntwo\n");
        assert!(input.problem.is_none());
    }

    #[test]
    fn truncated_gzip_keeps_the_prefix_and_says_so() {
        let data: Vec<u8> = (0..20_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let mut z = gzip(&data);
        z.truncate(z.len() / 2);
        let input = gunzip_if_needed(z);
        assert!(input.problem.as_deref().unwrap().contains("truncated"));
        assert!(!input.bytes.is_empty() && data.starts_with(&input.bytes));
    }
}
