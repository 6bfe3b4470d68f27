//! `kubestep report` rendered in a real browser: Debian's headless Chromium (installed by
//! `.ci/run`; `KUBESTEP_CHROMIUM` names another binary) opens the page from disk, and the DOM it
//! leaves behind must show every actor's lane, the scenario's fight and chain, and the diff of a
//! selected write, with no request leaving the page.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// Hosts Chromium itself talks to whatever page it shows (clock sync, sign-in, component updates);
/// every other request through the proxy comes from the page.
const BROWSER_HOSTS: [&str; 4] =
    ["clients2.google.com", "www.google.com", "accounts.google.com", "redirector.gvt1.com"];

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBESTEP_CHROMIUM") {
        return PathBuf::from(path);
    }
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("no Chromium: install Debian's `chromium` package (as .ci/run does) or set KUBESTEP_CHROMIUM");
}

/// A proxy that answers nothing and remembers the first line of every request sent to it.
struct TrapProxy {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TrapProxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the trap proxy");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = [0u8; 512];
                let n = stream.read(&mut head).unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..n]).lines().next().unwrap_or("").to_owned();
                seen.lock().expect("requests").push(line);
            }
        });
        Self { port, requests }
    }

    /// Requests whose target is not one of Chromium's own services.
    fn page_requests(&self) -> Vec<String> {
        let requests = self.requests.lock().expect("requests").clone();
        requests
            .into_iter()
            .filter(|line| !line.is_empty() && !BROWSER_HOSTS.iter().any(|h| line.contains(h)))
            .collect()
    }
}

/// Runs headless Chromium on `url` with everything it fetches sent to `proxy`; returns stdout.
fn run_chromium(proxy: &TrapProxy, url: &str, extra: &[&str]) -> String {
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--no-first-run",
            &format!("--proxy-server=http://127.0.0.1:{}", proxy.port),
            "--proxy-bypass-list=<-loopback>",
            "--virtual-time-budget=5000",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("starting Chromium");
    assert!(output.status.success(), "Chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The values of attribute `name` on the elements whose opening tag contains `marker`.
fn attributes(dom: &str, marker: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in dom.match_indices(marker) {
        let start = dom[..at].rfind('<').unwrap_or(0);
        let end = at + dom[at..].find('>').unwrap_or(0);
        let tag = &dom[start..end];
        let key = format!("{name}=\"");
        if let Some(i) = tag.find(&key) {
            let rest = &tag[i + key.len()..];
            out.push(unescape(&rest[..rest.find('"').unwrap_or(rest.len())]));
        }
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&gt;", ">").replace("&lt;", "<").replace("&quot;", "\"").replace("&amp;", "&")
}

fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &dom[start..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}

#[test]
fn the_report_draws_lanes_fight_chain_and_diff_in_chromium_without_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, truth) = simulate(dir.path(), "mixed", "11", &["--events", "2500"]);
    let data = dir.path().join("data");
    assert!(import(&data, &[&log], &["--quiet"]).status.success());
    let session = rows(&data, "SELECT DISTINCT session_id FROM operations")[0][0].clone();
    let actors: BTreeSet<String> =
        rows(&data, "SELECT DISTINCT actor_id FROM operations").into_iter().map(|r| r[0].clone()).collect();

    let page = dir.path().join("report.html");
    let made =
        kubestep(&["report", &session, "-d", &data.display().to_string(), "-o", &page.display().to_string()], None);
    assert!(made.status.success(), "{:?}", text(&made));
    let html = std::fs::read_to_string(&page).expect("page");
    assert!(html.contains("Content-Security-Policy") && html.contains("default-src 'none'"));

    // A successful write of the fought-over object that has a version before it.
    let fight = &truth["fights"][0];
    let (kind, ns, name) =
        (fight["kind"].as_str().unwrap(), fight["namespace"].as_str().unwrap(), fight["name"].as_str().unwrap());
    let write = rows(
        &data,
        &format!(
            "SELECT \"index\" FROM indexed_operations WHERE kind = '{kind}' AND namespace = '{ns}' AND name = '{name}' \
             AND verb IN ('update', 'patch') AND status_code < 400 ORDER BY \"index\" LIMIT 1 OFFSET 3"
        ),
    )[0][0]
        .clone();

    let proxy = TrapProxy::start();
    let url = format!("file://{}#op={write}&chain=0", page.display());
    let dom = run_chromium(&proxy, &url, &["--dump-dom"]);
    assert!(dom.contains("data-ready=\"true\""), "the script ran to the end");

    let lanes: BTreeSet<String> = attributes(&dom, "class=\"lane\"", "data-actor").into_iter().collect();
    assert_eq!(lanes, actors, "one lane per actor");

    let fight_object = format!("{kind} {ns}/{name}");
    let fought: BTreeSet<String> = attributes(&dom, "class=\"fight\"", "data-object")
        .into_iter()
        .zip(attributes(&dom, "class=\"fight\"", "data-actor"))
        .filter(|(object, _)| *object == fight_object)
        .map(|(_, actor)| actor)
        .collect();
    let fighters: BTreeSet<String> =
        fight["actors"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    assert_eq!(fought, fighters, "the fight over {fight_object} is drawn on both fighters' lanes");

    let drawn_chains = attributes(&dom, "class=\"chain", "data-actors");
    let chain: Vec<&str> = truth["chains"][0].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(
        drawn_chains.iter().any(|drawn| drawn.contains(&chain.join(" -> "))),
        "the chain {chain:?} is drawn; drawn: {drawn_chains:?}"
    );

    let details = element(&dom, "details");
    assert!(details.contains(&format!("data-index=\"{write}\"")), "operation {write} is selected: {details}");
    assert!(details.contains("class=\"diff\"") && details.contains("spec.replicas"), "its diff: {details}");

    // The view kept in the fragment (as the page keeps it, so a reload shows the same picture).
    let zoomed = run_chromium(&proxy, &format!("file://{}#view=1000000,2000000", page.display()), &["--dump-dom"]);
    assert!(zoomed.contains(">+1.000s<") && zoomed.contains(">+2.000s<"), "the axis shows the kept view");

    // The trap works (a page that fetches is caught), and the report fetched nothing.
    let control = dir.path().join("control.html");
    std::fs::write(&control, r#"<img src="http://kubestep-control.invalid/pixel.png">"#).expect("control page");
    let control_proxy = TrapProxy::start();
    run_chromium(&control_proxy, &format!("file://{}", control.display()), &["--dump-dom"]);
    assert!(
        control_proxy.page_requests().iter().any(|r| r.contains("kubestep-control.invalid")),
        "the trap proxy sees a page's requests: {:?}",
        control_proxy.requests.lock().expect("requests")
    );
    assert_eq!(proxy.page_requests(), Vec::<String>::new(), "the report made no network request");

    // The picture the README shows comes from the same page.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &TrapProxy::start(),
        &format!("file://{}#op={write}&chain=0", page.display()),
        &[&format!("--screenshot={}", shot.display()), "--window-size=1400,1000"],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real screenshot ({} bytes)", png.len());
}

/// The JSON data block of a report page.
fn report_data(html: &str) -> serde_json::Value {
    let open = "<script id=\"report-data\" type=\"application/json\">";
    let start = html.find(open).expect("a data block") + open.len();
    let end = start + html[start..].find("</script>").expect("the end of the data block");
    serde_json::from_str(&html[start..end]).expect("the data block is JSON")
}

#[test]
fn a_session_beyond_the_mark_limit_is_sampled_evenly_over_its_whole_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = simulate(dir.path(), "mixed", "12", &["--events", "3000"]);
    let data = dir.path().join("data");
    assert!(import(&data, &[&log], &["--quiet"]).status.success());
    let session = rows(&data, "SELECT DISTINCT session_id FROM operations")[0][0].clone();
    let page = dir.path().join("small.html");
    let args = ["report", &session, "-d", &data.display().to_string(), "-o", &page.display().to_string()];
    let made = kubestep(&[&args[..], &["--max-marks", "200"]].concat(), None);
    assert!(made.status.success(), "{:?}", text(&made));
    let report = report_data(&std::fs::read_to_string(&page).expect("page"));
    assert_eq!(report["marks_complete"], false);
    let marks = &report["marks"];
    let n = marks["index"].as_array().expect("indexes").len();
    assert!((100..=200).contains(&n), "{n} marks for a limit of 200");
    let last = marks["t"].as_array().expect("times").iter().filter_map(|t| t.as_i64()).max().unwrap_or(0);
    let span = report["span_us"].as_i64().expect("span");
    assert!(last > span * 8 / 10, "the marks reach the end of the session: last at {last} of {span}");
    let texts = report["texts"].as_array().expect("texts");
    let verbs: BTreeSet<&str> = marks["verb"]
        .as_array()
        .expect("verbs")
        .iter()
        .filter_map(|v| texts[v.as_u64().unwrap() as usize].as_str())
        .collect();
    let failures = marks["status"].as_array().expect("statuses").iter().filter(|s| s.as_i64() >= Some(400)).count();
    assert!(verbs.contains("update") && failures > 0, "both writes and failures are sampled: {verbs:?}, {failures}");
    // Every lane still shows all its activity, as counts.
    let counted: u64 = report["density"].as_array().expect("density").iter().map(|d| d[2].as_u64().unwrap()).sum();
    assert_eq!(counted, report["total_operations"].as_u64().unwrap());
}
