//! What a simulated history contains, known by construction: the answers the analyses must find.

use std::collections::BTreeMap;

use serde::Serialize;

/// An actor writing one object over and over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HotLoop {
    /// The actor.
    pub actor: String,
    /// The object: kind, namespace, name.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Successful writes in the loop.
    pub writes: u64,
    /// `no-op` (only the resourceVersion moved), `status` (status-only churn) or `spec`.
    pub class: String,
}

/// Actors taking turns setting one field to different values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fight {
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The actors, in the order they first wrote.
    pub actors: Vec<String>,
    /// The field path that flips.
    pub field: String,
    /// The values each actor sets, in `actors` order.
    pub values: Vec<String>,
    /// Successful writes that changed the field.
    pub flips: u64,
}

/// An actor whose writes keep failing with 409 because its base version is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictStorm {
    /// The actor.
    pub actor: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// 409 answers.
    pub conflicts: u64,
    /// Whether a write of the actor succeeded afterwards.
    pub recovered: bool,
}

/// The ground truth of a simulation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroundTruth {
    /// Scenarios played, in order.
    pub scenarios: Vec<String>,
    /// Audit events emitted (all at stage ResponseComplete).
    pub events: u64,
    /// Writes (create, update, patch, delete).
    pub writes: u64,
    /// Requests that took 1000 ms or longer, watches excluded.
    pub slow_operations: u64,
    /// Failed requests by HTTP status.
    pub errors: BTreeMap<u16, u64>,
    /// Hot loops.
    pub hot_loops: Vec<HotLoop>,
    /// Fights.
    pub fights: Vec<Fight>,
    /// Conflict storms.
    pub conflict_storms: Vec<ConflictStorm>,
    /// Causality chains, as the actors that wrote in turn, each triggered by the previous one.
    pub chains: Vec<Vec<String>>,
}

impl GroundTruth {
    /// Counts one request.
    pub(crate) fn count(&mut self, verb: &str, code: u16, latency_us: i64) {
        self.events += 1;
        if matches!(verb, "create" | "update" | "patch" | "delete") {
            self.writes += 1;
        }
        if latency_us >= 1_000_000 && verb != "watch" {
            self.slow_operations += 1;
        }
        if code >= 400 {
            *self.errors.entry(code).or_default() += 1;
        }
    }

    /// Failed requests of every status.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}
