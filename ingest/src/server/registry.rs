//! The named session shared by every replica that records into one recording in object storage.
//!
//! Replicas behind one Service receive disjoint parts of the API server's stream, so a session
//! started through one of them must be the session of all of them. The registry is one small
//! object, `sessions/active.json` under the recording, holding the active session's name (or
//! none). It is only ever changed with a conditional put — created only if absent, replaced only
//! if its ETag is still the one read — so two replicas starting sessions at the same moment cannot
//! both win: the loser reads again and finds the winner's session. Every replica reads it once a
//! second ([`FOLLOW_INTERVAL`]) and records into what it says.

use std::time::Duration;

use kubestep_schemas::location::{RemoteRecording, store_error_line};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

/// How often a replica reads the registry.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// How many times a conditional change is tried again after another replica changed the registry
/// in between.
const MAX_RACES: usize = 16;

/// What the registry object holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryState {
    /// The session every replica records into; `None`: automatic sessions.
    active: Option<String>,
}

/// The shared session registry of a recording in object storage.
#[derive(Debug, Clone)]
pub struct SessionRegistry {
    remote: RemoteRecording,
    path: StorePath,
}

/// What a change of the registry came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The registry now says what was asked.
    Done,
    /// Another session is active (its name).
    Busy(String),
    /// The session asked to stop is not the active one (the active one, if any).
    NotActive(Option<String>),
}

impl SessionRegistry {
    /// The registry of `remote`.
    pub fn new(remote: RemoteRecording) -> Self {
        let path = remote.path_of("sessions/active.json");
        Self { remote, path }
    }

    /// The active session and the version to change it from (`None` when the object is absent).
    pub async fn read(&self) -> Result<(Option<String>, Option<UpdateVersion>), String> {
        match self.remote.store.get(&self.path).await {
            Ok(result) => {
                let version = UpdateVersion { e_tag: result.meta.e_tag.clone(), version: result.meta.version.clone() };
                let bytes = result.bytes().await.map_err(|e| self.error(&e))?;
                let state: RegistryState = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}/sessions/active.json is not a session registry: {e}", self.remote.url))?;
                Ok((state.active, Some(version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok((None, None)),
            Err(e) => Err(self.error(&e)),
        }
    }

    /// Makes `name` the active session unless another one is.
    pub async fn start(&self, name: &str) -> Result<Change, String> {
        self.change(|active| match active {
            Some(active) if active == name => Err(Change::Done),
            Some(active) => Err(Change::Busy(active.to_owned())),
            None => Ok(Some(name.to_owned())),
        })
        .await
    }

    /// Ends `name` if it is the active session.
    pub async fn stop(&self, name: &str) -> Result<Change, String> {
        self.change(|active| match active {
            Some(active) if active == name => Ok(None),
            other => Err(Change::NotActive(other.map(str::to_owned))),
        })
        .await
    }

    /// Reads the registry, asks `decide` what it should say instead (or what to answer without
    /// changing it), and writes that with a conditional put; reads again when another replica
    /// changed it in between.
    async fn change(&self, decide: impl Fn(Option<&str>) -> Result<Option<String>, Change>) -> Result<Change, String> {
        for _ in 0..MAX_RACES {
            let (active, version) = self.read().await?;
            let next = match decide(active.as_deref()) {
                Ok(next) => next,
                Err(answer) => return Ok(answer),
            };
            let body = serde_json::to_vec(&RegistryState { active: next }).map_err(|e| e.to_string())?;
            let mode = match version {
                Some(version) => PutMode::Update(version),
                None => PutMode::Create,
            };
            let options = PutOptions { mode, ..PutOptions::default() };
            match self.remote.store.put_opts(&self.path, PutPayload::from(body), options).await {
                Ok(_) => return Ok(Change::Done),
                Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                    tracing::debug!("the session registry changed while it was being written; reading it again");
                }
                Err(e) => return Err(self.error(&e)),
            }
        }
        Err(format!("{}/sessions/active.json kept changing under {MAX_RACES} attempts", self.remote.url))
    }

    /// The sessions stored in the recording (every replica's files), sorted.
    pub async fn stored_sessions(&self) -> Result<Vec<String>, String> {
        let operations = self.remote.path_of("operations");
        let listing = self.remote.store.list_with_delimiter(Some(&operations)).await.map_err(|e| self.error(&e))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|n| n.strip_prefix("session_id=")).map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    fn error(&self, e: &object_store::Error) -> String {
        format!("the session registry of {}: {}", self.remote.url, store_error_line(e))
    }
}
