//! The operation record: one row of the `operations` table, one Kubernetes API request.

use std::borrow::Cow;

/// One API request as KubeStep stores it. Strings borrow from the decoded event where possible so
/// that turning an event into a record copies nothing until the record is appended to Arrow.
///
/// `session_id` and `date` are not fields: they are the record's partition
/// (`operations/session_id=<id>/date=<YYYY-MM-DD>/`), and `duration_ms` and `operation_type` are
/// derived from other fields when the record is appended to a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperationRecord<'a> {
    /// `auditID`.
    pub audit_id: Cow<'a, str>,
    /// `ResponseComplete` or `Panic`.
    pub stage: Cow<'a, str>,
    /// Audit level the policy chose.
    pub level: Option<Cow<'a, str>>,
    /// `requestReceivedTimestamp`, microseconds since the Unix epoch (UTC).
    pub received_at_us: i64,
    /// `stageTimestamp`, microseconds since the Unix epoch (UTC).
    pub completed_at_us: i64,
    /// Raw verb.
    pub verb: Cow<'a, str>,
    /// `objectRef.apiGroup`.
    pub api_group: Option<Cow<'a, str>>,
    /// `objectRef.apiVersion`.
    pub api_version: Option<Cow<'a, str>>,
    /// `objectRef.resource`.
    pub resource: Option<Cow<'a, str>>,
    /// `objectRef.subresource`.
    pub subresource: Option<Cow<'a, str>>,
    /// Object kind (`Pod`), from the objects or derived from the resource.
    pub kind: Option<Cow<'a, str>>,
    /// Object namespace.
    pub namespace: Option<Cow<'a, str>>,
    /// Object name.
    pub name: Option<Cow<'a, str>>,
    /// Object uid.
    pub uid: Option<Cow<'a, str>>,
    /// The resourceVersion the request produced.
    pub resource_version: Option<Cow<'a, str>>,
    /// The resourceVersion the client sent.
    pub base_resource_version: Option<Cow<'a, str>>,
    /// `metadata.generation` after the request.
    pub generation: Option<i64>,
    /// Owner uids of the object.
    pub owner_uids: Option<Vec<Cow<'a, str>>>,
    /// The controller or person behind the request.
    pub actor_id: Cow<'a, str>,
    /// `user.username`.
    pub username: Option<Cow<'a, str>>,
    /// `userAgent`.
    pub user_agent: Option<Cow<'a, str>>,
    /// `user.groups`.
    pub user_groups: Option<Vec<Cow<'a, str>>>,
    /// `sourceIPs`.
    pub source_ips: Option<Vec<Cow<'a, str>>>,
    /// `impersonatedUser.username`.
    pub impersonated_user: Option<Cow<'a, str>>,
    /// Pod behind a bound service-account token.
    pub pod_name: Option<Cow<'a, str>>,
    /// Uid of the pod behind a bound service-account token.
    pub pod_uid: Option<Cow<'a, str>>,
    /// `fieldManager` query parameter.
    pub field_manager: Option<Cow<'a, str>>,
    /// `responseStatus.code`.
    pub status_code: Option<i32>,
    /// Failure message when `status_code >= 400`.
    pub error: Option<Cow<'a, str>>,
    /// `requestURI`.
    pub request_uri: Option<Cow<'a, str>>,
    /// `dryRun=All` was requested.
    pub dry_run: bool,
    /// Request body (JSON), redacted and size-capped.
    pub request_object: Option<Cow<'a, str>>,
    /// Response body (JSON), redacted and size-capped.
    pub response_object: Option<Cow<'a, str>>,
    /// `annotations` (JSON).
    pub annotations: Option<Cow<'a, str>>,
}

impl OperationRecord<'_> {
    /// `completed_at - received_at` in milliseconds, with microsecond precision.
    pub fn duration_ms(&self) -> f64 {
        (self.completed_at_us - self.received_at_us) as f64 / 1000.0
    }

    /// The seed tool's operation type: the verb upper-cased.
    pub fn operation_type(&self) -> String {
        self.verb.to_ascii_uppercase()
    }
}
