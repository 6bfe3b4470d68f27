//! The deploy kit parses into typed structs that reject unknown fields: the audit policy and the
//! webhook kubeconfigs mirror their Kubernetes types here; the in-cluster manifests use the
//! k8s-openapi types and must survive a round trip through them unchanged (so a misspelt field,
//! which those types would drop, fails the test).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

#[path = "common/ballista.rs"]
mod ballista;

fn deploy(file: &str) -> String {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = Path::new(&dir).join("deploy").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `audit.k8s.io/v1` Policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Policy {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Option<Value>,
    rules: Vec<PolicyRule>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: Option<bool>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

/// `audit.k8s.io/v1` PolicyRule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct PolicyRule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: Option<bool>,
}

/// `audit.k8s.io/v1` GroupResources.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// The parts of a client kubeconfig (`v1` Config) the webhook backend reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(dead_code)]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    clusters: Vec<Named<Cluster>>,
    users: Vec<Named<User>>,
    contexts: Vec<Named<Context>>,
    current_context: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(dead_code)]
struct Cluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: Option<bool>,
    tls_server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(dead_code)]
struct User {
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Context {
    cluster: String,
    user: String,
}

#[test]
fn the_audit_policy_is_a_valid_policy_that_records_writes_fully_and_secrets_never() {
    let policy: Policy = serde_norway::from_str(&deploy("audit-policy.yaml")).expect("a valid audit.k8s.io/v1 Policy");
    assert_eq!(policy.api_version, "audit.k8s.io/v1");
    assert_eq!(policy.kind, "Policy");
    assert_eq!(policy.omit_stages, [Stage::RequestReceived]);
    // First matching rule wins: find the rule a request falls under.
    let level_of = |verb: &str, group: &str, resource: &str| -> &Level {
        &policy
            .rules
            .iter()
            .find(|r| {
                (r.verbs.is_empty() || r.verbs.iter().any(|v| v == verb))
                    && r.users.is_empty()
                    && r.user_groups.is_empty()
                    && r.non_resource_urls.is_empty()
                    && (r.resources.is_empty()
                        || r.resources.iter().any(|g| g.group == group && g.resources.iter().any(|x| x == resource)))
            })
            .expect("a catch-all rule")
            .level
    };
    assert_eq!(level_of("update", "apps", "deployments"), &Level::RequestResponse);
    assert_eq!(level_of("patch", "example.com", "webapps"), &Level::RequestResponse);
    assert_eq!(level_of("get", "", "pods"), &Level::Metadata);
    assert_eq!(level_of("update", "", "secrets"), &Level::Metadata);
    assert_eq!(level_of("create", "", "serviceaccounts/token"), &Level::Metadata);
    assert_eq!(level_of("create", "", "events"), &Level::None);
    assert_eq!(level_of("update", "coordination.k8s.io", "leases"), &Level::None);

    let typo = deploy("audit-policy.yaml").replace("omitStages:", "omitStage:");
    assert!(serde_norway::from_str::<Policy>(&typo).is_err(), "unknown fields are refused");
}

#[test]
fn the_webhook_kubeconfigs_are_valid_and_authenticate() {
    for file in ["webhook-kubeconfig.yaml", "kind/webhook-kubeconfig.yaml"] {
        let config: Kubeconfig = serde_norway::from_str(&deploy(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(config.kind, "Config");
        assert!(config.clusters[0].value.server.ends_with("/audit"), "{file}");
        let user = &config.users[0].value;
        assert!(user.token.is_some() || (user.client_certificate.is_some() && user.client_key.is_some()), "{file}");
        assert_eq!(config.contexts[0].name, config.current_context);
    }
    let kind_token = deploy("kind/token");
    let kind_config: Kubeconfig = serde_norway::from_str(&deploy("kind/webhook-kubeconfig.yaml")).unwrap();
    assert!(kind_token.lines().any(|l| Some(l.trim()) == kind_config.users[0].value.token.as_deref()));
}

/// Deserializes `doc` as `T` and checks that serializing it again gives the same JSON.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, doc, "a field was not understood");
}

#[test]
fn the_manifests_are_valid_kubernetes_objects() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::batch::v1::CronJob;
    use k8s_openapi::api::core::v1::{Namespace, Service};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    for (file, expected) in [
        ("kubestep.yaml", &["Namespace", "Service", "StatefulSet", "NetworkPolicy"][..]),
        ("kubestep-replicas.yaml", &["Namespace", "Service", "StatefulSet", "CronJob", "NetworkPolicy"][..]),
    ] {
        let mut kinds = Vec::new();
        for document in serde_norway::Deserializer::from_str(&deploy(file)) {
            let doc = Value::deserialize(document).unwrap();
            let kind = doc["kind"].as_str().unwrap().to_owned();
            match kind.as_str() {
                "Namespace" => round_trip::<Namespace>(&doc),
                "Service" => round_trip::<Service>(&doc),
                "StatefulSet" => round_trip::<StatefulSet>(&doc),
                "NetworkPolicy" => round_trip::<NetworkPolicy>(&doc),
                "CronJob" => round_trip::<CronJob>(&doc),
                other => panic!("{file}: unexpected kind {other}"),
            }
            kinds.push(kind);
        }
        assert_eq!(kinds, expected, "{file}");
    }
    let text = deploy("kubestep.yaml");
    // The webhook kubeconfig points at the Service's fixed ClusterIP and port.
    let service: Service = serde_norway::Deserializer::from_str(&text)
        .filter_map(|d| Value::deserialize(d).ok())
        .find(|d| d["kind"] == "Service")
        .map(|d| serde_json::from_value(d).unwrap())
        .unwrap();
    let spec = service.spec.unwrap();
    let endpoint = format!("https://{}:{}/audit", spec.cluster_ip.unwrap(), spec.ports.unwrap()[0].port);
    assert!(deploy("webhook-kubeconfig.yaml").contains(&endpoint), "{endpoint}");
}

#[test]
fn the_replicas_record_into_a_bucket_through_a_spool_volume_each() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let statefulset: StatefulSet = serde_norway::Deserializer::from_str(&deploy("kubestep-replicas.yaml"))
        .filter_map(|d| Value::deserialize(d).ok())
        .find(|d| d["kind"] == "StatefulSet")
        .map(|d| serde_json::from_value(d).unwrap())
        .unwrap();
    let spec = statefulset.spec;
    assert!(spec.replicas.unwrap() > 1);
    let pod = spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap();
    let flag = |name: &str| args.iter().find_map(|a| a.strip_prefix(&format!("--{name}="))).map(str::to_owned);
    let data = flag("data").unwrap();
    assert!(data.starts_with("s3://"), "{data}");
    // The flags are the binary's own: `serve --help` lists each one.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in args.iter().skip(1) {
        let name = arg.split('=').next().unwrap();
        assert!(help.contains(name), "serve has no {name}");
    }
    // The spool is a volume claimed per replica, mounted where --spool points.
    let spool = flag("spool").unwrap();
    let mount = container.volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == spool).unwrap();
    let claims = spec.volume_claim_templates.unwrap();
    assert!(claims.iter().any(|c| c.metadata.name.as_deref() == Some(mount.name.as_str())));
    // Bucket credentials come from a Secret through the environment.
    assert!(container.env_from.as_ref().unwrap().iter().any(|e| e.secret_ref.is_some()));

    // The compaction job works on the same bucket, never twice at once, with the same credentials
    // and a writable scratch directory for the merged files.
    use k8s_openapi::api::batch::v1::CronJob;
    let cron: CronJob = serde_norway::Deserializer::from_str(&deploy("kubestep-replicas.yaml"))
        .filter_map(|d| Value::deserialize(d).ok())
        .find(|d| d["kind"] == "CronJob")
        .map(|d| serde_json::from_value(d).unwrap())
        .unwrap();
    let cron = cron.spec;
    assert_eq!(cron.concurrency_policy.as_deref(), Some("Forbid"));
    let job = cron.job_template.spec.unwrap().template.spec.unwrap();
    let compact = &job.containers[0];
    let compact_args = compact.args.clone().unwrap();
    assert_eq!(compact_args[0], "compact");
    assert!(compact_args.contains(&format!("--data={data}")), "{compact_args:?}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep")).args(["compact", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in compact_args.iter().skip(1) {
        let name = arg.split('=').next().unwrap();
        assert!(help.contains(name), "compact has no {name}");
    }
    assert!(compact.env_from.as_ref().unwrap().iter().any(|e| e.secret_ref.is_some()));
    let tmpdir = compact.env.as_ref().unwrap().iter().find(|e| e.name == "TMPDIR").and_then(|e| e.value.clone());
    let scratch = compact.volume_mounts.as_ref().unwrap().iter().find(|m| Some(&m.mount_path) == tmpdir.as_ref());
    let scratch = scratch.expect("TMPDIR is a mounted volume");
    assert!(job.volumes.unwrap().iter().any(|v| v.name == scratch.name && v.empty_dir.is_some()));
}

#[test]
fn the_ballista_cluster_runs_the_stock_binaries_with_their_own_flags() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Namespace, Service};
    let mut deployments = Vec::new();
    for document in serde_norway::Deserializer::from_str(&deploy("ballista.yaml")) {
        let doc = Value::deserialize(document).unwrap();
        match doc["kind"].as_str().unwrap() {
            "Namespace" => round_trip::<Namespace>(&doc),
            "Service" => round_trip::<Service>(&doc),
            "Deployment" => {
                round_trip::<Deployment>(&doc);
                deployments.push(serde_json::from_value::<Deployment>(doc).unwrap());
            }
            other => panic!("ballista.yaml: unexpected kind {other}"),
        }
    }
    assert_eq!(deployments.len(), 2, "a scheduler and the executors");
    // The image is built from the same release the tests run against.
    let dockerfile = deploy("ballista.Dockerfile");
    assert!(dockerfile.contains("ballista-scheduler@55.0.0 ballista-executor@55.0.0"));
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/test")).unwrap();
    assert!(ci.contains("ballista-scheduler@55.0.0 ballista-executor@55.0.0"));
    let bin = ballista::binaries();
    for deployment in deployments {
        let pod = deployment.spec.template.spec.unwrap();
        let container = &pod.containers[0];
        let program = container.command.as_ref().unwrap()[0].clone();
        assert!(program == "ballista-scheduler" || program == "ballista-executor", "{program}");
        // Every flag is one the binary knows (its --help lists it).
        let help = std::process::Command::new(bin.join(&program)).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for arg in container.args.as_ref().unwrap() {
            let name = arg.split('=').next().unwrap();
            assert!(help.contains(name), "{program} has no {name}");
        }
        // Both read the bucket with the recording's credentials.
        assert!(container.env_from.as_ref().unwrap().iter().any(|e| e.secret_ref.is_some()), "{program}");
    }
}
