//! Who may talk to the service: TLS (rustls), client certificates and bearer tokens, exactly what
//! the API server's webhook kubeconfig can present (`client-certificate`/`client-key`, `token` or
//! `tokenFile`).
//!
//! Client certificates are checked by rustls during the handshake. When tokens are configured too,
//! a certificate is optional at the handshake and the request must then carry a valid token; when
//! only a client CA is configured, a connection without a valid certificate never gets past the
//! handshake. Probes (`/healthz`, `/readyz`) and `/metrics` stay open; everything that stores or
//! changes something requires credentials.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::metrics::{BatchOutcome, Metrics};

/// Completed handshakes waiting for the HTTP server to pick them up.
const ACCEPT_QUEUE: usize = 128;

/// Paths of the TLS material.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to (PEM), if clients authenticate that way.
    pub client_ca: Option<PathBuf>,
}

/// Why the security settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {reason}")]
pub struct AuthSetupError {
    what: &'static str,
    path: PathBuf,
    reason: String,
}

fn setup_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(String) -> AuthSetupError + 'p {
    move |reason| AuthSetupError { what, path: path.to_owned(), reason }
}

/// The rustls configuration for `files`; `tokens_too` makes the client certificate optional.
pub fn server_config(files: &TlsFiles, tokens_too: bool) -> Result<Arc<ServerConfig>, AuthSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert, "reading the certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| setup_err("reading the private key", &files.key)(e.to_string()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup_err("configuring TLS for", &files.cert)(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca, "reading the client CA")? {
                roots.add(cert).map_err(|e| setup_err("loading the client CA", ca)(e.to_string()))?;
            }
            let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if tokens_too {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| setup_err("loading the client CA", ca)(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| setup_err("using the certificate and key", &files.cert)(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, AuthSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| setup_err(what, path)(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup_err(what, path)(e.to_string()))?;
    if certs.is_empty() {
        return Err(setup_err(what, path)("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// Reads a token file: one token per line; blank lines and `#` comments are ignored.
pub fn read_tokens(path: &Path) -> Result<Vec<String>, AuthSetupError> {
    let text = fs::read_to_string(path).map_err(|e| setup_err("reading the token file", path)(e.to_string()))?;
    let tokens: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    if tokens.is_empty() {
        return Err(setup_err("reading the token file", path)("it holds no token".into()));
    }
    Ok(tokens)
}

/// The peer of a connection, as handlers see it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Remote address.
    pub addr: SocketAddr,
    /// Whether it presented a client certificate that rustls verified against the client CA.
    pub verified_client_cert: bool,
}

/// What a request must present.
#[derive(Debug, Default)]
pub struct Credentials {
    /// Accepted bearer tokens.
    pub tokens: Vec<String>,
    /// Whether a verified client certificate is enough.
    pub client_certs: bool,
}

impl Credentials {
    /// Whether anything is required at all.
    pub fn required(&self) -> bool {
        self.client_certs || !self.tokens.is_empty()
    }

    fn admits(&self, peer: &Peer, authorization: Option<&HeaderValue>) -> bool {
        if !self.required() || (self.client_certs && peer.verified_client_cert) {
            return true;
        }
        let Some(token) = authorization.and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        self.accepts_token(token.trim())
    }

    /// Whether `token` is one of the accepted tokens. Every token is compared in full, so timing
    /// says nothing about which one nearly matched.
    pub fn accepts_token(&self, token: &str) -> bool {
        self.tokens.iter().fold(false, |found, t| constant_time_eq(t.as_bytes(), token.as_bytes()) | found)
    }

    /// A browser cannot send a bearer header when it follows a link, so the `/ui` pages (read-only)
    /// also accept the token from the cookie that `POST /ui/login` sets. Nothing else does: the
    /// webhook and the session endpoints still need the header or a certificate.
    fn admits_ui_reader(&self, request: &Request) -> bool {
        let reading_ui = request.method() == axum::http::Method::GET
            && (request.uri().path() == "/ui" || request.uri().path().starts_with("/ui/"));
        reading_ui
            && request
                .headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().strip_prefix(UI_COOKIE).and_then(|v| v.strip_prefix('=')))
                .filter_map(decode_hex)
                .any(|token| self.accepts_token(&token))
    }
}

/// The cookie holding a `/ui` reader's token (hex-encoded, so any token fits in a cookie).
pub const UI_COOKIE: &str = "kubestep_token";

/// The `Set-Cookie` value that lets a browser read `/ui` with `token`.
pub fn ui_cookie(token: &str, secure: bool) -> String {
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    let secure = if secure { "; Secure" } else { "" };
    format!("{UI_COOKIE}={hex}; Path=/ui; HttpOnly; SameSite=Strict{secure}")
}

fn decode_hex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok());
    String::from_utf8(bytes.collect::<Option<Vec<u8>>>()?).ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: answers 401 to requests without valid credentials.
pub async fn require_credentials(
    State((credentials, metrics)): State<(Arc<Credentials>, Arc<Metrics>)>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    if credentials.admits(&peer, request.headers().get(header::AUTHORIZATION)) || credentials.admits_ui_reader(&request)
    {
        return next.run(request).await;
    }
    if request.uri().path() == "/audit" {
        metrics.batch(BatchOutcome::Unauthorized);
    }
    tracing::warn!(peer = %peer.addr, path = %request.uri().path(), "refused a request without valid credentials");
    if request.uri().path().starts_with("/ui") && !credentials.tokens.is_empty() {
        // A browser: say where to sign in.
        let page = "<!doctype html><meta charset=\"utf-8\"><title>KubeStep</title>\
            <p>Sign in with a token of the recorder's <code>--token-file</code>: <a href=\"/ui/login\">/ui/login</a></p>\n";
        return (StatusCode::UNAUTHORIZED, axum::response::Html(page)).into_response();
    }
    let body = axum::Json(serde_json::json!({
        "error": "authentication required: a client certificate signed by the configured CA, or a bearer token"
    }));
    let mut response = (StatusCode::UNAUTHORIZED, body).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Plain TCP; no client certificates.
pub struct PlainListener(pub TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = Listener::accept(&mut self.0).await;
        (io, Peer { addr, verified_client_cert: false })
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer { addr: self.0.local_addr()?, verified_client_cert: false })
    }
}

/// TLS over TCP. Handshakes run in their own tasks and are abandoned after `handshake_timeout`
/// (`--client-timeout`), so a slow or silent client holds up nobody else. At most `max_handshakes`
/// (`--max-connections`) run at once; connections beyond that are closed as they arrive, so a
/// flood of connections that never finish a handshake costs bounded memory.
pub struct TlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`.
    pub fn new(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        handshake_timeout: Duration,
        max_handshakes: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let mut tcp = tcp;
        let handshakes = Arc::new(tokio::sync::Semaphore::new(max_handshakes.max(1)));
        tokio::spawn(async move {
            loop {
                let (stream, addr) = Listener::accept(&mut tcp).await;
                if tx.is_closed() {
                    return;
                }
                let Ok(slot) = handshakes.clone().try_acquire_owned() else {
                    metrics.connections_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(peer = %addr, limit = max_handshakes, "too many TLS handshakes; closing this one");
                    drop(stream);
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let verified_client_cert =
                                tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                            let _ = tx.send((tls, Peer { addr, verified_client_cert })).await;
                        }
                        Ok(Err(e)) => tracing::info!(peer = %addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(peer = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, accepted })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer { addr: self.local, verified_client_cert: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_match_exactly() {
        let credentials = Credentials { tokens: vec!["s3cret".into(), "other".into()], client_certs: false };
        let peer = Peer { addr: SocketAddr::from(([127, 0, 0, 1], 1)), verified_client_cert: false };
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(credentials.admits(&peer, Some(&header("Bearer s3cret"))));
        assert!(credentials.admits(&peer, Some(&header("Bearer other"))));
        assert!(!credentials.admits(&peer, Some(&header("Bearer s3cre"))));
        assert!(!credentials.admits(&peer, Some(&header("s3cret"))));
        assert!(!credentials.admits(&peer, None));
        let cert_peer = Peer { verified_client_cert: true, ..peer };
        assert!(!credentials.admits(&cert_peer, None), "certificates were not enabled");
        assert!(Credentials::default().admits(&peer, None), "nothing required");
    }

    #[test]
    fn the_ui_cookie_admits_only_reads_of_the_ui() {
        let credentials = Credentials { tokens: vec!["s3cret; x".into()], client_certs: false };
        let cookie = ui_cookie("s3cret; x", false);
        let value = cookie.split(';').next().unwrap().to_owned();
        let request = |method: &str, path: &str, cookie: &str| {
            axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header(header::COOKIE, format!("theme=dark; {cookie}"))
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert!(credentials.admits_ui_reader(&request("GET", "/ui/", &value)));
        assert!(credentials.admits_ui_reader(&request("GET", "/ui/some-session", &value)));
        assert!(!credentials.admits_ui_reader(&request("POST", "/ui/some-session", &value)), "reads only");
        assert!(!credentials.admits_ui_reader(&request("GET", "/sessions", &value)), "the ui only");
        assert!(!credentials.admits_ui_reader(&request("GET", "/uix", &value)));
        assert!(!credentials.admits_ui_reader(&request("GET", "/ui/", "kubestep_token=736563726574")), "a wrong token");
        assert!(!credentials.admits_ui_reader(&request("GET", "/ui/", "kubestep_token=zz")));
    }
}
