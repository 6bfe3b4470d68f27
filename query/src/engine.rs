//! Where the SQL of a command runs: in this process, or on an Apache DataFusion Ballista cluster.
//!
//! The analyses are plain SQL over the `operations` listing table and the documented views, with
//! no function or table type of our own, so a stock Ballista scheduler and executors of the release
//! that matches our DataFusion (55) run them unchanged: the client plans the statement, sends the
//! logical plan and every session setting to the scheduler, and streams the result back. What the
//! commands do after the SQL (the loop finder's single pass, chain building) runs here, over the
//! streamed rows.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The scheme of a Ballista scheduler address on the command line.
pub const BALLISTA_SCHEME: &str = "ballista://";

/// The scheduler's port when the address names none (Ballista's default).
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// How long opening a recording waits for the scheduler to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine a query command runs its SQL on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Engine {
    /// DataFusion in this process.
    #[default]
    Local,
    /// A Ballista cluster, reached through its scheduler.
    Ballista {
        /// Host name or address of the scheduler.
        host: String,
        /// Its gRPC port.
        port: u16,
    },
}

/// Why an engine address was not understood, or the engine cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The text is neither `local` nor a `ballista://` address.
    #[error("unknown engine {given:?}: expected `local` or `ballista://HOST:PORT`")]
    Unknown {
        /// What was given.
        given: String,
    },
    /// A `ballista://` address that does not parse.
    #[error("bad Ballista scheduler address {given:?}: {reason}")]
    BadAddress {
        /// What was given.
        given: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing accepts connections at the scheduler's address.
    #[error("cannot reach the Ballista scheduler at {engine}: {reason}")]
    Unreachable {
        /// The engine asked for.
        engine: Engine,
        /// The connection error.
        reason: String,
    },
}

impl FromStr for Engine {
    type Err = EngineError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("local") {
            return Ok(Engine::Local);
        }
        let Some(address) = trimmed.strip_prefix(BALLISTA_SCHEME) else {
            return Err(EngineError::Unknown { given: text.to_owned() });
        };
        let bad = |reason: &str| EngineError::BadAddress { given: text.to_owned(), reason: reason.to_owned() };
        let address = address.trim_end_matches('/');
        if address.is_empty() {
            return Err(bad("no host"));
        }
        if address.contains('/') {
            return Err(bad("a scheduler address is HOST or HOST:PORT, with no path"));
        }
        // A bracketed IPv6 literal keeps its colons inside the brackets.
        let (host, port) = match address.rfind(':') {
            Some(colon) if !address[colon..].contains(']') => {
                let port = address[colon + 1..]
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
                (&address[..colon], port)
            }
            _ => (address, DEFAULT_SCHEDULER_PORT),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Engine::Ballista { host: host.to_owned(), port })
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Local => f.write_str("local"),
            Engine::Ballista { host, port } => write!(f, "{BALLISTA_SCHEME}{host}:{port}"),
        }
    }
}

impl Engine {
    /// The URL the Ballista client connects to (`http://HOST:PORT`), or `None` for the local engine.
    pub fn scheduler_url(&self) -> Option<String> {
        match self {
            Engine::Local => None,
            Engine::Ballista { host, port } => Some(format!("http://{host}:{port}")),
        }
    }

    /// Checks that the scheduler accepts connections, so that a wrong address or a cluster that is
    /// down is one clear line before any planning, not a gRPC error in the middle of a command.
    pub async fn check_reachable(&self) -> Result<(), EngineError> {
        let Engine::Ballista { host, port } = self else {
            return Ok(());
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let unreachable = |reason: String| EngineError::Unreachable { engine: self.clone(), reason };
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host, *port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballista(host: &str, port: u16) -> Engine {
        Engine::Ballista { host: host.to_owned(), port }
    }

    #[test]
    fn addresses_parse_with_and_without_a_port() {
        assert_eq!("local".parse::<Engine>().unwrap(), Engine::Local);
        assert_eq!("ballista://127.0.0.1:50051".parse::<Engine>().unwrap(), ballista("127.0.0.1", 50051));
        assert_eq!("ballista://scheduler".parse::<Engine>().unwrap(), ballista("scheduler", DEFAULT_SCHEDULER_PORT));
        assert_eq!("ballista://scheduler:7000/".parse::<Engine>().unwrap(), ballista("scheduler", 7000));
        assert_eq!("ballista://[::1]:7000".parse::<Engine>().unwrap(), ballista("[::1]", 7000));
        assert_eq!("ballista://[::1]".parse::<Engine>().unwrap(), ballista("[::1]", DEFAULT_SCHEDULER_PORT));
        assert_eq!(ballista("h", 1).to_string(), "ballista://h:1");
        assert_eq!(ballista("h", 1).scheduler_url().as_deref(), Some("http://h:1"));
        assert_eq!(Engine::Local.scheduler_url(), None);
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        let message = |text: &str| text.parse::<Engine>().unwrap_err().to_string();
        assert!(message("df://h:1").contains("expected `local` or `ballista://HOST:PORT`"));
        assert!(message("ballista://").contains("no host"));
        assert!(message("ballista://:7").contains("no host"));
        assert!(message("ballista://h:port").contains("not a number"));
        assert!(message("ballista://h:0").contains("not a number"));
        assert!(message("ballista://h:1/x").contains("no path"));
    }

    #[tokio::test]
    async fn an_unreachable_scheduler_is_one_line() {
        // A port just released by a listener has nobody behind it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let error = ballista("127.0.0.1", port).check_reachable().await.unwrap_err().to_string();
        assert!(error.starts_with(&format!("cannot reach the Ballista scheduler at ballista://127.0.0.1:{port}: ")));
        assert!(!error.contains('\n'));
        Engine::Local.check_reachable().await.unwrap();
    }
}
