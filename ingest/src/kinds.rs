//! From a plural resource name to its kind (`pods` -> `Pod`), for events that carry no object.

use std::borrow::Cow;

/// Resources whose kind is not simply the singular capitalised, and the common built-in ones so that
/// multi-word kinds come out in their real CamelCase.
const KNOWN: &[(&str, &str)] = &[
    ("pods", "Pod"),
    ("services", "Service"),
    ("endpoints", "Endpoints"),
    ("endpointslices", "EndpointSlice"),
    ("configmaps", "ConfigMap"),
    ("secrets", "Secret"),
    ("namespaces", "Namespace"),
    ("nodes", "Node"),
    ("events", "Event"),
    ("serviceaccounts", "ServiceAccount"),
    ("persistentvolumes", "PersistentVolume"),
    ("persistentvolumeclaims", "PersistentVolumeClaim"),
    ("replicationcontrollers", "ReplicationController"),
    ("resourcequotas", "ResourceQuota"),
    ("limitranges", "LimitRange"),
    ("podtemplates", "PodTemplate"),
    ("componentstatuses", "ComponentStatus"),
    ("bindings", "Binding"),
    ("deployments", "Deployment"),
    ("replicasets", "ReplicaSet"),
    ("statefulsets", "StatefulSet"),
    ("daemonsets", "DaemonSet"),
    ("controllerrevisions", "ControllerRevision"),
    ("jobs", "Job"),
    ("cronjobs", "CronJob"),
    ("horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    ("poddisruptionbudgets", "PodDisruptionBudget"),
    ("ingresses", "Ingress"),
    ("ingressclasses", "IngressClass"),
    ("networkpolicies", "NetworkPolicy"),
    ("roles", "Role"),
    ("rolebindings", "RoleBinding"),
    ("clusterroles", "ClusterRole"),
    ("clusterrolebindings", "ClusterRoleBinding"),
    ("leases", "Lease"),
    ("customresourcedefinitions", "CustomResourceDefinition"),
    ("apiservices", "APIService"),
    ("mutatingwebhookconfigurations", "MutatingWebhookConfiguration"),
    ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration"),
    ("validatingadmissionpolicies", "ValidatingAdmissionPolicy"),
    ("validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding"),
    ("storageclasses", "StorageClass"),
    ("volumeattachments", "VolumeAttachment"),
    ("csidrivers", "CSIDriver"),
    ("csinodes", "CSINode"),
    ("csistoragecapacities", "CSIStorageCapacity"),
    ("priorityclasses", "PriorityClass"),
    ("runtimeclasses", "RuntimeClass"),
    ("certificatesigningrequests", "CertificateSigningRequest"),
    ("tokenreviews", "TokenReview"),
    ("subjectaccessreviews", "SubjectAccessReview"),
    ("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
    ("selfsubjectrulesreviews", "SelfSubjectRulesReview"),
    ("localsubjectaccessreviews", "LocalSubjectAccessReview"),
    ("selfsubjectreviews", "SelfSubjectReview"),
    ("flowschemas", "FlowSchema"),
    ("prioritylevelconfigurations", "PriorityLevelConfiguration"),
    ("podsecuritypolicies", "PodSecurityPolicy"),
];

/// The kind for a plural resource name: the built-in table first, then the English plural rules
/// that cover custom resources (`widgets` -> `Widget`, `policies` -> `Policy`,
/// `gateways` -> `Gateway`, `ingresses` -> `Ingress`). Custom kinds come out with only their first
/// letter capitalised, which is the best a name without the CRD can give.
pub fn kind_for_resource(resource: &str) -> Cow<'static, str> {
    if let Some((_, kind)) = KNOWN.iter().find(|(r, _)| *r == resource) {
        return Cow::Borrowed(kind);
    }
    let singular = if let Some(stem) = resource.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = resource.strip_suffix("sses") {
        format!("{stem}ss")
    } else if let Some(stem) = resource.strip_suffix("ches").or_else(|| resource.strip_suffix("shes")) {
        format!("{}{}", stem, &resource[stem.len()..stem.len() + 2])
    } else if let Some(stem) = resource.strip_suffix("xes") {
        format!("{stem}x")
    } else if let Some(stem) = resource.strip_suffix('s') {
        stem.to_owned()
    } else {
        resource.to_owned()
    };
    let mut chars = singular.chars();
    Cow::Owned(match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::kind_for_resource;

    #[test]
    fn built_in_and_custom_resources() {
        for (resource, kind) in [
            ("pods", "Pod"),
            ("replicasets", "ReplicaSet"),
            ("endpoints", "Endpoints"),
            ("ingresses", "Ingress"),
            ("networkpolicies", "NetworkPolicy"),
            ("widgets", "Widget"),
            ("gatewayclasses", "Gatewayclass"),
            ("policies", "Policy"),
            ("batches", "Batch"),
            ("boxes", "Box"),
            ("data", "Data"),
        ] {
            assert_eq!(kind_for_resource(resource), kind, "{resource}");
        }
    }
}
