//! `kubestep report SESSION`: the session as one self-contained HTML page (timeline, findings,
//! chains, diffs) that opens from disk with no network.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use kubestep_query::QueryError;
use kubestep_query::context::ensure_session;
use kubestep_query::report::{ReportOptions, SessionReport, session_report};
use tracing::Instrument;

use kubestep_query::TextColumns;

use crate::{DataDir, block_on, open};

const PAGE_CSS: &str = include_str!("../report/page.css");
const PAGE_JS: &str = include_str!("../report/page.js");

/// No request may leave the page: scripts and styles only inline, nothing else from anywhere.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:";

/// Arguments of `kubestep report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The session.
    #[arg(value_name = "SESSION")]
    session: String,
    #[command(flatten)]
    data: DataDir,
    /// Where to write the page.
    #[arg(short, long, value_name = "FILE", default_value = "report.html")]
    output: PathBuf,
    /// At most this many operations are drawn one by one (beyond it: writes and failures, and
    /// counts per time bucket for the rest).
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    max_marks: usize,
}

/// Builds the report and writes the page.
pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let options = ReportOptions { max_marks: args.max_marks.max(1), ..ReportOptions::default() };
    let report = block_on(async {
        let ctx = open(&args.data, TextColumns::AsDocumented).await?;
        ensure_session(&ctx, &args.data.data, &args.session).await?;
        Ok(session_report(&ctx, &args.session, &options).await?)
    })?;
    let page = render_html(&report, None)?;
    write_atomically(&args.output, page.as_bytes())?;
    println!(
        "wrote {} ({} bytes): session {}, {} operations, {} actors, {} drawn one by one",
        args.output.display(),
        page.len(),
        report.session_id,
        report.total_operations,
        report.lanes.len(),
        report.marks.index.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The page: markup, the inlined style and script, and the report as JSON in a data block. With
/// `refresh`, the browser loads the page again after that many seconds (a live session).
pub(crate) fn render_html(report: &SessionReport, refresh: Option<u32>) -> anyhow::Result<String> {
    // `<` never appears raw in the data block, so no string in it can close the script element.
    let data = serde_json::to_string(report).context("encoding the report")?.replace('<', "\\u003c");
    let title = escape(&format!("KubeStep: session {}", report.session_id));
    let summary = escape(&format!(
        "{} operations by {} actors from {} over {:.1} s{}",
        report.total_operations,
        report.lanes.len(),
        report.first_at,
        report.span_us as f64 / 1e6,
        if report.marks_complete {
            String::new()
        } else {
            "; reads that succeeded are shown as counts, writes as an even sample".to_owned()
        }
    ));
    let refresh = refresh_meta(refresh);
    Ok(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">{refresh}
<title>{title}</title>
<style>
{PAGE_CSS}</style>
</head>
<body>
<header><h1>{title}</h1><div class="summary">{summary}</div></header>
<main>
<div class="toolbar">
  <button id="reset" type="button">Whole session</button>
  <span class="muted">wheel: zoom, drag: pan, click: details</span>
  <span class="legend"><span><i style="background:#1b7f3a"></i>create</span><span><i style="background:#2e6bd6"></i>update</span><span><i style="background:#7b4fd6"></i>patch</span><span><i style="background:#d1452b"></i>delete</span><span><i style="background:#9aa5b1"></i>get/list/watch</span><span><i style="border:2px solid #c62828"></i>failed</span></span>
</div>
<div id="timeline"><div id="labels"></div><div id="plot"><canvas id="marks"></canvas><svg id="overlay" xmlns="http://www.w3.org/2000/svg"></svg></div></div>
<div id="axis"></div>
<div class="columns">
<section><h2>Findings</h2><ul id="findings" class="findings"></ul></section>
<section><h2>Selected operation</h2><div id="details"><p class="muted">Click an operation on the timeline.</p></div></section>
<section><h2>Slowest calls</h2><table class="list"><tbody id="slow"></tbody></table></section>
<section><h2>Errors by status and reason</h2><table class="list"><tbody id="errors"></tbody></table></section>
</div>
</main>
<script id="report-data" type="application/json">{data}</script>
<script>
{PAGE_JS}</script>
</body>
</html>
"#
    ))
}

/// Text safe inside HTML elements and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so that a reader never
/// sees half a page.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn refresh_meta(seconds: Option<u32>) -> String {
    seconds.map(|s| format!("\n<meta http-equiv=\"refresh\" content=\"{s}\">")).unwrap_or_default()
}

/// Live pages reload this often, so a session being recorded shows the files that landed since.
const LIVE_REFRESH_SECONDS: u32 = 15;

/// A session whose last operation is this recent (by the clock of this machine) may still grow.
const LIVE_WITHIN_US: i64 = 10 * 60 * 1_000_000;

fn is_live(report: &SessionReport) -> bool {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    now_us.saturating_sub(report.start_us.saturating_add(report.span_us)) < LIVE_WITHIN_US
}

/// The read-only pages `kubestep serve` offers under `/ui` (behind its authentication): the list of
/// sessions, and each session's report, built from the files on disk at every request.
pub(crate) fn ui_router(data: PathBuf) -> axum::Router {
    let state = Arc::new(UiState {
        data,
        building: tokio::sync::Semaphore::new(1),
        finished: std::sync::Mutex::new(FinishedPages::default()),
    });
    axum::Router::new()
        .route("/", axum::routing::get(ui_sessions))
        .route("/{session}", axum::routing::get(ui_session))
        .with_state(state)
}

/// What the `/ui` pages read, and the one report built at a time: a report is a full analysis,
/// and the service's first job is acknowledging the webhook.
struct UiState {
    data: PathBuf,
    building: tokio::sync::Semaphore,
    /// Pages of finished sessions; only touched while holding a `building` permit.
    finished: std::sync::Mutex<FinishedPages>,
}

/// At most this many bytes of finished sessions' pages are kept (a 1M-operation page is ~7 MB).
const FINISHED_PAGES_BYTES: usize = 32 << 20;

/// The pages of sessions that are no longer live, each valid while the session's files stay the
/// same (a compaction or a late import changes them and the page is built again). Live sessions
/// are never cached: their files change at every flush.
#[derive(Default)]
struct FinishedPages {
    /// Oldest first.
    pages: Vec<FinishedPage>,
}

struct FinishedPage {
    session: String,
    files: SessionFiles,
    html: Bytes,
}

/// Every file of a session with its size and modification time: equal fingerprints, equal pages.
type SessionFiles = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

impl FinishedPages {
    fn get(&self, session: &str, files: &SessionFiles) -> Option<Bytes> {
        self.pages.iter().find(|p| p.session == session && &p.files == files).map(|p| p.html.clone())
    }

    fn insert(&mut self, session: &str, files: SessionFiles, html: Bytes) {
        self.pages.retain(|p| p.session != session);
        self.pages.push(FinishedPage { session: session.to_owned(), files, html });
        let mut total: usize = self.pages.iter().map(|p| p.html.len()).sum();
        while total > FINISHED_PAGES_BYTES && self.pages.len() > 1 {
            total -= self.pages.remove(0).html.len();
        }
        if total > FINISHED_PAGES_BYTES {
            self.pages.clear();
        }
    }
}

/// The files of `session` under `data`, sorted; an unreadable directory lists what it can (the
/// page is then built again next time, which is always correct).
fn session_files(data: &Path, session: &str) -> SessionFiles {
    let mut files = SessionFiles::new();
    let dir = kubestep_ingest::layout::Layout::new(data).session_dir(session);
    let Ok(partitions) = std::fs::read_dir(dir) else { return files };
    for partition in partitions.flatten() {
        let Ok(entries) = std::fs::read_dir(partition.path()) else { continue };
        for entry in entries.flatten() {
            let meta = entry.metadata().ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            files.push((entry.path(), len, meta.and_then(|m| m.modified().ok())));
        }
    }
    files.sort();
    files
}

async fn ui_sessions(State(ui): State<Arc<UiState>>) -> Response {
    let data = &ui.data;
    let listed = async {
        let ctx = kubestep_query::open_recording(data).await?;
        kubestep_query::sessions::sessions(&ctx).await
    };
    let rows = match listed.instrument(tracing::info_span!("ui_sessions")).await {
        Ok(sessions) => sessions
            .iter()
            .map(|s| {
                format!(
                    "<tr><td><a href=\"/ui/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&s.first_at),
                    escape(&s.last_at),
                    s.operations,
                    s.actors,
                    s.errors,
                    id = escape(&s.session_id)
                )
            })
            .collect::<String>(),
        Err(QueryError::NoRecording { .. }) => "<tr><td colspan=\"6\">nothing recorded yet</td></tr>".to_owned(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the recording: {e}\n")).into_response(),
    };
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">{refresh}
<title>KubeStep sessions</title><style>
{PAGE_CSS}</style></head>
<body><header><h1>KubeStep sessions</h1><div class="summary">{}</div></header>
<main><table class="list" id="sessions"><tr><th>session</th><th>first</th><th>last</th><th>operations</th><th>actors</th><th>errors</th></tr>
{rows}</table></main></body></html>
"#,
        escape(&data.display().to_string()),
        refresh = refresh_meta(Some(LIVE_REFRESH_SECONDS)),
    ))
    .into_response()
}

async fn ui_session(
    State(ui): State<Arc<UiState>>,
    axum::extract::Path(session): axum::extract::Path<String>,
) -> Response {
    let Ok(_permit) = ui.building.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let data = &ui.data;
    let built = async {
        let ctx = kubestep_query::open_recording(data).await?;
        ensure_session(&ctx, data, &session).await?;
        let files = session_files(data, &session);
        if let Some(page) = ui.finished.lock().ok().and_then(|pages| pages.get(&session, &files)) {
            tracing::debug!("finished session's page from the cache");
            return Ok(Ok(page));
        }
        let report = session_report(&ctx, &session, &ReportOptions::default()).await?;
        let live = is_live(&report);
        Ok(render_html(&report, live.then_some(LIVE_REFRESH_SECONDS)).map(|page| {
            let page = Bytes::from(page);
            // No local files (a recording in object storage): nothing to tell a changed session
            // by, so its page is not kept.
            if !live
                && !files.is_empty()
                && let Ok(mut pages) = ui.finished.lock()
            {
                pages.insert(&session, files, page.clone());
            }
            page
        }))
    };
    match built.instrument(tracing::info_span!("ui_session", session = %session)).await {
        Ok(Ok(page)) => Html(page).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
        Err(e @ (QueryError::UnknownSession { .. } | QueryError::NoRecording { .. })) => {
            (StatusCode::NOT_FOUND, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("building the report: {e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_finished_page_is_served_until_the_sessions_files_change() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = kubestep_ingest::layout::Layout::new(tmp.path());
        write(&layout.partition_dir("s", "2024-05-01").join("w-000001.parquet"), b"one");
        write(&layout.partition_dir("other", "2024-05-01").join("w-000001.parquet"), b"other");
        let files = session_files(tmp.path(), "s");
        assert_eq!(files.len(), 1, "only the session's own files: {files:?}");

        let mut pages = FinishedPages::default();
        pages.insert("s", files.clone(), Bytes::from_static(b"page of s"));
        assert_eq!(pages.get("s", &files).as_deref(), Some(&b"page of s"[..]));
        assert!(pages.get("other", &files).is_none(), "pages are per session");

        // A compaction or a late import changes the files: the page is built again.
        write(&layout.partition_dir("s", "2024-05-02").join("w-000002.parquet"), b"two");
        let changed = session_files(tmp.path(), "s");
        assert_eq!(changed.len(), 2);
        assert!(pages.get("s", &changed).is_none());
        write(&layout.partition_dir("s", "2024-05-01").join("w-000001.parquet"), b"one, rewritten");
        assert!(pages.get("s", &session_files(tmp.path(), "s")).is_none(), "a rewritten file changes the page");
    }

    #[test]
    fn finished_pages_stay_within_their_byte_budget_oldest_out_first() {
        let mut pages = FinishedPages::default();
        let big = Bytes::from(vec![b'x'; FINISHED_PAGES_BYTES / 2]);
        pages.insert("a", SessionFiles::new(), big.clone());
        pages.insert("b", SessionFiles::new(), big.clone());
        assert!(pages.get("a", &SessionFiles::new()).is_some() && pages.get("b", &SessionFiles::new()).is_some());
        pages.insert("c", SessionFiles::new(), big.clone());
        assert!(pages.get("a", &SessionFiles::new()).is_none(), "the oldest page left");
        assert!(pages.get("b", &SessionFiles::new()).is_some() && pages.get("c", &SessionFiles::new()).is_some());
        pages.insert("huge", SessionFiles::new(), Bytes::from(vec![b'x'; FINISHED_PAGES_BYTES + 1]));
        assert!(pages.pages.is_empty(), "a page larger than the budget is not kept");
        pages.insert("b", SessionFiles::new(), Bytes::from_static(b"new b"));
        pages.insert("b", SessionFiles::new(), Bytes::from_static(b"newer b"));
        assert_eq!(pages.pages.len(), 1, "one page per session");
    }
}
