//! The simulated API server: one resourceVersion counter, stored objects with uids, generations
//! and owner references, optimistic concurrency (a stale base version gets 409 Conflict), and an
//! audit event for every request, at the levels of KubeStep's audit policy (writes at
//! `RequestResponse`, reads at `Metadata`).
//!
//! Calls are sequential on a simulated clock: a request starts after the previous one completed
//! plus a small gap, so "B's write came after A's" is a fact of the history.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::identity::Identity;
use crate::rng::Rng;
use crate::truth::GroundTruth;

/// A kind of object the simulated API server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// Plural resource name.
    pub resource: &'static str,
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Whether `metadata.generation` is kept (bumped by spec changes).
    pub has_generation: bool,
}

impl Resource {
    fn api_version(&self) -> String {
        match self.group {
            "" => self.version.to_owned(),
            g => format!("{g}/{}", self.version),
        }
    }

    fn path_prefix(&self) -> String {
        match self.group {
            "" => format!("/api/{}", self.version),
            g => format!("/apis/{g}/{}", self.version),
        }
    }
}

/// `apps/v1` Deployments.
pub const DEPLOYMENTS: Resource =
    Resource { resource: "deployments", group: "apps", version: "v1", kind: "Deployment", has_generation: true };
/// `apps/v1` ReplicaSets.
pub const REPLICASETS: Resource =
    Resource { resource: "replicasets", group: "apps", version: "v1", kind: "ReplicaSet", has_generation: true };
/// Pods.
pub const PODS: Resource = Resource { resource: "pods", group: "", version: "v1", kind: "Pod", has_generation: false };
/// ConfigMaps.
pub const CONFIGMAPS: Resource =
    Resource { resource: "configmaps", group: "", version: "v1", kind: "ConfigMap", has_generation: false };
/// Services.
pub const SERVICES: Resource =
    Resource { resource: "services", group: "", version: "v1", kind: "Service", has_generation: false };
/// Secrets (only ever refused here).
pub const SECRETS: Resource =
    Resource { resource: "secrets", group: "", version: "v1", kind: "Secret", has_generation: false };
/// The example operator's custom resource.
pub const WEBAPPS: Resource =
    Resource { resource: "webapps", group: "example.com", version: "v1", kind: "WebApp", has_generation: true };

/// A write refused because the client's base version was stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The version the client sent.
    pub sent: String,
    /// The current version.
    pub current: String,
}

/// Receives every audit event, in the order they complete... or near enough: in call order.
pub type EventSink<'s> = dyn FnMut(Value) + 's;

/// The simulated API server and its clock.
pub struct Cluster<'s> {
    /// Random choices.
    pub rng: Rng,
    now_us: i64,
    rv: u64,
    objects: BTreeMap<(String, String, String), Value>,
    sink: &'s mut EventSink<'s>,
    delay_us: Option<i64>,
    /// What the history holds, for tests and the demo.
    pub truth: GroundTruth,
}

/// Microseconds since the epoch as the API server prints MicroTime: six fractional digits.
pub fn micro_time(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => "1970-01-01T00:00:00.000000Z".into(),
    }
}

fn seconds_time(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "1970-01-01T00:00:00Z".into(),
    }
}

/// What one request looks like to [`Cluster::emit`].
struct Request<'a> {
    who: &'a Identity,
    verb: &'a str,
    resource: Resource,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
    query: &'a str,
    code: u16,
    latency_us: i64,
    request_object: Option<Value>,
    response_object: Option<Value>,
    failure: Option<Value>,
    ref_uid: Option<String>,
    ref_rv: Option<String>,
}

impl<'s> Cluster<'s> {
    /// An empty cluster whose clock starts at `start_us`, sending events to `sink`.
    pub fn new(seed: u64, start_us: i64, sink: &'s mut EventSink<'s>) -> Self {
        Cluster {
            rng: Rng::new(seed),
            now_us: start_us,
            rv: 1000,
            objects: BTreeMap::new(),
            sink,
            delay_us: None,
            truth: GroundTruth::default(),
        }
    }

    /// The simulated time, in microseconds since the epoch.
    pub fn now_us(&self) -> i64 {
        self.now_us
    }

    /// Lets `ms` milliseconds pass.
    pub fn sleep_ms(&mut self, ms: u64) {
        self.now_us += (ms * 1000) as i64;
    }

    /// Lets `base_ms` plus up to `jitter_ms` random milliseconds pass.
    pub fn pause(&mut self, base_ms: u64, jitter_ms: u64) {
        let jitter = self.rng.below(jitter_ms.max(1));
        self.sleep_ms(base_ms + jitter);
    }

    /// Makes the next request take `ms` milliseconds (a slow webhook, an overloaded etcd).
    pub fn delay_next_ms(&mut self, ms: u64) {
        self.delay_us = Some((ms * 1000) as i64);
    }

    /// The stored object, if any.
    pub fn object(&self, resource: Resource, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(resource.kind.to_owned(), namespace.to_owned(), name.to_owned()))
    }

    /// The stored object's resourceVersion.
    pub fn rv(&self, resource: Resource, namespace: &str, name: &str) -> Option<String> {
        self.object(resource, namespace, name)?["metadata"]["resourceVersion"].as_str().map(str::to_owned)
    }

    /// The stored object's uid.
    pub fn uid(&self, resource: Resource, namespace: &str, name: &str) -> Option<String> {
        self.object(resource, namespace, name)?["metadata"]["uid"].as_str().map(str::to_owned)
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1 + self.rng.below(3);
        self.rv.to_string()
    }

    fn managed_fields(&self, who: &Identity, resource: Resource, subresource: Option<&str>) -> Value {
        let manager = who.user_agent.split('/').next().unwrap_or("unknown");
        let mut entry = json!({
            "manager": manager, "operation": "Update", "apiVersion": resource.api_version(),
            "time": seconds_time(self.now_us), "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}
        });
        if let Some(sub) = subresource {
            entry["subresource"] = json!(sub);
        }
        json!([entry])
    }

    /// `POST`: creates `object` (kind, apiVersion, metadata.name/namespace/labels/ownerReferences,
    /// spec...). Returns the stored object.
    pub fn create(&mut self, who: &Identity, resource: Resource, namespace: &str, mut object: Value) -> Value {
        let name = object["metadata"]["name"].as_str().unwrap_or("unnamed").to_owned();
        object["kind"] = json!(resource.kind);
        object["apiVersion"] = json!(resource.api_version());
        object["metadata"]["namespace"] = json!(namespace);
        let request = object.clone();
        let rv = self.next_rv();
        let meta = &mut object["metadata"];
        meta["uid"] = json!(self.rng.uuid());
        meta["resourceVersion"] = json!(rv);
        meta["creationTimestamp"] = json!(seconds_time(self.now_us));
        if resource.has_generation {
            meta["generation"] = json!(1);
        }
        object["metadata"]["managedFields"] = self.managed_fields(who, resource, None);
        self.objects.insert((resource.kind.into(), namespace.into(), name.clone()), object.clone());
        let latency_us = self.rng.latency_us(6);
        self.emit(Request {
            who,
            verb: "create",
            resource,
            namespace: Some(namespace),
            name: Some(&name),
            subresource: None,
            query: "",
            code: 201,
            latency_us,
            request_object: Some(request),
            response_object: Some(object.clone()),
            failure: None,
            ref_uid: None,
            ref_rv: None,
        });
        object
    }

    /// `PUT` of the object (or its `status` subresource) as the client holds it at version
    /// `base` (`None`: the current version, as after a fresh GET), changed by `change`. A stale
    /// `base` is answered 409 Conflict and changes nothing. Spec changes bump the generation;
    /// status writes never do.
    #[allow(clippy::too_many_arguments)] // a PUT is addressed by every one of these
    pub fn update(
        &mut self,
        who: &Identity,
        resource: Resource,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
        base: Option<&str>,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, Conflict> {
        let key = (resource.kind.to_owned(), namespace.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            self.missing(who, "update", resource, namespace, name);
            return Err(Conflict { sent: base.unwrap_or("").into(), current: String::new() });
        };
        let current_rv = current["metadata"]["resourceVersion"].as_str().unwrap_or("").to_owned();
        let sent = base.unwrap_or(&current_rv).to_owned();
        let mut request = current.clone();
        request["metadata"]["resourceVersion"] = json!(sent);
        if let Some(meta) = request["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        change(&mut request);
        let latency_us = self.rng.latency_us(8);
        if sent != current_rv {
            let failure = json!({
                "metadata": {}, "status": "Failure",
                "message": format!(
                    "Operation cannot be fulfilled on {}{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    resource.resource,
                    if resource.group.is_empty() { String::new() } else { format!(".{}", resource.group) }
                ),
                "reason": "Conflict",
                "details": {"name": name, "group": resource.group, "kind": resource.resource},
                "code": 409
            });
            self.emit(Request {
                who,
                verb: "update",
                resource,
                namespace: Some(namespace),
                name: Some(name),
                subresource,
                query: "",
                code: 409,
                latency_us,
                request_object: Some(request),
                response_object: Some(failure.clone()),
                failure: Some(failure),
                ref_uid: current["metadata"]["uid"].as_str().map(str::to_owned),
                ref_rv: Some(sent.clone()),
            });
            return Err(Conflict { sent, current: current_rv });
        }
        let mut stored = current.clone();
        match subresource {
            Some("status") => stored["status"] = request["status"].clone(),
            _ => {
                for (k, v) in request.as_object().into_iter().flatten() {
                    if k != "metadata" && k != "status" {
                        stored[k.as_str()] = v.clone();
                    }
                }
                for field in ["labels", "annotations", "ownerReferences"] {
                    if !request["metadata"][field].is_null() {
                        stored["metadata"][field] = request["metadata"][field].clone();
                    }
                }
                if resource.has_generation && stored["spec"] != current["spec"] {
                    let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    stored["metadata"]["generation"] = json!(generation);
                }
            }
        }
        stored["metadata"]["resourceVersion"] = json!(self.next_rv());
        stored["metadata"]["managedFields"] = self.managed_fields(who, resource, subresource);
        self.objects.insert(key, stored.clone());
        self.emit(Request {
            who,
            verb: "update",
            resource,
            namespace: Some(namespace),
            name: Some(name),
            subresource,
            query: "",
            code: 200,
            latency_us,
            request_object: Some(request),
            response_object: Some(stored.clone()),
            failure: None,
            ref_uid: current["metadata"]["uid"].as_str().map(str::to_owned),
            ref_rv: Some(sent),
        });
        Ok(stored)
    }

    /// `DELETE`: answered with a Status carrying the uid, as most built-in kinds do.
    pub fn delete(&mut self, who: &Identity, resource: Resource, namespace: &str, name: &str) {
        let key = (resource.kind.to_owned(), namespace.to_owned(), name.to_owned());
        let Some(current) = self.objects.remove(&key) else {
            self.missing(who, "delete", resource, namespace, name);
            return;
        };
        let uid = current["metadata"]["uid"].clone();
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": resource.group, "kind": resource.resource, "uid": uid}
        });
        let latency_us = self.rng.latency_us(7);
        self.emit(Request {
            who,
            verb: "delete",
            resource,
            namespace: Some(namespace),
            name: Some(name),
            subresource: None,
            query: "",
            code: 200,
            latency_us,
            request_object: Some(json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/__internal", "propagationPolicy": "Background"})),
            response_object: Some(status),
            failure: None,
            ref_uid: None,
            ref_rv: None,
        });
    }

    /// `GET` of one object (404 when it does not exist).
    pub fn get(&mut self, who: &Identity, resource: Resource, namespace: &str, name: &str) {
        if self.object(resource, namespace, name).is_none() {
            self.missing(who, "get", resource, namespace, name);
            return;
        }
        let latency_us = self.rng.latency_us(2);
        self.read(who, "get", resource, Some(namespace), Some(name), "", latency_us, 200);
    }

    /// `GET` of a collection; `latency_ms` overrides the usual latency (large lists are slow).
    pub fn list(&mut self, who: &Identity, resource: Resource, namespace: Option<&str>, latency_ms: Option<u64>) {
        let latency_us = match latency_ms {
            Some(ms) => (ms * 1000 + self.rng.below(50_000)) as i64,
            None => self.rng.latency_us(5),
        };
        self.read(who, "list", resource, namespace, None, "?limit=500&resourceVersion=0", latency_us, 200);
    }

    /// A watch that ran for `seconds` (its event arrives when it ends).
    pub fn watch(&mut self, who: &Identity, resource: Resource, namespace: Option<&str>, seconds: u64) {
        let query = format!("?allowWatchBookmarks=true&resourceVersion={}&timeout={seconds}s&watch=true", self.rv);
        let latency_us = (seconds * 1_000_000) as i64;
        // The watch started `seconds` ago: its record is placed at its start.
        let end = self.now_us;
        self.now_us -= latency_us;
        self.read(who, "watch", resource, namespace, None, &query, latency_us, 200);
        self.now_us = end + 1000;
    }

    /// A request refused by RBAC.
    pub fn forbidden(&mut self, who: &Identity, verb: &str, resource: Resource, namespace: &str, name: Option<&str>) {
        let failure = json!({
            "metadata": {}, "status": "Failure",
            "message": format!(
                "{} \"{}\" is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group \"{}\" in the namespace \"{namespace}\"",
                resource.resource, name.unwrap_or(""), who.username, resource.resource, resource.group
            ),
            "reason": "Forbidden",
            "details": {"name": name.unwrap_or(""), "group": resource.group, "kind": resource.resource},
            "code": 403
        });
        let latency_us = self.rng.latency_us(1);
        self.emit(Request {
            who,
            verb,
            resource,
            namespace: Some(namespace),
            name,
            subresource: None,
            query: "",
            code: 403,
            latency_us,
            request_object: None,
            response_object: None,
            failure: Some(failure),
            ref_uid: None,
            ref_rv: None,
        });
    }

    fn missing(&mut self, who: &Identity, verb: &str, resource: Resource, namespace: &str, name: &str) {
        let group = if resource.group.is_empty() { String::new() } else { format!(".{}", resource.group) };
        let failure = json!({
            "metadata": {}, "status": "Failure",
            "message": format!("{}{group} \"{name}\" not found", resource.resource),
            "reason": "NotFound",
            "details": {"name": name, "group": resource.group, "kind": resource.resource},
            "code": 404
        });
        let latency_us = self.rng.latency_us(2);
        self.emit(Request {
            who,
            verb,
            resource,
            namespace: Some(namespace),
            name: Some(name),
            subresource: None,
            query: "",
            code: 404,
            latency_us,
            request_object: None,
            response_object: None,
            failure: Some(failure),
            ref_uid: None,
            ref_rv: None,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        who: &Identity,
        verb: &str,
        resource: Resource,
        namespace: Option<&str>,
        name: Option<&str>,
        query: &str,
        latency_us: i64,
        code: u16,
    ) {
        self.emit(Request {
            who,
            verb,
            resource,
            namespace,
            name,
            subresource: None,
            query,
            code,
            latency_us,
            request_object: None,
            response_object: None,
            failure: None,
            ref_uid: None,
            ref_rv: None,
        });
    }

    /// Builds the audit event of a request, hands it to the sink and moves the clock past it.
    fn emit(&mut self, mut r: Request<'_>) {
        if let Some(delay) = self.delay_us.take() {
            r.latency_us = delay;
        }
        let received = self.now_us;
        let completed = received + r.latency_us;
        let mut uri = r.resource.path_prefix();
        if let Some(ns) = r.namespace {
            uri.push_str(&format!("/namespaces/{ns}"));
        }
        uri.push('/');
        uri.push_str(r.resource.resource);
        if let Some(name) = r.name.filter(|_| r.verb != "create") {
            uri.push_str(&format!("/{name}"));
        }
        if let Some(sub) = r.subresource {
            uri.push_str(&format!("/{sub}"));
        }
        uri.push_str(r.query);
        let writes = matches!(r.verb, "create" | "update" | "patch" | "delete");
        let level = if writes { "RequestResponse" } else { "Metadata" };
        let mut object_ref = json!({"resource": r.resource.resource, "apiVersion": r.resource.version});
        if !r.resource.group.is_empty() {
            object_ref["apiGroup"] = json!(r.resource.group);
        }
        if let Some(ns) = r.namespace {
            object_ref["namespace"] = json!(ns);
        }
        if let Some(name) = r.name {
            object_ref["name"] = json!(name);
        }
        if let Some(sub) = r.subresource {
            object_ref["subresource"] = json!(sub);
        }
        if let Some(uid) = r.ref_uid {
            object_ref["uid"] = json!(uid);
        }
        if let Some(rv) = r.ref_rv {
            object_ref["resourceVersion"] = json!(rv);
        }
        let mut user = json!({"username": r.who.username, "groups": r.who.groups});
        if !r.who.uid.is_empty() {
            user["uid"] = json!(r.who.uid);
        }
        if let Some((pod, pod_uid)) = &r.who.pod {
            user["extra"] = json!({
                "authentication.kubernetes.io/pod-name": [pod],
                "authentication.kubernetes.io/pod-uid": [pod_uid]
            });
        }
        let decision = if r.code == 403 { "forbid" } else { "allow" };
        let mut annotations = json!({"authorization.k8s.io/decision": decision});
        if r.code != 403 {
            annotations["authorization.k8s.io/reason"] = json!(format!(
                "RBAC: allowed by ClusterRoleBinding \"{}\" of ClusterRole \"{}\"",
                r.who.actor_id.replace('/', ":"),
                r.who.actor_id.replace('/', ":")
            ));
        }
        let response_status = match r.failure {
            Some(failure) => failure,
            None => json!({"metadata": {}, "code": r.code}),
        };
        let mut event = json!({
            "level": level,
            "auditID": self.rng.uuid(),
            "stage": "ResponseComplete",
            "requestURI": uri,
            "verb": r.verb,
            "user": user,
            "sourceIPs": [r.who.source_ip],
            "userAgent": r.who.user_agent,
            "objectRef": object_ref,
            "responseStatus": response_status,
            "requestReceivedTimestamp": micro_time(received),
            "stageTimestamp": micro_time(completed),
            "annotations": annotations,
        });
        if writes {
            if let Some(request) = r.request_object {
                event["requestObject"] = request;
            }
            if let Some(response) = r.response_object {
                event["responseObject"] = response;
            }
        }
        self.truth.count(r.verb, r.code, r.latency_us);
        (self.sink)(event);
        if r.verb != "watch" {
            self.now_us = completed + 200 + self.rng.below(3_000) as i64;
        }
    }
}
