//! The scenarios: controller behaviour worth recording, each with its ground truth.

use serde_json::{Value, json};

use crate::cluster::{CONFIGMAPS, Cluster, DEPLOYMENTS, PODS, REPLICASETS, SECRETS, SERVICES, WEBAPPS};
use crate::identity::Identity;
use crate::truth::{ConflictStorm, Fight, HotLoop};

/// Every scenario `kubestep simulate --scenario` knows.
pub const SCENARIOS: [&str; 7] = ["rollout", "operator", "hot-loop", "fight", "conflicts", "slow", "mixed"];

/// Plays scenario `name` once, with object names made unique by `instance`.
pub fn play(cluster: &mut Cluster<'_>, name: &str, instance: u64) -> Result<(), String> {
    match name {
        "rollout" => rollout(cluster, instance),
        "operator" => operator(cluster, instance),
        "hot-loop" => hot_loop(cluster, instance),
        "fight" => fight(cluster, instance),
        "conflicts" => conflicts(cluster, instance),
        "slow" => slow(cluster, instance),
        other => return Err(format!("unknown scenario {other:?}; known: {}", SCENARIOS.join(", "))),
    }
    cluster.truth.scenarios.push(name.to_owned());
    Ok(())
}

fn suffix(instance: u64) -> String {
    if instance == 0 { String::new() } else { format!("-{instance}") }
}

fn deployment(name: &str, image: &str, replicas: u64) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
        },
        "status": {}
    })
}

fn owner(kind: &str, api_version: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}])
}

/// The deployment, replicaset and scheduler controllers and the kubelet carrying a Deployment to
/// `replicas` running pods of its current template: the chain the rollout scenario is about.
/// Returns the actors that wrote, in causal order, starting with the deployment controller.
fn reconcile_deployment(c: &mut Cluster<'_>, ns: &str, name: &str) -> Vec<String> {
    let dc = Identity::controller("deployment-controller");
    let rsc = Identity::controller("replicaset-controller");
    let scheduler = Identity::scheduler();
    let kubelet = Identity::kubelet("node-1");
    let Some(dep) = c.object(DEPLOYMENTS, ns, name).cloned() else { return Vec::new() };
    let replicas = dep["spec"]["replicas"].as_u64().unwrap_or(1);
    let generation = dep["metadata"]["generation"].as_i64().unwrap_or(1);
    let dep_uid = dep["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    c.pause(5, 30);
    c.get(&dc, DEPLOYMENTS, ns, name);
    let rs_name = format!("{name}-{}", c.rng.suffix(9));
    let mut rs = json!({
        "metadata": {"name": rs_name, "labels": {"app": name},
                     "annotations": {"deployment.kubernetes.io/revision": generation.to_string()},
                     "ownerReferences": owner("Deployment", "apps/v1", name, &dep_uid)},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": dep["spec"]["template"].clone()},
        "status": {}
    });
    rs = c.create(&dc, REPLICASETS, ns, rs);
    let rs_uid = rs["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let _ = c.update(&dc, DEPLOYMENTS, ns, name, Some("status"), None, |d| {
        d["status"] = json!({"observedGeneration": generation, "replicas": 0, "updatedReplicas": 0,
                             "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated",
                                             "lastUpdateTime": "now", "lastTransitionTime": "now"}]});
    });
    c.pause(10, 40);
    let mut pods = Vec::new();
    for _ in 0..replicas {
        let pod_name = format!("{rs_name}-{}", c.rng.suffix(5));
        let pod = json!({
            "metadata": {"name": pod_name, "labels": {"app": name}, "ownerReferences": owner("ReplicaSet", "apps/v1", &rs_name, &rs_uid)},
            "spec": rs["spec"]["template"]["spec"].clone(),
            "status": {"phase": "Pending"}
        });
        c.create(&rsc, PODS, ns, pod);
        pods.push(pod_name);
    }
    let _ = c.update(&rsc, REPLICASETS, ns, &rs_name, Some("status"), None, |r| {
        r["status"] = json!({"replicas": replicas, "observedGeneration": 1});
    });
    c.pause(20, 60);
    for pod in &pods {
        c.get(&scheduler, PODS, ns, pod);
        let _ = c.update(&scheduler, PODS, ns, pod, None, None, |p| {
            p["spec"]["nodeName"] = json!("node-1");
        });
    }
    c.pause(300, 700);
    for pod in &pods {
        let _ = c.update(&kubelet, PODS, ns, pod, Some("status"), None, |p| {
            p["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "now"}]});
        });
    }
    let _ = c.update(&rsc, REPLICASETS, ns, &rs_name, Some("status"), None, |r| {
        r["status"] = json!({"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas, "observedGeneration": 1});
    });
    let _ = c.update(&dc, DEPLOYMENTS, ns, name, Some("status"), None, |d| {
        d["status"] = json!({"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                             "readyReplicas": replicas, "availableReplicas": replicas,
                             "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                             "lastUpdateTime": "now", "lastTransitionTime": "now"}]});
    });
    vec![dc.actor_id, rsc.actor_id, scheduler.actor_id]
}

/// A Deployment rollout: a person changes the image; the deployment controller creates a
/// ReplicaSet, the replicaset controller creates pods, the scheduler binds them.
fn rollout(c: &mut Cluster<'_>, instance: u64) {
    let alice = Identity::user("alice@example.com");
    let ns = "shop";
    let name = format!("web{}", suffix(instance));
    if c.object(DEPLOYMENTS, ns, &name).is_none() {
        c.create(&alice, DEPLOYMENTS, ns, deployment(&name, "registry.example.com/web:1.0.0", 3));
        reconcile_deployment(c, ns, &name);
        // A person takes a while before the next change: it is not a reaction to the controllers.
        c.pause(20_000, 10_000);
    }
    let _ = c.update(&alice, DEPLOYMENTS, ns, &name, None, None, |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("registry.example.com/web:1.1.0");
    });
    let mut chain = vec![alice.actor_id.clone()];
    chain.extend(reconcile_deployment(c, ns, &name));
    c.truth.chains.push(chain);
}

/// A CRD operator: a person creates a WebApp; the operator creates its ConfigMap, Service and
/// Deployment (owned by the WebApp) and reports status; the built-in controllers take over.
fn operator(c: &mut Cluster<'_>, instance: u64) {
    let alice = Identity::user("alice@example.com");
    let op = Identity::operator("webapp-system", "webapp-operator");
    let ns = "shop";
    let name = format!("storefront{}", suffix(instance));
    let app = c.create(
        &alice,
        WEBAPPS,
        ns,
        json!({"metadata": {"name": name}, "spec": {"image": "registry.example.com/storefront:2.3.0", "replicas": 2}, "status": {}}),
    );
    let app_uid = app["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    c.pause(15, 40);
    c.get(&op, WEBAPPS, ns, &name);
    let owned = owner("WebApp", "example.com/v1", &name, &app_uid);
    c.get(&op, CONFIGMAPS, ns, &format!("{name}-config"));
    c.create(
        &op,
        CONFIGMAPS,
        ns,
        json!({"metadata": {"name": format!("{name}-config"), "ownerReferences": owned},
                                         "data": {"LOG_LEVEL": "info", "FEATURES": "checkout,search"}}),
    );
    c.get(&op, SERVICES, ns, &name);
    c.create(&op, SERVICES, ns, json!({"metadata": {"name": name, "ownerReferences": owned},
                                       "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}));
    c.get(&op, DEPLOYMENTS, ns, &name);
    let mut dep = deployment(&name, "registry.example.com/storefront:2.3.0", 2);
    dep["metadata"]["ownerReferences"] = owned.clone();
    c.create(&op, DEPLOYMENTS, ns, dep);
    let _ = c.update(&op, WEBAPPS, ns, &name, Some("status"), None, |a| {
        a["status"] = json!({"phase": "Deploying", "observedGeneration": 1});
    });
    let mut chain = vec![alice.actor_id.clone(), op.actor_id.clone()];
    chain.extend(reconcile_deployment(c, ns, &name));
    c.sleep_ms(200);
    c.get(&op, DEPLOYMENTS, ns, &name);
    let _ = c.update(&op, WEBAPPS, ns, &name, Some("status"), None, |a| {
        a["status"] = json!({"phase": "Ready", "observedGeneration": 1, "readyReplicas": 2});
    });
    c.truth.chains.push(chain);
}

/// A controller that rewrites a ConfigMap with the same content every half second: every write
/// only moves the resourceVersion (a no-op write), forever.
fn hot_loop(c: &mut Cluster<'_>, instance: u64) {
    let syncer = Identity::operator("tools", "cache-syncer");
    let ns = "tools";
    let name = format!("route-cache{}", suffix(instance));
    if c.object(CONFIGMAPS, ns, &name).is_none() {
        c.create(&syncer, CONFIGMAPS, ns, json!({"metadata": {"name": name}, "data": {"routes": "a,b,c"}}));
    }
    let writes = 40;
    for _ in 0..writes {
        c.pause(400, 200);
        c.get(&syncer, CONFIGMAPS, ns, &name);
        let _ = c.update(&syncer, CONFIGMAPS, ns, &name, None, None, |_| {});
    }
    c.truth.hot_loops.push(HotLoop {
        actor: syncer.actor_id,
        kind: "ConfigMap".into(),
        namespace: ns.into(),
        name,
        writes,
        class: "no-op".into(),
    });
}

/// Two controllers that disagree about a Deployment's replica count: an autoscaler wants 5, a
/// GitOps controller syncs it back to 3. Each reads the latest version, so neither conflicts.
fn fight(c: &mut Cluster<'_>, instance: u64) {
    let alice = Identity::user("alice@example.com");
    let hpa = Identity::controller("horizontal-pod-autoscaler");
    let gitops = Identity::operator("argocd", "argocd-application-controller");
    let ns = "shop";
    let name = format!("api{}", suffix(instance));
    if c.object(DEPLOYMENTS, ns, &name).is_none() {
        c.create(&alice, DEPLOYMENTS, ns, deployment(&name, "registry.example.com/api:4.2.0", 3));
    }
    let rounds = 8;
    for _ in 0..rounds {
        c.pause(1_500, 1_000);
        c.get(&hpa, DEPLOYMENTS, ns, &name);
        let _ = c.update(&hpa, DEPLOYMENTS, ns, &name, None, None, |d| d["spec"]["replicas"] = json!(5));
        c.pause(1_500, 1_000);
        c.get(&gitops, DEPLOYMENTS, ns, &name);
        let _ = c.update(&gitops, DEPLOYMENTS, ns, &name, None, None, |d| d["spec"]["replicas"] = json!(3));
    }
    c.truth.fights.push(Fight {
        kind: "Deployment".into(),
        namespace: ns.into(),
        name,
        actors: vec![hpa.actor_id, gitops.actor_id],
        field: "spec.replicas".into(),
        values: vec!["5".into(), "3".into()],
        flips: 2 * rounds,
    });
}

/// A controller working from a stale cache: its updates carry an old resourceVersion and get
/// 409 Conflict while another controller keeps the object moving; after a fresh GET it succeeds.
fn conflicts(c: &mut Cluster<'_>, instance: u64) {
    let legacy = Identity::operator("shop", "settings-controller");
    let reloader = Identity::operator("shop", "config-reloader");
    let ns = "shop";
    let name = format!("settings{}", suffix(instance));
    if c.object(CONFIGMAPS, ns, &name).is_none() {
        c.create(&reloader, CONFIGMAPS, ns, json!({"metadata": {"name": name}, "data": {"version": "1"}}));
    }
    let stale = c.rv(CONFIGMAPS, ns, &name).unwrap_or_default();
    let attempts = 6;
    for attempt in 0..attempts {
        c.pause(100, 200);
        let _ = c.update(&reloader, CONFIGMAPS, ns, &name, None, None, |m| {
            m["data"]["version"] = json!((attempt + 2).to_string());
        });
        c.pause(50 + 100 * attempt, 100);
        let _ = c.update(&legacy, CONFIGMAPS, ns, &name, None, Some(&stale), |m| {
            m["data"]["mode"] = json!("strict");
        });
    }
    c.sleep_ms(300);
    c.get(&legacy, CONFIGMAPS, ns, &name);
    let recovered =
        c.update(&legacy, CONFIGMAPS, ns, &name, None, None, |m| m["data"]["mode"] = json!("strict")).is_ok();
    c.truth.conflict_storms.push(ConflictStorm {
        actor: legacy.actor_id,
        kind: "ConfigMap".into(),
        namespace: ns.into(),
        name,
        conflicts: attempts,
        recovered,
    });
}

/// Slow calls: a monitoring agent listing every pod of a large cluster, and an update held up by
/// a slow admission webhook.
fn slow(c: &mut Cluster<'_>, instance: u64) {
    let prometheus = Identity::operator("monitoring", "prometheus");
    let op = Identity::operator("webapp-system", "webapp-operator");
    for _ in 0..4 {
        c.sleep_ms(500);
        let ms = c.rng.between(1_200, 3_000);
        c.list(&prometheus, PODS, None, Some(ms));
    }
    let ns = "shop";
    let name = format!("checkout-config{}", suffix(instance));
    if c.object(CONFIGMAPS, ns, &name).is_none() {
        c.create(&op, CONFIGMAPS, ns, json!({"metadata": {"name": name}, "data": {"timeout": "30s"}}));
    }
    // A slow admission webhook holds up the write.
    c.delay_next_ms(2_300);
    let _ = c.update(&op, CONFIGMAPS, ns, &name, None, None, |m| m["data"]["timeout"] = json!("60s"));
}

/// Background traffic: the reads, watches and status writes every cluster is full of, plus the
/// occasional 404 and 403.
pub fn background(c: &mut Cluster<'_>, operations: u64) {
    let controllers = [
        Identity::controller("deployment-controller"),
        Identity::controller("replicaset-controller"),
        Identity::controller("endpointslice-controller"),
        Identity::controller("garbage-collector"),
        Identity::operator("webapp-system", "webapp-operator"),
        Identity::operator("monitoring", "prometheus"),
    ];
    let kinds = [PODS, CONFIGMAPS, SERVICES, DEPLOYMENTS, REPLICASETS];
    for _ in 0..operations {
        let who = &controllers[c.rng.below(controllers.len() as u64) as usize];
        let resource = kinds[c.rng.below(kinds.len() as u64) as usize];
        c.pause(0, 40);
        match c.rng.below(100) {
            0..60 => {
                let name = format!("obj-{}", c.rng.below(50));
                if c.rng.chance(3) {
                    c.get(who, resource, "shop", &format!("missing-{name}"));
                } else if c.object(resource, "shop", &name).is_some() {
                    c.get(who, resource, "shop", &name);
                } else {
                    c.list(who, resource, Some("shop"), None);
                }
            }
            60..85 => c.list(who, resource, Some("shop"), None),
            85..95 => {
                let seconds = c.rng.between(60, 480);
                c.watch(who, resource, Some("shop"), seconds);
            }
            95..98 => c.forbidden(who, "list", SECRETS, "kube-system", None),
            _ => {
                // Each actor writes only its own objects: background writes never fight.
                let owner = who.actor_id.rsplit('/').next().unwrap_or("x").to_owned();
                let name = format!("{owner}-state-{}", c.rng.below(50));
                if c.object(CONFIGMAPS, "shop", &name).is_none() {
                    c.create(who, CONFIGMAPS, "shop", json!({"metadata": {"name": name}, "data": {"n": "0"}}));
                } else {
                    let n = c.rng.below(1000).to_string();
                    let _ = c.update(who, CONFIGMAPS, "shop", &name, None, None, |m| m["data"]["n"] = json!(n));
                }
            }
        }
    }
}
