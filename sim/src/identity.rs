//! Who makes requests in the simulated cluster, with the usernames, groups, user agents and
//! service-account extras real clusters show (see the audit reference, "Identities and user agents").

/// A client of the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The actor KubeStep should derive for this client.
    pub actor_id: String,
    /// `user.username`.
    pub username: String,
    /// `user.uid`.
    pub uid: String,
    /// `user.groups`.
    pub groups: Vec<String>,
    /// `userAgent`.
    pub user_agent: String,
    /// `authentication.kubernetes.io/pod-name` and `pod-uid`, for bound service-account tokens.
    pub pod: Option<(String, String)>,
    /// `sourceIPs[0]`.
    pub source_ip: String,
}

const K8S_VERSION: &str = "v1.30.2";
const K8S_COMMIT: &str = "3968350";

impl Identity {
    /// A kube-controller-manager controller running with `--use-service-account-credentials`.
    pub fn controller(name: &str) -> Self {
        Identity {
            actor_id: format!("kube-system/{name}"),
            username: format!("system:serviceaccount:kube-system:{name}"),
            uid: stable_uid(name),
            groups: sa_groups("kube-system"),
            user_agent: format!(
                "kube-controller-manager/{K8S_VERSION} (linux/amd64) kubernetes/{K8S_COMMIT}/system:serviceaccount:kube-system:{name}"
            ),
            pod: None,
            source_ip: "10.0.0.10".into(),
        }
    }

    /// The scheduler.
    pub fn scheduler() -> Self {
        Identity {
            actor_id: "system:kube-scheduler".into(),
            username: "system:kube-scheduler".into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
            user_agent: format!("kube-scheduler/{K8S_VERSION} (linux/amd64) kubernetes/{K8S_COMMIT}/scheduler"),
            pod: None,
            source_ip: "10.0.0.10".into(),
        }
    }

    /// The kubelet of `node`.
    pub fn kubelet(node: &str) -> Self {
        Identity {
            actor_id: format!("system:node:{node}"),
            username: format!("system:node:{node}"),
            uid: String::new(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
            user_agent: format!("kubelet/{K8S_VERSION} (linux/amd64) kubernetes/{K8S_COMMIT}"),
            pod: None,
            source_ip: "10.0.1.21".into(),
        }
    }

    /// A person with kubectl.
    pub fn user(email: &str) -> Self {
        Identity {
            actor_id: email.into(),
            username: email.into(),
            uid: stable_uid(email),
            groups: vec!["developers".into(), "system:authenticated".into()],
            user_agent: format!("kubectl/{K8S_VERSION} (linux/amd64) kubernetes/{K8S_COMMIT}"),
            pod: None,
            source_ip: "192.168.7.14".into(),
        }
    }

    /// A controller-runtime operator in a pod, with a bound service-account token and the
    /// ubiquitous `manager/v0.0.0` user agent.
    pub fn operator(namespace: &str, service_account: &str) -> Self {
        Identity {
            actor_id: format!("{namespace}/{service_account}"),
            username: format!("system:serviceaccount:{namespace}:{service_account}"),
            uid: stable_uid(service_account),
            groups: sa_groups(namespace),
            user_agent: "manager/v0.0.0 (linux/amd64) kubernetes/$Format".into(),
            pod: Some((format!("{service_account}-7d9f8b6c5-x2x4q"), stable_uid(&format!("pod-{service_account}")))),
            source_ip: "10.244.1.17".into(),
        }
    }
}

fn sa_groups(namespace: &str) -> Vec<String> {
    vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}"), "system:authenticated".into()]
}

/// A uid derived from a name, so identities are the same in every run.
fn stable_uid(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let g = h.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", h >> 32, (h >> 16) & 0xffff, h & 0xfff, g & 0xfff, g >> 16)
}
