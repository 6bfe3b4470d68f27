//! The named session the service is recording into, if any. It survives restarts: the name is kept
//! in `DATA/wal/active-session`, written atomically. For a recording in object storage the
//! [`SessionRegistry`] in the bucket is the truth that every replica follows; the local file is
//! then this replica's copy of it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::registry::{Change, SessionRegistry};
use crate::writer::{create_dir_durably, fsync_dir};

const FILE_NAME: &str = "active-session";

/// Why a session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another named session is being recorded; every event belongs to exactly one session.
    #[error("session {0:?} is being recorded; stop it first")]
    Busy(String),
    /// The shared registry (object storage) could not be read or written.
    #[error("{0}")]
    Registry(String),
    /// The state file could not be written.
    #[error("saving the active session in {path}: {source}")]
    Io {
        /// The state file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The active named session, shared by the request handlers.
pub struct ActiveSession {
    state_file: PathBuf,
    name: RwLock<Option<Arc<str>>>,
    registry: Option<SessionRegistry>,
    /// Held across a registry read or change and its adoption here, so a refresh that read the
    /// registry before a start or stop cannot adopt its older answer after it.
    changing: tokio::sync::Mutex<()>,
}

impl ActiveSession {
    /// Loads the state kept in `wal_dir`; `forced` (from `serve --session`) overrides it.
    pub fn load(wal_dir: &Path, forced: Option<String>) -> Result<Self, StartError> {
        let state_file = wal_dir.join(FILE_NAME);
        let stored = fs::read_to_string(&state_file).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let this = Self { state_file, name: RwLock::new(None), registry: None, changing: tokio::sync::Mutex::new(()) };
        let name = forced.or(stored);
        if let Some(name) = &name {
            this.save(Some(name))?;
        }
        *this.name.write().unwrap_or_else(|e| e.into_inner()) = name.map(Arc::from);
        Ok(this)
    }

    /// The session new batches go to; `None` means automatic sessions.
    pub fn current(&self) -> Option<Arc<str>> {
        self.name.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Follows `registry` (a recording in object storage shared by several replicas): starting and
    /// stopping change it, and [`refresh`](Self::refresh) adopts what it says.
    pub fn with_registry(mut self, registry: SessionRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Whether sessions are shared through a registry.
    pub fn is_shared(&self) -> bool {
        self.registry.is_some()
    }

    /// Starts recording into `name`. Starting the session already active is not an error.
    pub async fn start(&self, name: &str) -> Result<(), StartError> {
        if let Some(registry) = &self.registry {
            let _changing = self.changing.lock().await;
            return match registry.start(name).await.map_err(StartError::Registry)? {
                Change::Busy(active) => Err(StartError::Busy(active)),
                Change::Done | Change::NotActive(_) => self.adopt(Some(name)).map(drop),
            };
        }
        let mut current = self.name.write().unwrap_or_else(|e| e.into_inner());
        match current.as_deref() {
            Some(active) if active == name => return Ok(()),
            Some(active) => return Err(StartError::Busy(active.to_owned())),
            None => {}
        }
        self.save(Some(name))?;
        *current = Some(Arc::from(name));
        Ok(())
    }

    /// Ends `name` if it is the active session; says whether it was.
    pub async fn stop(&self, name: &str) -> Result<bool, StartError> {
        if let Some(registry) = &self.registry {
            let _changing = self.changing.lock().await;
            return match registry.stop(name).await.map_err(StartError::Registry)? {
                Change::Done => self.adopt(None).map(|_| true),
                Change::NotActive(active) => self.adopt(active.as_deref()).map(|_| false),
                Change::Busy(_) => Ok(false),
            };
        }
        let mut current = self.name.write().unwrap_or_else(|e| e.into_inner());
        if current.as_deref() != Some(name) {
            return Ok(false);
        }
        self.save(None)?;
        *current = None;
        Ok(true)
    }

    /// Reads the shared registry (if any) and records into what it says from now on. Returns the
    /// session that was active here before, when it changed (its buffered records can be written
    /// out: another replica stopped it).
    pub async fn refresh(&self) -> Result<Option<Option<Arc<str>>>, StartError> {
        let Some(registry) = &self.registry else { return Ok(None) };
        let _changing = self.changing.lock().await;
        let (active, _) = registry.read().await.map_err(StartError::Registry)?;
        self.adopt(active.as_deref())
    }

    /// Makes `name` the active session here; returns the previous one when it changed.
    fn adopt(&self, name: Option<&str>) -> Result<Option<Option<Arc<str>>>, StartError> {
        let mut current = self.name.write().unwrap_or_else(|e| e.into_inner());
        if current.as_deref() == name {
            return Ok(None);
        }
        self.save(name)?;
        let previous = std::mem::replace(&mut *current, name.map(Arc::from));
        Ok(Some(previous))
    }

    /// The sessions stored in the shared recording, when there is one.
    pub async fn stored_sessions(&self) -> Option<Result<Vec<String>, String>> {
        match &self.registry {
            Some(registry) => Some(registry.stored_sessions().await),
            None => None,
        }
    }

    fn save(&self, name: Option<&str>) -> Result<(), StartError> {
        let io = |source| StartError::Io { path: self.state_file.clone(), source };
        let dir = self.state_file.parent().unwrap_or(Path::new("."));
        create_dir_durably(dir).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        match name {
            Some(name) => {
                let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
                let mut file = fs::File::create(&tmp).map_err(io)?;
                file.write_all(name.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                fs::rename(&tmp, &self.state_file).map_err(io)?;
            }
            None => match fs::remove_file(&self.state_file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            },
        }
        fsync_dir(dir).map_err(|e| io(std::io::Error::other(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_active_session_survives_a_restart_and_only_one_is_active() {
        let tmp = tempfile::tempdir().unwrap();
        let sessions = ActiveSession::load(tmp.path(), None).unwrap();
        assert_eq!(sessions.current(), None);
        sessions.start("one").await.unwrap();
        sessions.start("one").await.unwrap();
        assert!(matches!(sessions.start("two").await, Err(StartError::Busy(n)) if n == "one"));
        let reloaded = ActiveSession::load(tmp.path(), None).unwrap();
        assert_eq!(reloaded.current().as_deref(), Some("one"));
        assert!(!reloaded.stop("two").await.unwrap());
        assert!(reloaded.stop("one").await.unwrap());
        assert_eq!(ActiveSession::load(tmp.path(), None).unwrap().current(), None);
        let forced = ActiveSession::load(tmp.path(), Some("forced".into())).unwrap();
        assert_eq!(forced.current().as_deref(), Some("forced"));
    }
}
