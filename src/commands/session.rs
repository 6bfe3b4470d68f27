//! `kubestep session start|stop|list`: the client of a running `kubestep serve`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use kubestep_schemas::session::validate_session_name;
use serde_json::Value;

use super::client::ClientArgs;

/// Arguments of `kubestep session`.
#[derive(clap::Args)]
pub struct SessionArgs {
    #[command(subcommand)]
    action: Action,
    /// The running service.
    #[arg(long, global = true, env = "KUBESTEP_SERVER", default_value = "http://127.0.0.1:9443")]
    server: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Record every event from now on into the named session.
    Start {
        /// Session name: letters, digits, `.`, `_`, `-`.
        name: String,
    },
    /// End the named session; its events are in Parquet, and queryable, when this returns.
    Stop {
        /// Session name.
        name: String,
    },
    /// The active session and every recorded one.
    List,
}

/// Sends the request and prints the outcome.
pub fn run(args: SessionArgs) -> anyhow::Result<ExitCode> {
    let base = args.server.trim_end_matches('/');
    let agent = args.client.agent(std::time::Duration::from_secs(60))?;
    let token = args.client.token()?;
    let authorization = token.map(|t| format!("Bearer {t}"));
    let (method, url, body) = match &args.action {
        Action::Start { name } => {
            validate_session_name(name)?;
            ("POST", format!("{base}/sessions"), Some(serde_json::json!({ "name": name })))
        }
        Action::Stop { name } => {
            validate_session_name(name)?;
            ("POST", format!("{base}/sessions/{name}/stop"), None)
        }
        Action::List => ("GET", format!("{base}/sessions"), None),
    };
    let response = match (method, body) {
        ("POST", body) => {
            let mut request = agent.post(&url);
            if let Some(a) = &authorization {
                request = request.header("Authorization", a);
            }
            match body {
                Some(body) => request.send_json(&body),
                None => request.send_empty(),
            }
        }
        _ => {
            let mut request = agent.get(&url);
            if let Some(a) = &authorization {
                request = request.header("Authorization", a);
            }
            request.call()
        }
    };
    let mut response = response.with_context(|| format!("cannot reach the KubeStep service at {base}"))?;
    let status = response.status();
    let text = response.body_mut().read_to_string().with_context(|| format!("reading the answer of {url}"))?;
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if !status.is_success() {
        let message = json.get("error").and_then(Value::as_str).unwrap_or(&text);
        bail!("{url} answered {status}: {message}");
    }
    match &args.action {
        Action::Start { name } => println!("recording into session {name}"),
        Action::Stop { name } => println!("session {name} stopped; its events are stored"),
        Action::List => {
            let sessions = json.get("sessions").and_then(Value::as_array).cloned().unwrap_or_default();
            if sessions.is_empty() {
                println!("no sessions yet");
            }
            for s in sessions {
                let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
                let active = s.get("active").and_then(Value::as_bool).unwrap_or(false);
                println!("{name}{}", if active { "  (recording)" } else { "" });
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
