//! Who may store events: TLS with client certificates and bearer tokens, as the API server's
//! webhook kubeconfig presents them. Certificates are generated here, per test.

mod common;
#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use server::*;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// A CA that signs server and client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), cert, key }
    }

    /// A leaf certificate and its key, as PEM.
    fn sign(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A client trusting `ca`, presenting `client` (cert, key) if given.
fn tls_agent(ca: &Ca, client: Option<&(String, String)>) -> ureq::Agent {
    let root = Certificate::from_pem(ca.pem.as_bytes()).unwrap();
    let mut tls = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&[root]));
    if let Some((cert, key)) = client {
        let cert = Certificate::from_pem(cert.as_bytes()).unwrap();
        let key = PrivateKey::from_pem(key.as_bytes()).unwrap();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(tls.build())
        .build()
        .into()
}

/// Posts a batch of `n` events named `prefix-*`; the status, or 0 when the connection failed.
fn post_batch(agent: &ureq::Agent, base: &str, prefix: &str, token: Option<&str>) -> u16 {
    let body = event_list(&(0..3).map(|n| synthetic_event(&format!("{prefix}-{n}"), n)).collect::<Vec<_>>());
    let mut request = agent.post(format!("{base}/audit"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    match request.send(&body[..]) {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    other_ca: Ca,
    client: (String, String),
    stranger: (String, String),
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("kubestep test CA");
    let other_ca = Ca::new("somebody else's CA");
    let (cert, key) = ca.sign(&["localhost", "127.0.0.1"]);
    let server_cert = write(dir.path(), "server.crt", &cert);
    let server_key = write(dir.path(), "server.key", &key);
    let client_ca = write(dir.path(), "ca.crt", &ca.pem);
    let client = ca.sign(&["kube-apiserver"]);
    let stranger = other_ca.sign(&["kube-apiserver"]);
    Pki { dir, ca, other_ca, client, stranger, server_cert, server_key, client_ca }
}

#[test]
fn client_certificates_from_the_ca_are_required() {
    let pki = pki();
    let data = pki.dir.path().join("data");
    let s = |p: &PathBuf| p.display().to_string();
    let mut server = TestServer::start(
        &data,
        &["--tls-cert", &s(&pki.server_cert), "--tls-key", &s(&pki.server_key), "--client-ca", &s(&pki.client_ca)],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    assert_eq!(post_batch(&tls_agent(&pki.ca, Some(&pki.client)), &server.base, "good", None), 200);
    assert_eq!(post_batch(&tls_agent(&pki.ca, None), &server.base, "nocert", None), 0, "handshake must fail");
    assert_eq!(post_batch(&tls_agent(&pki.ca, Some(&pki.stranger)), &server.base, "wrongca", None), 0);
    // A client that does not trust the server's CA does not talk to it either.
    assert_eq!(post_batch(&tls_agent(&pki.other_ca, Some(&pki.client)), &server.base, "untrusting", None), 0);
    // Plain HTTP to the TLS port stores nothing.
    assert_eq!(post(&format!("{}/audit", server.base.replace("https://", "http://")), b"{}").0, 0);

    // The session client speaks TLS with a client certificate too.
    let client_cert = write(pki.dir.path(), "client.crt", &pki.client.0);
    let client_key = write(pki.dir.path(), "client.key", &pki.client.1);
    let listed = kubestep(
        &[
            "session",
            "list",
            "--server",
            &server.base,
            "--ca-cert",
            &s(&pki.client_ca),
            "--client-cert",
            &s(&client_cert),
            "--client-key",
            &s(&client_key),
        ],
        None,
    );
    assert!(listed.status.success(), "{:?}", text(&listed));

    assert_eq!(server.terminate(), Some(0));
    let ids = rows(&data, "SELECT DISTINCT split_part(audit_id, '-', 1) FROM operations");
    assert_eq!(ids, vec![vec!["good".to_string()]]);
}

#[test]
fn with_tokens_too_either_credential_is_enough() {
    let pki = pki();
    let data = pki.dir.path().join("data");
    let tokens = write(pki.dir.path(), "tokens", "# webhook tokens\nsecret-token-1\n\nsecret-token-2\n");
    let s = |p: &PathBuf| p.display().to_string();
    let mut server = TestServer::start(
        &data,
        &[
            "--tls-cert",
            &s(&pki.server_cert),
            "--tls-key",
            &s(&pki.server_key),
            "--client-ca",
            &s(&pki.client_ca),
            "--token-file",
            &s(&tokens),
        ],
    );
    let anonymous = tls_agent(&pki.ca, None);
    assert_eq!(post_batch(&tls_agent(&pki.ca, Some(&pki.client)), &server.base, "cert", None), 200);
    assert_eq!(post_batch(&anonymous, &server.base, "token", Some("secret-token-2")), 200);
    assert_eq!(post_batch(&anonymous, &server.base, "wrongtoken", Some("secret-token-3")), 401);
    assert_eq!(post_batch(&anonymous, &server.base, "notoken", None), 401);
    // A certificate from another CA is refused at the handshake even though tokens are accepted.
    assert_eq!(post_batch(&tls_agent(&pki.ca, Some(&pki.stranger)), &server.base, "wrongca", Some("x")), 0);
    let (status, metrics) = {
        let mut r = anonymous.get(format!("{}/metrics", server.base)).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(status, 200, "probes and metrics stay open");
    assert!(metrics.contains("kubestep_batches_total{outcome=\"unauthorized\"} 2"), "{metrics}");
    assert_eq!(server.terminate(), Some(0));
    let mut ids: Vec<String> = rows(&data, "SELECT DISTINCT split_part(audit_id, '-', 1) FROM operations")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    ids.sort();
    assert_eq!(ids, ["cert", "token"]);
}

#[test]
fn tokens_alone_guard_plain_http_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = write(tmp.path(), "tokens", "t0ken\n");
    let data = tmp.path().join("data");
    let server = TestServer::start(&data, &["--token-file", &tokens.display().to_string()]);
    let body = event_list(&[synthetic_event("x-1", 1)]);
    assert_eq!(server.post("/audit", &body).0, 401);
    assert_eq!(server.post("/sessions", br#"{"name":"s"}"#).0, 401);
    let started = kubestep(
        &["session", "start", "s", "--server", &server.base, "--token-file", &tokens.display().to_string()],
        None,
    );
    assert!(started.status.success(), "{:?}", text(&started));
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn a_public_address_is_allowed_with_tls_and_authentication() {
    let pki = pki();
    let s = |p: &PathBuf| p.display().to_string();
    let output = kubestep(
        &[
            "serve",
            "-d",
            &s(&pki.dir.path().join("d")),
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            &s(&pki.server_cert),
            "--tls-key",
            &s(&pki.server_key),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1), "TLS without authentication is not enough");
    let mut server = TestServer::start_with_listen(
        &pki.dir.path().join("data"),
        "0.0.0.0:0",
        &["--tls-cert", &s(&pki.server_cert), "--tls-key", &s(&pki.server_key), "--client-ca", &s(&pki.client_ca)],
    );
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn broken_and_silent_tls_clients_harm_nobody() {
    let pki = pki();
    let s = |p: &PathBuf| p.display().to_string();
    let server = TestServer::start(
        &pki.dir.path().join("data"),
        &[
            "--tls-cert",
            &s(&pki.server_cert),
            "--tls-key",
            &s(&pki.server_key),
            "--client-ca",
            &s(&pki.client_ca),
            "--client-timeout",
            "1s",
        ],
    );
    let address = server.base.trim_start_matches("https://").to_owned();
    use std::io::{Read, Write};
    // Connections that never start the handshake, and connections that send garbage instead.
    let mut silent: Vec<std::net::TcpStream> =
        (0..200).map(|_| std::net::TcpStream::connect(&address).unwrap()).collect();
    let mut garbage: Vec<std::net::TcpStream> = (0..50)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(&address).unwrap();
            let junk: Vec<u8> = (0..512u32).map(|b| (b * 7 + i) as u8).collect();
            let _ = c.write_all(&junk);
            c
        })
        .collect();
    // A handshake that stops half-way: a ClientHello record header promising more than is sent.
    let mut half = std::net::TcpStream::connect(&address).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]).unwrap();
    silent.push(half);

    let agent = tls_agent(&pki.ca, Some(&pki.client));
    assert_eq!(post_batch(&agent, &server.base, "meanwhile", None), 200, "a good client is served meanwhile");
    // Every one of them is closed by the server, the silent ones once the timeout has passed.
    for c in silent.iter_mut().chain(garbage.iter_mut()) {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buffer = [0u8; 1024];
        loop {
            match c.read(&mut buffer) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    panic!("a broken TLS client was kept open")
                }
                Err(_) => break,
            }
        }
    }
    assert_eq!(post_batch(&agent, &server.base, "after", None), 200);
    let log = server.log();
    assert!(log.contains("TLS handshake timed out"), "{log}");
    assert!(log.contains("TLS handshake failed"), "{log}");
}

#[test]
fn tls_handshakes_beyond_the_limit_are_closed_at_once() {
    let pki = pki();
    let s = |p: &PathBuf| p.display().to_string();
    let server = TestServer::start(
        &pki.dir.path().join("data"),
        &[
            "--tls-cert",
            &s(&pki.server_cert),
            "--tls-key",
            &s(&pki.server_key),
            "--client-ca",
            &s(&pki.client_ca),
            "--max-connections",
            "10",
            "--client-timeout",
            "3s",
        ],
    );
    let address = server.base.trim_start_matches("https://").to_owned();
    use std::io::Read;
    // Ten connections that never start their handshake take every slot.
    let silent: Vec<std::net::TcpStream> = (0..10).map(|_| std::net::TcpStream::connect(&address).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // The eleventh is closed as it arrives, not after the timeout.
    let mut extra = std::net::TcpStream::connect(&address).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buffer = [0u8; 16];
    let started = std::time::Instant::now();
    let read = extra.read(&mut buffer);
    assert!(
        matches!(read, Ok(0)) || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the connection over the limit was kept: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(server.log().contains("too many TLS handshakes"), "{}", server.log());
    // Once the silent ones time out, a good client is served.
    std::thread::sleep(Duration::from_secs(4));
    let agent = tls_agent(&pki.ca, Some(&pki.client));
    assert_eq!(post_batch(&agent, &server.base, "after-flood", None), 200);
    drop(silent);
}

/// `GET url`, with a bearer token when given; the status and the body.
fn get_with(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = agent().get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    match request.call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn the_ui_shows_live_sessions_read_only_behind_the_same_authentication() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = write(tmp.path(), "tokens", "t0ken\n");
    let data = tmp.path().join("data");
    let server =
        TestServer::start(&data, &["--token-file", &tokens.display().to_string(), "--flush-interval", "200ms"]);
    let ui = format!("{}/ui/", server.base);
    assert_eq!(get_with(&ui, None).0, 401, "no token, no pages");
    assert_eq!(get_with(&ui, Some("wrong")).0, 401);
    let (status, empty) = get_with(&ui, Some("t0ken"));
    assert_eq!(status, 200, "{empty}");
    assert!(empty.contains("nothing recorded yet"), "{empty}");

    let events: Vec<String> = (0..20).map(|n| synthetic_event(&format!("ui-{n}"), n * 10)).collect();
    let mut request = agent().post(&format!("{}/audit", server.base));
    request = request.header("Authorization", "Bearer t0ken");
    assert_eq!(request.send(&event_list(&events)[..]).map(|r| r.status().as_u16()).unwrap_or(0), 200);

    // The page lists the session once its first file lands.
    let mut listing = String::new();
    for _ in 0..100 {
        listing = get_with(&ui, Some("t0ken")).1;
        if listing.contains("/ui/auto-") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let start = listing.find("/ui/auto-").unwrap_or_else(|| panic!("no session listed: {listing}"));
    let session: String = listing[start + 4..].chars().take_while(|c| *c != '"').collect();
    let (status, page) = get_with(&format!("{ui}{session}"), Some("t0ken"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"report-data\"") && page.contains("\"actor_id\":\"ns/ctl\""), "{page}");
    assert!(!page.contains("http-equiv=\"refresh\""), "a session that ended long ago does not reload");
    assert!(page.contains("default-src 'none'"), "and fetches nothing");
    assert_eq!(get_with(&format!("{ui}no-such-session"), Some("t0ken")).0, 404);
    let posted = agent().post(&format!("{ui}{session}")).header("Authorization", "Bearer t0ken").send(&b""[..]);
    assert_eq!(posted.map(|r| r.status().as_u16()).unwrap_or(0), 405, "the pages are read-only");

    // A session recording now reloads itself, so its page grows as files land.
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let live = format!(
        r#"{{"auditID":"live-1","stage":"ResponseComplete","verb":"get","requestURI":"/api/v1/pods","user":{{"username":"alice"}},"requestReceivedTimestamp":"{now}","stageTimestamp":"{now}"}}"#
    );
    let request = agent().post(&format!("{}/audit", server.base)).header("Authorization", "Bearer t0ken");
    assert_eq!(request.send(&event_list(&[live])[..]).map(|r| r.status().as_u16()).unwrap_or(0), 200);
    let mut live_session = None;
    for _ in 0..100 {
        let listing = get_with(&ui, Some("t0ken")).1;
        live_session = listing
            .match_indices("href=\"/ui/")
            .map(|(at, _)| listing[at + 10..].chars().take_while(|c| *c != '"').collect::<String>())
            .find(|s| *s != session);
        if live_session.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let live_session = live_session.expect("the live session is listed");
    let (status, live_page) = get_with(&format!("{ui}{live_session}"), Some("t0ken"));
    assert_eq!(status, 200);
    assert!(live_page.contains("http-equiv=\"refresh\""), "a live session's page reloads itself");

    // A browser cannot send the header: it signs in once and carries a cookie for /ui only.
    let (status, refused) = get_with(&ui, None);
    assert!(status == 401 && refused.contains("/ui/login"), "{refused}");
    let login = |form: &str| {
        let no_redirects: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
        let response = no_redirects
            .post(&format!("{}/ui/login", server.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(form.as_bytes())
            .expect("login answered");
        let cookie = response.headers().get("set-cookie").and_then(|v| v.to_str().ok()).map(str::to_owned);
        (response.status().as_u16(), cookie)
    };
    assert_eq!(login("token=wrong").0, 401);
    let (status, cookie) = login("token=t0ken");
    assert_eq!(status, 303);
    let cookie = cookie.expect("a cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("Path=/ui"), "{cookie}");
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    let with_cookie = |method: &str, path: &str| {
        let url = format!("{}{path}", server.base);
        let result = match method {
            "GET" => agent().get(&url).header("Cookie", &pair).call(),
            _ => agent().post(&url).header("Cookie", &pair).send(&event_list(&events)[..]),
        };
        result.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    assert_eq!(with_cookie("GET", "/ui/"), 200, "the cookie opens the pages");
    assert_eq!(with_cookie("GET", &format!("/ui/{session}")), 200);
    assert_eq!(with_cookie("POST", "/audit"), 401, "but stores nothing");
    assert_eq!(with_cookie("GET", "/sessions"), 401, "and reads nothing else");
}
