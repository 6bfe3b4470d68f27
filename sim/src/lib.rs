//! # kubestep-sim
//!
//! A simulated Kubernetes API server's audit log: controllers doing what real ones do (rollouts
//! through the deployment, replicaset and scheduler controllers, a CRD operator, a hot loop, a
//! fight over a field, 409 conflict storms, slow calls) with real-looking identities, uids,
//! resourceVersions, generations, owner references and response objects, at the levels of
//! KubeStep's audit policy. Deterministic for a seed, and every scenario knows its ground truth.
//!
//! - [`cluster`]: the API server model and the audit events it emits;
//! - [`identity`]: who the clients are;
//! - [`scenarios`]: the behaviours;
//! - [`truth`]: what each history contains;
//! - [`webhook`]: posting the events the way the API server's batching webhook backend does.
//!
//! It exists for the demo, the tests that need ground truth, and the benchmarks.

pub mod cluster;
pub mod identity;
pub mod rng;
pub mod scenarios;
pub mod truth;
pub mod webhook;

use serde_json::Value;

pub use scenarios::SCENARIOS;
pub use truth::GroundTruth;

/// 2024-05-01T10:00:00Z: simulated histories start here, so a seed always gives the same bytes.
pub const DEFAULT_START_US: i64 = 1_714_557_600_000_000;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// One of [`SCENARIOS`].
    pub scenario: String,
    /// The random seed.
    pub seed: u64,
    /// Keep playing (more instances, more background traffic) until at least this many events.
    pub events: Option<u64>,
    /// When the history starts (microseconds since the epoch).
    pub start_us: i64,
}

impl SimulateOptions {
    /// `scenario` with seed 1 and no volume target.
    pub fn new(scenario: &str) -> Self {
        Self { scenario: scenario.to_owned(), seed: 1, events: None, start_us: DEFAULT_START_US }
    }
}

/// Plays the scenario, handing every audit event (as a webhook `EventList` item: no `kind` or
/// `apiVersion`) to `sink`, and returns the ground truth.
pub fn simulate(options: &SimulateOptions, sink: &mut dyn FnMut(Value)) -> Result<GroundTruth, String> {
    if !SCENARIOS.contains(&options.scenario.as_str()) {
        return Err(format!("unknown scenario {:?}; known: {}", options.scenario, SCENARIOS.join(", ")));
    }
    let mut cluster = cluster::Cluster::new(options.seed, options.start_us, sink);
    let target = options.events.unwrap_or(0);
    let mut instance = 0;
    loop {
        scenarios::background(&mut cluster, 40);
        match options.scenario.as_str() {
            "mixed" => {
                for name in SCENARIOS.iter().filter(|s| **s != "mixed") {
                    scenarios::play(&mut cluster, name, instance)?;
                    scenarios::background(&mut cluster, 60);
                }
            }
            name => scenarios::play(&mut cluster, name, instance)?,
        }
        scenarios::background(&mut cluster, 40);
        instance += 1;
        if cluster.truth.events >= target {
            break;
        }
    }
    Ok(cluster.truth)
}

/// An event as a line of the API server's log backend: with `kind` and `apiVersion`.
pub fn log_line(event: &Value) -> String {
    let mut line = String::from(r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","#);
    let body = event.to_string();
    line.push_str(body.strip_prefix('{').unwrap_or(&body));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scenario: &str, seed: u64) -> (Vec<Value>, GroundTruth) {
        let mut events = Vec::new();
        let options = SimulateOptions { seed, ..SimulateOptions::new(scenario) };
        let truth = simulate(&options, &mut |e| events.push(e)).unwrap();
        (events, truth)
    }

    #[test]
    fn a_seed_gives_the_same_history() {
        let (a, ta) = run("mixed", 7);
        let (b, tb) = run("mixed", 7);
        assert_eq!(a, b);
        assert_eq!(ta, tb);
        let (c, _) = run("mixed", 8);
        assert_ne!(a, c);
        assert_eq!(ta.events, a.len() as u64);
    }

    #[test]
    fn every_scenario_plays_and_knows_its_truth() {
        for scenario in SCENARIOS {
            let (events, truth) = run(scenario, 1);
            assert!(events.len() > 50, "{scenario}: {}", events.len());
            assert!(truth.scenarios.iter().all(|s| SCENARIOS.contains(&s.as_str())));
        }
        let (_, hot) = run("hot-loop", 1);
        assert_eq!(hot.hot_loops.len(), 1);
        let (_, fight) = run("fight", 1);
        assert_eq!(fight.fights[0].flips, 16);
        let (_, conflicts) = run("conflicts", 1);
        assert_eq!(conflicts.conflict_storms[0].conflicts, 6);
        assert!(conflicts.conflict_storms[0].recovered);
        assert!(conflicts.errors.get(&409).copied().unwrap_or(0) >= 6);
        let (_, slow) = run("slow", 1);
        assert!(slow.slow_operations >= 5, "{}", slow.slow_operations);
        let (_, rollout) = run("rollout", 1);
        assert!(rollout.chains[0].len() >= 4, "{:?}", rollout.chains);
    }

    #[test]
    fn versions_move_and_generations_follow_the_spec_only() {
        let (events, _) = run("rollout", 3);
        let mut rvs = Vec::new();
        for e in &events {
            if let Some(rv) = e["responseObject"]["metadata"]["resourceVersion"].as_str() {
                rvs.push(rv.parse::<u64>().unwrap());
            }
            let sub = e["objectRef"]["subresource"].as_str();
            if e["verb"] == "update" && sub == Some("status") && e["objectRef"]["resource"] == "deployments" {
                assert_eq!(e["requestObject"]["metadata"]["generation"], e["responseObject"]["metadata"]["generation"]);
            }
        }
        assert!(rvs.windows(2).all(|w| w[0] < w[1]), "one counter, always moving forward");
        let image_update = events
            .iter()
            .find(|e| e["verb"] == "update" && e["user"]["username"] == "alice@example.com")
            .expect("the image update");
        assert_eq!(image_update["responseObject"]["metadata"]["generation"], 2);
    }

    #[test]
    fn volume_grows_to_the_target() {
        let options = SimulateOptions { events: Some(5000), ..SimulateOptions::new("mixed") };
        let truth = simulate(&options, &mut |_| {}).unwrap();
        assert!(truth.events >= 5000);
        assert!(truth.hot_loops.len() >= 2, "more instances, more loops");
    }

    #[test]
    fn log_lines_carry_kind_and_api_version() {
        let (events, _) = run("slow", 1);
        let line = log_line(&events[0]);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["kind"], "Event");
        assert_eq!(parsed["apiVersion"], "audit.k8s.io/v1");
        assert!(events[0].get("kind").is_none(), "EventList items carry no kind");
    }
}
