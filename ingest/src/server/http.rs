//! The HTTP surface: routes, handlers and the JSON error bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use kubestep_schemas::session::validate_session_name;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::auth::{Credentials, require_credentials};
use super::metrics::{BatchOutcome, Metrics};
use super::sessions::{ActiveSession, StartError};
use super::storage::{AppendError, Storage};
use crate::layout::Layout;
use crate::normalize::NormalizeConfig;
use crate::prepare::{PreparedBatch, prepare};

/// Seconds a client is asked to wait after a 503 because the queue is full.
const RETRY_AFTER_BUSY: &str = "1";
/// Seconds a client is asked to wait after a 503 because the disk is full.
const RETRY_AFTER_FULL: &str = "10";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(super) inner: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) normalize: NormalizeConfig,
    pub(super) storage: Storage,
    pub(super) sessions: Arc<ActiveSession>,
    pub(super) metrics: Arc<Metrics>,
    /// One permit per KiB of body waiting for the WAL.
    pub(super) queue: Arc<Semaphore>,
    pub(super) queue_permits: u32,
    pub(super) max_body: usize,
    /// Time a client has to send a whole body.
    pub(super) body_timeout: std::time::Duration,
    pub(super) layout: Layout,
    pub(super) shutting_down: AtomicBool,
}

/// The service's routes. Everything that stores or changes something, and the read-only pages
/// under `/ui` (when the binary provides them), is behind `credentials`; probes and metrics are not.
pub fn router(
    state: AppState,
    credentials: Arc<Credentials>,
    metrics: Arc<Metrics>,
    ui: Option<axum::Router>,
    tls: bool,
) -> axum::Router {
    let mut protected = axum::Router::new()
        .route("/audit", post(post_audit))
        .route("/sessions", get(list_sessions).post(start_session))
        .route("/sessions/{name}/stop", post(stop_session));
    let signs_in = ui.is_some() && !credentials.tokens.is_empty();
    if let Some(ui) = ui {
        protected = protected.nest_service("/ui", ui);
    }
    let protected = protected
        .route_layer(axum::middleware::from_fn_with_state((credentials.clone(), metrics), require_credentials));
    let mut public = axum::Router::new();
    if signs_in {
        public = public.route("/ui/login", get(login_form).post(move |body| login(credentials, tls, body)));
    }
    axum::Router::new()
        .merge(protected)
        .merge(public)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(self::metrics))
        .with_state(state)
}

/// `GET /ui/login`: a form asking for a token, for browsers (they cannot send a bearer header).
async fn login_form() -> Response {
    axum::response::Html(LOGIN_PAGE).into_response()
}

const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>KubeStep: sign in</title></head>
<body style="font: 14px system-ui, sans-serif; margin: 40px">
<h1 style="font-size: 18px">KubeStep</h1>
<form method="post" action="/ui/login">
<label>Token (a line of the recorder's <code>--token-file</code>)<br>
<input type="password" name="token" autofocus size="40"></label>
<button type="submit">Sign in</button>
</form></body></html>
"#;

/// `POST /ui/login` (`token=...`, form-encoded): a valid token is stored in a cookie that only the
/// read-only `/ui` pages accept, and the browser goes on to `/ui/`.
async fn login(credentials: Arc<Credentials>, tls: bool, body: Bytes) -> Response {
    let token = std::str::from_utf8(&body)
        .ok()
        .and_then(|form| form.split('&').find_map(|pair| pair.strip_prefix("token=")))
        .and_then(form_decode);
    match token {
        Some(token) if credentials.accepts_token(token.trim()) => {
            // Behind TLS the cookie is only ever sent over TLS.
            let cookie = super::auth::ui_cookie(token.trim(), tls);
            let mut response = (StatusCode::SEE_OTHER, "signed in\n").into_response();
            response.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/ui/"));
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            axum::response::Html("<p>Wrong token. <a href=\"/ui/login\">Try again</a></p>\n"),
        )
            .into_response(),
    }
}

/// Decodes one `application/x-www-form-urlencoded` value.
fn form_decode(value: &str) -> Option<String> {
    let mut out = Vec::with_capacity(value.len());
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn unavailable(message: impl Into<String>, retry_after: &'static str) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
    response
}

async fn readyz(State(state): State<AppState>) -> Response {
    let s = &state.inner;
    if s.shutting_down.load(Relaxed) {
        return unavailable("shutting down", RETRY_AFTER_BUSY);
    }
    if s.storage.was_recently_full() {
        return unavailable("storage is full", RETRY_AFTER_FULL);
    }
    "ready\n".into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.inner.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `POST /audit`: the webhook.
async fn post_audit(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let span = tracing::info_span!("post_audit", bytes = tracing::field::Empty, records = tracing::field::Empty);
    let s = state.inner.clone();
    let (outcome, response) = receive_batch(&s, &headers, body).instrument(span).await;
    s.metrics.batch(outcome);
    response
}

async fn receive_batch(s: &Shared, headers: &HeaderMap, body: Body) -> (BatchOutcome, Response) {
    let busy = || (BatchOutcome::Unavailable, unavailable("too many batches are waiting; retry", RETRY_AFTER_BUSY));
    let too_large = || {
        let message = format!("the body is larger than the limit of {} bytes (--max-body)", s.max_body);
        (BatchOutcome::TooLarge, error(StatusCode::PAYLOAD_TOO_LARGE, message))
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let mut reservation = Reservation { queue: s.queue.clone(), permit: None, kib: 0, max_kib: s.queue_permits };
    let read = read_body(body, s.max_body, declared, &mut reservation);
    let body = match tokio::time::timeout(s.body_timeout, read).await {
        Err(_) => {
            let message = format!("the body did not arrive within {:?} (--client-timeout)", s.body_timeout);
            return (BatchOutcome::TimedOut, error(StatusCode::REQUEST_TIMEOUT, message));
        }
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::Busy)) => return busy(),
        Ok(Err(BodyError::Read(e))) => {
            return (BatchOutcome::Malformed, error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")));
        }
    };
    let received = Instant::now();
    tracing::Span::current().record("bytes", body.len());
    s.metrics.bytes_received.fetch_add(body.len() as u64, Relaxed);
    if s.shutting_down.load(Relaxed) {
        return (BatchOutcome::Unavailable, unavailable("shutting down", RETRY_AFTER_BUSY));
    }
    if s.storage.is_full() {
        return (BatchOutcome::Unavailable, unavailable("storage is full; retry later", RETRY_AFTER_FULL));
    }
    // A body takes its bytes plus about as much again once decoded into records.
    if !reservation.grow_to(body.len().saturating_mul(2)) {
        return busy();
    }
    s.metrics.queue_bytes.fetch_add(body.len() as u64, Relaxed);
    let result = prepare_and_append(s, body.clone(), reservation.permit.take()).await;
    s.metrics.queue_bytes.fetch_sub(body.len() as u64, Relaxed);
    match result {
        Ok(prepared_summary) => {
            s.metrics.ack.observe(received.elapsed());
            s.metrics.events_received.fetch_add(prepared_summary.events, Relaxed);
            tracing::Span::current().record("records", prepared_summary.records);
            (BatchOutcome::Accepted, Json(prepared_summary).into_response())
        }
        Err(response) => response,
    }
}

/// What a 200 answer says about the batch.
#[derive(Debug, serde::Serialize)]
struct Accepted {
    events: u64,
    records: usize,
    rejected: usize,
}

async fn prepare_and_append(
    s: &Shared,
    body: Bytes,
    budget: Option<OwnedSemaphorePermit>,
) -> Result<Accepted, (BatchOutcome, Response)> {
    let normalize = s.normalize.clone();
    let for_prepare = body.clone();
    let started = Instant::now();
    let prepared = tokio::task::spawn_blocking(move || prepare("POST /audit", &for_prepare, &normalize))
        .await
        .map_err(|e| internal(format!("preparing the batch: {e}")))?
        .map_err(|e| internal(format!("preparing the batch: {e}")))?;
    s.metrics.prepare.observe(started.elapsed());
    if let Some(response) = refuse_malformed(&body, &prepared) {
        return Err((BatchOutcome::Malformed, response));
    }
    let summary =
        Accepted { events: prepared.events_read, records: prepared.num_records(), rejected: prepared.rejections.len() };
    let session = s.sessions.current();
    match s.storage.append(session, body, prepared, budget).await {
        Ok(()) => Ok(summary),
        Err(e @ AppendError::Full(_)) => Err((BatchOutcome::Unavailable, unavailable(e.to_string(), RETRY_AFTER_FULL))),
        Err(e @ (AppendError::Busy | AppendError::ShuttingDown)) => {
            Err((BatchOutcome::Unavailable, unavailable(e.to_string(), RETRY_AFTER_BUSY)))
        }
        Err(e @ AppendError::Io(_)) => Err((BatchOutcome::Unavailable, unavailable(e.to_string(), RETRY_AFTER_FULL))),
    }
}

fn internal(message: String) -> (BatchOutcome, Response) {
    (BatchOutcome::Unavailable, error(StatusCode::INTERNAL_SERVER_ERROR, message))
}

/// A body that is not JSON, or whose top level is not events, is refused as a whole with 400 and
/// the byte offset of the problem; nothing of it is stored, so the client can fix it and resend.
fn refuse_malformed(body: &[u8], prepared: &PreparedBatch) -> Option<Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(error(StatusCode::BAD_REQUEST, "the body is empty; expected an audit.k8s.io/v1 EventList"));
    }
    let rejection = prepared.first_malformed()?;
    let syntax = serde_json::from_slice::<serde::de::IgnoredAny>(body).err().filter(|e| e.is_syntax() || e.is_eof());
    let (message, offset) = match syntax {
        Some(e) => {
            // At the end of input serde_json points at the last byte; the problem is the missing rest.
            let offset = if e.is_eof() { body.len() } else { byte_offset(body, e.line(), e.column()) };
            (format!("malformed JSON at byte {offset} (line {}, column {}): {e}", e.line(), e.column()), Some(offset))
        }
        None => (format!("not audit events: {}", rejection.reason), None),
    };
    let mut body = json!({ "error": message });
    if let Some(offset) = offset {
        body["offset"] = json!(offset);
    }
    Some((StatusCode::BAD_REQUEST, Json(body)).into_response())
}

/// The byte offset of serde_json's 1-based line and column (columns count bytes).
fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let line_start = match line {
        0 | 1 => 0,
        _ => memchr::memchr_iter(b'\n', body).nth(line - 2).map_or(body.len(), |i| i + 1),
    };
    (line_start + column.saturating_sub(1)).min(body.len())
}

/// The share of the queue budget (`--max-queue`, one permit per KiB) one request holds, from the
/// first bytes of its body to its acknowledgement. It grows as the body arrives, so a client that
/// announces or trickles a large body holds only what it has sent, and the sum over every request
/// stays within the budget: beyond it, 503.
struct Reservation {
    queue: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    kib: u32,
    /// The whole budget: one request never asks for more, so it can always be served alone.
    max_kib: u32,
}

impl Reservation {
    /// Gives back everything held.
    fn release(&mut self) {
        self.permit = None;
        self.kib = 0;
    }

    /// Holds enough for `bytes`; false when the budget has not that much left.
    fn grow_to(&mut self, bytes: usize) -> bool {
        let want = u32::try_from(bytes / 1024 + 1).unwrap_or(u32::MAX).min(self.max_kib);
        if want <= self.kib {
            return true;
        }
        let Ok(more) = self.queue.clone().try_acquire_many_owned(want - self.kib) else {
            return false;
        };
        match &mut self.permit {
            Some(held) => held.merge(more),
            None => self.permit = Some(more),
        }
        self.kib = want;
        true
    }
}

/// Why a body was not read.
enum BodyError {
    /// Over the limit.
    TooLarge,
    /// The queue budget cannot hold it now.
    Busy,
    /// The connection failed or the client gave up.
    Read(axum::Error),
}

/// A body larger than this many times the limit is not drained before the 413: the connection is
/// closed on the client instead.
const DRAIN_FACTOR: usize = 4;

/// Reads the body, up to `limit` bytes, reserving budget as it arrives. A larger body, or one the
/// budget cannot hold, is still read to its end (and thrown away) when it is not absurdly large, so
/// that the client, which sends the whole body before it reads the answer, receives the 413 or 503
/// instead of a reset connection.
async fn read_body(
    body: Body,
    limit: usize,
    declared: Option<usize>,
    reservation: &mut Reservation,
) -> Result<Bytes, BodyError> {
    let drain_limit = limit.saturating_mul(DRAIN_FACTOR);
    if declared.is_some_and(|n| n > drain_limit) {
        return Err(BodyError::TooLarge);
    }
    // When the budget cannot hold the body, it is still read to its end (and thrown away), so that
    // the client reads a 503 with Retry-After instead of a reset connection; it costs no memory.
    let mut refused = false;
    let capacity = declared.unwrap_or(0).min(limit);
    if !reservation.grow_to(capacity) {
        refused = true;
        reservation.release();
    }
    let mut stream = body.into_data_stream();
    let mut buffer = Vec::with_capacity(if refused { 0 } else { capacity });
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        total += chunk.len();
        if total > drain_limit {
            return Err(BodyError::TooLarge);
        }
        if total <= limit && !refused {
            if reservation.grow_to(total) {
                buffer.extend_from_slice(&chunk);
            } else {
                refused = true;
                buffer = Vec::new();
                reservation.release();
            }
        }
    }
    if total > limit {
        return Err(BodyError::TooLarge);
    }
    if refused {
        return Err(BodyError::Busy);
    }
    Ok(Bytes::from(buffer))
}

#[derive(Deserialize)]
struct StartSession {
    name: String,
}

/// `POST /sessions {"name": ...}`: record every batch accepted from now on into that session.
async fn start_session(State(state): State<AppState>, body: Bytes) -> Response {
    let s = &state.inner;
    let request: StartSession = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("expected {{\"name\": \"SESSION\"}}: {e}")),
    };
    if let Err(e) = validate_session_name(&request.name) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    match s.sessions.start(&request.name).await {
        Ok(()) => {
            tracing::info!(session = %request.name, "session started");
            (StatusCode::CREATED, Json(json!({ "name": request.name, "active": true }))).into_response()
        }
        Err(e @ StartError::Busy(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /sessions/{name}/stop`: end the session and write its records to Parquet before answering.
async fn stop_session(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let s = &state.inner;
    match s.sessions.stop(&name).await {
        Ok(true) => {}
        Ok(false) => {
            let active = s.sessions.current();
            let message = match active {
                Some(active) => format!("session {name:?} is not being recorded (the active session is {active:?})"),
                None => format!("session {name:?} is not being recorded (no named session is active)"),
            };
            return error(StatusCode::NOT_FOUND, message);
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    match s.storage.flush_session(name.clone()).instrument(tracing::info_span!("stop_session", session = %name)).await {
        Ok(()) => {
            tracing::info!(session = %name, "session stopped and flushed");
            Json(json!({ "name": name, "active": false, "flushed": true })).into_response()
        }
        Err(e) => unavailable(
            format!("session {name:?} stopped, but its records could not be written yet ({e}); they are kept"),
            RETRY_AFTER_FULL,
        ),
    }
}

/// `GET /sessions`: the active session and every session with files.
async fn list_sessions(State(state): State<AppState>) -> Response {
    let s = &state.inner;
    let active = s.sessions.current();
    let mut names = match s.sessions.stored_sessions().await {
        Some(Ok(names)) => names,
        Some(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        None => s.layout.stored_sessions(),
    };
    if let Some(active) = &active
        && !names.iter().any(|n| n == active.as_ref())
    {
        names.push(active.to_string());
        names.sort();
    }
    let sessions: Vec<_> =
        names.iter().map(|n| json!({ "name": n, "active": active.as_deref() == Some(n.as_str()) })).collect();
    Json(json!({ "active": active.as_deref(), "sessions": sessions })).into_response()
}

#[cfg(test)]
mod tests {
    use super::byte_offset;

    #[test]
    fn offsets_count_bytes_across_lines() {
        let body = b"{\n  \"a\": x\n}";
        assert_eq!(byte_offset(body, 1, 1), 0);
        assert_eq!(byte_offset(body, 2, 8), 9);
        assert_eq!(body[9], b'x');
    }
}
