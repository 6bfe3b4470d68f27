//! `kubestep import FILE...`

use std::io::IsTerminal;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use kubestep_ingest::import::{STDIN, import_input};
use kubestep_ingest::{IngestConfig, IngestStats, Ingestor, random_writer_id};

use anyhow::Context;
use kubestep_schemas::location::RecordingLocation;

use super::recording::RecordingArgs;
use super::remote::Staging;
use crate::DataDir;

/// How many rejections the summary lists before pointing at the log.
const LISTED_REJECTIONS: usize = 20;

/// Arguments of `kubestep import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// Files to import; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    recording: RecordingArgs,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

/// Imports every input, then prints the summary; the exit code is 1 when anything was rejected.
pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let recording = args.recording.resolve()?;
    let config = IngestConfig {
        normalize: recording.normalize,
        session: recording.session,
        idle_gap_us: recording.idle_gap_us,
        write_in_background: true,
        ..IngestConfig::default()
    };
    // A recording in object storage is written through a local staging directory (see `remote`).
    let writer_id = random_writer_id();
    let (mut ingestor, staging) = match RecordingLocation::parse(&args.data.data)? {
        RecordingLocation::Local(dir) => (Ingestor::new(&dir, &writer_id, config), None),
        RecordingLocation::Remote(remote) => {
            let stored = crate::block_on(super::remote::stored_state(&args.data.data, true))
                .with_context(|| format!("reading what {} already holds", remote.url))?;
            let staging = Staging::create(&writer_id)?;
            let ingestor = Ingestor::new(staging.dir(), &writer_id, config).with_stored_elsewhere(stored);
            (ingestor, Some((staging, remote)))
        }
    };

    let total: u64 = args
        .files
        .iter()
        .filter(|f| f.as_str() != STDIN)
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = if !args.quiet && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut done_bytes = 0u64;
    let mut stopped = None;
    for name in &args.files {
        bar.set_message(name.clone());
        let start = done_bytes;
        let mut consumed = 0;
        let mut progress = |n: u64| {
            consumed = n;
            bar.set_position(start + n);
        };
        if let Err(e) = import_input(&mut ingestor, name, &mut progress) {
            stopped = Some(anyhow::Error::new(e).context(format!("importing {name}: storage failed")));
            break;
        }
        done_bytes += consumed;
    }
    // Whatever stopped the run, what was accepted is written out (and uploaded) before reporting.
    let rejected_log = match &staging {
        Some((dir, remote)) => match ingestor.rejected_log().strip_prefix(dir.dir()) {
            Ok(relative) => format!("{}/{}", remote.url, relative.to_string_lossy()),
            Err(_) => ingestor.rejected_log().display().to_string(),
        },
        None => ingestor.rejected_log().display().to_string(),
    };
    let staged_in = staging.as_ref().map(|(dir, _)| dir.dir().display().to_string());
    let finished = ingestor.finish();
    bar.finish_and_clear();
    let uploaded = match staging {
        Some((staging, remote)) if finished.is_ok() => staging.finish(&remote).map(drop),
        _ => Ok(()),
    };
    let (stats, _files) = match (stopped, finished) {
        (None, Ok(done)) => done,
        (Some(e), Ok((stats, _))) => {
            print_summary(&args, &stats, &rejected_log);
            uploaded?;
            return Err(e.context("the import stopped early; the records counted above as stored are kept"));
        }
        (_, Err(e)) => {
            let kept = match staged_in {
                Some(dir) => format!("files written before this point are kept in {dir} (not uploaded)"),
                None => "files written before this point are kept".to_owned(),
            };
            return Err(anyhow::Error::new(e).context(format!("writing the imported records failed; {kept}")));
        }
    };
    uploaded?;
    print_summary(&args, &stats, &rejected_log);
    Ok(if stats.rejected > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn print_summary(args: &ImportArgs, stats: &IngestStats, rejected_log: &str) {
    let n = args.files.len();
    println!("imported {n} input{} into {}", if n == 1 { "" } else { "s" }, args.data.data.display());
    println!("  events read       {:>9}", stats.events_read);
    let sessions = match stats.sessions.len() {
        0 => String::new(),
        1 => format!(", session {}", stats.sessions[0]),
        2 | 3 => format!(", sessions {}", stats.sessions.join(", ")),
        k => format!(", {k} sessions {} .. {}", stats.sessions[0], stats.sessions[k - 1]),
    };
    println!(
        "  records stored    {:>9}  ({} file{}, {} bytes{})",
        stats.records_stored,
        stats.files_written,
        if stats.files_written == 1 { "" } else { "s" },
        stats.bytes_written,
        sessions
    );
    println!("  duplicates        {:>9}", stats.duplicates);
    let dropped: u64 = stats.dropped_by_stage.values().sum();
    let by_stage: Vec<String> = stats.dropped_by_stage.iter().map(|(s, c)| format!("{s} {c}")).collect();
    if by_stage.is_empty() {
        println!("  dropped by stage  {dropped:>9}");
    } else {
        println!("  dropped by stage  {dropped:>9}  ({})", by_stage.join(", "));
    }
    println!("  rejected          {:>9}", stats.rejected);
    if stats.rejected > 0 {
        println!("rejected:");
        for rejection in stats.rejections.iter().take(LISTED_REJECTIONS) {
            println!("  {rejection}");
        }
        let listed = stats.rejections.len().min(LISTED_REJECTIONS) as u64;
        if stats.rejected > listed {
            println!("  ... and {} more", stats.rejected - listed);
        }
        println!("every rejection, with the text that was rejected: {rejected_log}");
    }
}
