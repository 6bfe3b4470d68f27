//! Realistic audit events for the benchmarks: kube-controller-manager identities and user agents,
//! reads at Metadata level, Deployment status updates at RequestResponse with full objects
//! (managedFields included), and 409 Conflicts. Deterministic: every run measures the same bytes.

#![allow(dead_code)]

/// A small deterministic generator (64-bit LCG), so every run measures the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CONTROLLERS: [&str; 6] = [
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "garbage-collector",
    "statefulset-controller",
    "job-controller",
];

fn uid(rng: &mut Rng) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        rng.next(),
        rng.below(65536),
        rng.below(4096),
        rng.below(4096),
        rng.next()
    )
}

fn deployment(name: &str, ns: &str, uid: &str, rv: u64, generation: u64, replicas: u64) -> String {
    format!(
        r#"{{"kind":"Deployment","apiVersion":"apps/v1","metadata":{{"name":"{name}","namespace":"{ns}","uid":"{uid}","resourceVersion":"{rv}","generation":{generation},"creationTimestamp":"2024-05-01T09:00:00Z","labels":{{"app":"{name}","team":"payments"}},"annotations":{{"deployment.kubernetes.io/revision":"{generation}"}},"managedFields":[{{"manager":"kubectl-client-side-apply","operation":"Update","apiVersion":"apps/v1","time":"2024-05-01T09:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:labels":{{".":{{}},"f:app":{{}}}}}},"f:spec":{{"f:replicas":{{}},"f:selector":{{}},"f:template":{{"f:spec":{{"f:containers":{{"k:{{\"name\":\"app\"}}":{{".":{{}},"f:image":{{}}}}}}}}}}}}}}}},{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"apps/v1","subresource":"status","time":"2024-05-01T09:00:05Z","fieldsType":"FieldsV1","fieldsV1":{{"f:status":{{"f:availableReplicas":{{}},"f:readyReplicas":{{}}}}}}}}]}},"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"{name}"}}}},"template":{{"metadata":{{"labels":{{"app":"{name}"}}}},"spec":{{"containers":[{{"name":"app","image":"registry.example.com/{name}:1.{generation}.0","ports":[{{"containerPort":8080,"protocol":"TCP"}}],"resources":{{"requests":{{"cpu":"100m","memory":"128Mi"}}}}}}]}}}},"strategy":{{"type":"RollingUpdate","rollingUpdate":{{"maxUnavailable":"25%","maxSurge":"25%"}}}}}},"status":{{"observedGeneration":{generation},"replicas":{replicas},"updatedReplicas":{replicas},"readyReplicas":{replicas},"availableReplicas":{replicas},"conditions":[{{"type":"Available","status":"True","reason":"MinimumReplicasAvailable"}}]}}}}"#
    )
}

/// About `target_bytes` of JSON lines: reads at Metadata level, writes at RequestResponse, some 409s.
pub fn realistic_audit_log(target_bytes: usize) -> Vec<u8> {
    let mut rng = Rng(42);
    let mut out = Vec::with_capacity(target_bytes + 8192);
    let mut rv = 1_000_000u64;
    let mut t_us = 1_714_554_000_000_000i64;
    let deployments: Vec<(String, String)> = (0..50).map(|i| (format!("svc-{i}"), uid(&mut rng))).collect();
    while out.len() < target_bytes {
        t_us += rng.below(20_000) as i64;
        let latency = 500 + rng.below(40_000) as i64;
        let received = chrono_rfc3339(t_us);
        let completed = chrono_rfc3339(t_us + latency);
        let controller = CONTROLLERS[rng.below(CONTROLLERS.len() as u64) as usize];
        let (name, duid) = &deployments[rng.below(deployments.len() as u64) as usize];
        let ns = "payments";
        let audit_id = uid(&mut rng);
        let user = format!(
            r#""user":{{"username":"system:serviceaccount:kube-system:{controller}","uid":"{}","groups":["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]}},"sourceIPs":["10.0.0.{}"],"userAgent":"kube-controller-manager/v1.30.2 (linux/amd64) kubernetes/3968350/system:serviceaccount:kube-system:{controller}""#,
            uid(&mut rng),
            rng.below(250)
        );
        let annotations = format!(
            r#""annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"system:controller:{controller}\" of ClusterRole \"system:controller:{controller}\" to ServiceAccount \"{controller}/kube-system\""}}"#
        );
        let kind = rng.below(100);
        let line = if kind < 45 {
            format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{audit_id}","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/{ns}/deployments/{name}","verb":"get",{user},"objectRef":{{"resource":"deployments","namespace":"{ns}","name":"{name}","apiGroup":"apps","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{received}","stageTimestamp":"{completed}",{annotations}}}"#
            )
        } else if kind < 60 {
            let verb = if kind < 52 { "list" } else { "watch" };
            format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{audit_id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{name}&resourceVersion={rv}&{verb}=true","verb":"{verb}",{user},"objectRef":{{"resource":"pods","namespace":"{ns}","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{received}","stageTimestamp":"{completed}",{annotations}}}"#
            )
        } else if kind < 95 {
            let base = rv;
            rv += 1 + rng.below(5);
            let replicas = 1 + rng.below(5);
            let generation = 1 + rng.below(20);
            let request = deployment(name, ns, duid, base, generation, replicas);
            let response = deployment(name, ns, duid, rv, generation, replicas);
            format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"{audit_id}","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/{ns}/deployments/{name}/status","verb":"update",{user},"objectRef":{{"resource":"deployments","namespace":"{ns}","name":"{name}","uid":"{duid}","apiGroup":"apps","apiVersion":"v1","resourceVersion":"{base}","subresource":"status"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestObject":{request},"responseObject":{response},"requestReceivedTimestamp":"{received}","stageTimestamp":"{completed}",{annotations}}}"#
            )
        } else {
            format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{audit_id}","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/{ns}/deployments/{name}","verb":"update",{user},"objectRef":{{"resource":"deployments","namespace":"{ns}","name":"{name}","uid":"{duid}","apiGroup":"apps","apiVersion":"v1","resourceVersion":"{}"}},"responseStatus":{{"metadata":{{}},"status":"Failure","message":"Operation cannot be fulfilled on deployments.apps \"{name}\": the object has been modified; please apply your changes to the latest version and try again","reason":"Conflict","details":{{"name":"{name}","group":"apps","kind":"deployments"}},"code":409}},"requestReceivedTimestamp":"{received}","stageTimestamp":"{completed}",{annotations}}}"#,
                rv - 3
            )
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

fn chrono_rfc3339(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // 2024-05-01 is day 19844 since the epoch; the generated span stays within May 2024.
    let day_of_month = days - 19_844 + 1;
    format!("2024-05-{:02}T{:02}:{:02}:{:02}.{micros:06}Z", day_of_month, rem / 3600, rem / 60 % 60, rem % 60)
}
