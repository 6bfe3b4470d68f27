//! The Arrow schema of the `operations` table and the builder that turns records into batches.
//!
//! This module is the one place that says which columns exist and what type each has;
//! `docs/SCHEMA.md` documents the same table and a test keeps the two in agreement.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::record::OperationRecord;

/// Column names users write SQL against. They are part of the product's contract.
pub mod columns {
    /// Partition column: the recording session.
    pub const SESSION_ID: &str = "session_id";
    /// Partition column: the UTC date of `received_at`, `YYYY-MM-DD`.
    pub const DATE: &str = "date";
    /// `auditID`.
    pub const AUDIT_ID: &str = "audit_id";
    /// Audit stage.
    pub const STAGE: &str = "stage";
    /// Audit level.
    pub const LEVEL: &str = "level";
    /// When the request was received.
    pub const RECEIVED_AT: &str = "received_at";
    /// When the request completed.
    pub const COMPLETED_AT: &str = "completed_at";
    /// Request latency.
    pub const DURATION_MS: &str = "duration_ms";
    /// Raw verb.
    pub const VERB: &str = "verb";
    /// Upper-cased verb.
    pub const OPERATION_TYPE: &str = "operation_type";
    /// API group.
    pub const API_GROUP: &str = "api_group";
    /// API version.
    pub const API_VERSION: &str = "api_version";
    /// Plural resource.
    pub const RESOURCE: &str = "resource";
    /// Subresource.
    pub const SUBRESOURCE: &str = "subresource";
    /// Object kind.
    pub const KIND: &str = "kind";
    /// Object namespace.
    pub const NAMESPACE: &str = "namespace";
    /// Object name.
    pub const NAME: &str = "name";
    /// Object uid.
    pub const UID: &str = "uid";
    /// Version produced by the request.
    pub const RESOURCE_VERSION: &str = "resource_version";
    /// Version the client sent.
    pub const BASE_RESOURCE_VERSION: &str = "base_resource_version";
    /// Object generation.
    pub const GENERATION: &str = "generation";
    /// Owner uids.
    pub const OWNER_UIDS: &str = "owner_uids";
    /// Actor.
    pub const ACTOR_ID: &str = "actor_id";
    /// Username.
    pub const USERNAME: &str = "username";
    /// User agent.
    pub const USER_AGENT: &str = "user_agent";
    /// Groups.
    pub const USER_GROUPS: &str = "user_groups";
    /// Source IPs.
    pub const SOURCE_IPS: &str = "source_ips";
    /// Impersonated user.
    pub const IMPERSONATED_USER: &str = "impersonated_user";
    /// Pod name of the caller.
    pub const POD_NAME: &str = "pod_name";
    /// Pod uid of the caller.
    pub const POD_UID: &str = "pod_uid";
    /// Field manager.
    pub const FIELD_MANAGER: &str = "field_manager";
    /// HTTP status.
    pub const STATUS_CODE: &str = "status_code";
    /// Failure message.
    pub const ERROR: &str = "error";
    /// Request URI.
    pub const REQUEST_URI: &str = "request_uri";
    /// Dry run.
    pub const DRY_RUN: &str = "dry_run";
    /// Request body.
    pub const REQUEST_OBJECT: &str = "request_object";
    /// Response body.
    pub const RESPONSE_OBJECT: &str = "response_object";
    /// Annotations.
    pub const ANNOTATIONS: &str = "annotations";
}

/// The timestamp type of `received_at` and `completed_at`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

static FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use columns::*;
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        utf8(AUDIT_ID, false),
        utf8(STAGE, false),
        utf8(LEVEL, true),
        Field::new(RECEIVED_AT, timestamp_type(), false),
        Field::new(COMPLETED_AT, timestamp_type(), false),
        Field::new(DURATION_MS, DataType::Float64, false),
        utf8(VERB, false),
        utf8(OPERATION_TYPE, false),
        utf8(API_GROUP, true),
        utf8(API_VERSION, true),
        utf8(RESOURCE, true),
        utf8(SUBRESOURCE, true),
        utf8(KIND, true),
        utf8(NAMESPACE, true),
        utf8(NAME, true),
        utf8(UID, true),
        utf8(RESOURCE_VERSION, true),
        utf8(BASE_RESOURCE_VERSION, true),
        Field::new(GENERATION, DataType::Int64, true),
        Field::new(OWNER_UIDS, utf8_list(), true),
        utf8(ACTOR_ID, false),
        utf8(USERNAME, true),
        utf8(USER_AGENT, true),
        Field::new(USER_GROUPS, utf8_list(), true),
        Field::new(SOURCE_IPS, utf8_list(), true),
        utf8(IMPERSONATED_USER, true),
        utf8(POD_NAME, true),
        utf8(POD_UID, true),
        utf8(FIELD_MANAGER, true),
        Field::new(STATUS_CODE, DataType::Int32, true),
        utf8(ERROR, true),
        utf8(REQUEST_URI, true),
        Field::new(DRY_RUN, DataType::Boolean, false),
        utf8(REQUEST_OBJECT, true),
        utf8(RESPONSE_OBJECT, true),
        utf8(ANNOTATIONS, true),
    ]))
});

/// The columns stored inside each Parquet file: every column of the table except the partition
/// columns, which live in the directory names (hive layout).
pub fn file_schema() -> SchemaRef {
    Arc::clone(&FILE_SCHEMA)
}

/// The partition columns, in directory order: `session_id`, then `date`.
pub fn partition_fields() -> Vec<Field> {
    vec![Field::new(columns::SESSION_ID, DataType::Utf8, false), Field::new(columns::DATE, DataType::Utf8, false)]
}

/// The full `operations` table as queries see it: the file columns followed by the partition
/// columns.
pub fn table_schema() -> SchemaRef {
    let mut fields: Vec<Field> = file_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(partition_fields());
    Arc::new(Schema::new(fields))
}

/// The name `docs/SCHEMA.md` uses for an Arrow type (`Utf8`, `Timestamp(us, UTC)`, `List<Utf8>`).
pub fn type_label(data_type: &DataType) -> String {
    match data_type {
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) => format!("Timestamp(us, {tz})"),
        DataType::List(item) => format!("List<{}>", type_label(item.data_type())),
        other => format!("{other}"),
    }
}

/// Accumulates records into Arrow column builders and produces a [`RecordBatch`] with
/// [`file_schema`]. One builder holds the records of one partition.
pub struct OperationBatchBuilder {
    audit_id: StringBuilder,
    stage: StringBuilder,
    level: StringBuilder,
    received_at: TimestampMicrosecondBuilder,
    completed_at: TimestampMicrosecondBuilder,
    duration_ms: Float64Builder,
    verb: StringBuilder,
    operation_type: StringBuilder,
    api_group: StringBuilder,
    api_version: StringBuilder,
    resource: StringBuilder,
    subresource: StringBuilder,
    kind: StringBuilder,
    namespace: StringBuilder,
    name: StringBuilder,
    uid: StringBuilder,
    resource_version: StringBuilder,
    base_resource_version: StringBuilder,
    generation: Int64Builder,
    owner_uids: ListBuilder<StringBuilder>,
    actor_id: StringBuilder,
    username: StringBuilder,
    user_agent: StringBuilder,
    user_groups: ListBuilder<StringBuilder>,
    source_ips: ListBuilder<StringBuilder>,
    impersonated_user: StringBuilder,
    pod_name: StringBuilder,
    pod_uid: StringBuilder,
    field_manager: StringBuilder,
    status_code: Int32Builder,
    error: StringBuilder,
    request_uri: StringBuilder,
    dry_run: BooleanBuilder,
    request_object: StringBuilder,
    response_object: StringBuilder,
    annotations: StringBuilder,
    rows: usize,
    bytes: usize,
    upper: [u8; 32],
    /// The most bytes each large text column (in [`finish`](Self::finish)'s order) has needed in
    /// one batch: the next batch starts with that much, so a builder that lives across a long run
    /// stops reallocating (and touching fresh pages) after its largest batch.
    text_high_water: [usize; 5],
}

impl Default for OperationBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn list_builder() -> ListBuilder<StringBuilder> {
    ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn append_list(builder: &mut ListBuilder<StringBuilder>, values: Option<&[std::borrow::Cow<'_, str>]>) -> usize {
    match values {
        Some(values) => {
            let mut bytes = 0;
            for value in values {
                builder.values().append_value(value);
                bytes += value.len();
            }
            builder.append(true);
            bytes
        }
        None => {
            builder.append(false);
            0
        }
    }
}

impl OperationBatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        Self {
            audit_id: StringBuilder::new(),
            stage: StringBuilder::new(),
            level: StringBuilder::new(),
            received_at: ts(),
            completed_at: ts(),
            duration_ms: Float64Builder::new(),
            verb: StringBuilder::new(),
            operation_type: StringBuilder::new(),
            api_group: StringBuilder::new(),
            api_version: StringBuilder::new(),
            resource: StringBuilder::new(),
            subresource: StringBuilder::new(),
            kind: StringBuilder::new(),
            namespace: StringBuilder::new(),
            name: StringBuilder::new(),
            uid: StringBuilder::new(),
            resource_version: StringBuilder::new(),
            base_resource_version: StringBuilder::new(),
            generation: Int64Builder::new(),
            owner_uids: list_builder(),
            actor_id: StringBuilder::new(),
            username: StringBuilder::new(),
            user_agent: StringBuilder::new(),
            user_groups: list_builder(),
            source_ips: list_builder(),
            impersonated_user: StringBuilder::new(),
            pod_name: StringBuilder::new(),
            pod_uid: StringBuilder::new(),
            field_manager: StringBuilder::new(),
            status_code: Int32Builder::new(),
            error: StringBuilder::new(),
            request_uri: StringBuilder::new(),
            dry_run: BooleanBuilder::new(),
            request_object: StringBuilder::new(),
            response_object: StringBuilder::new(),
            annotations: StringBuilder::new(),
            rows: 0,
            bytes: 0,
            upper: [0; 32],
            text_high_water: [0; 5],
        }
    }

    /// Records appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when nothing was appended since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Approximate bytes of string data held, used to roll files over by size.
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    /// Appends one record.
    pub fn append(&mut self, r: &OperationRecord<'_>) {
        let mut bytes = 64;
        let mut opt = |b: &mut StringBuilder, v: &Option<std::borrow::Cow<'_, str>>| match v {
            Some(v) => {
                b.append_value(v);
                bytes += v.len();
            }
            None => b.append_null(),
        };
        opt(&mut self.level, &r.level);
        opt(&mut self.api_group, &r.api_group);
        opt(&mut self.api_version, &r.api_version);
        opt(&mut self.resource, &r.resource);
        opt(&mut self.subresource, &r.subresource);
        opt(&mut self.kind, &r.kind);
        opt(&mut self.namespace, &r.namespace);
        opt(&mut self.name, &r.name);
        opt(&mut self.uid, &r.uid);
        opt(&mut self.resource_version, &r.resource_version);
        opt(&mut self.base_resource_version, &r.base_resource_version);
        opt(&mut self.username, &r.username);
        opt(&mut self.user_agent, &r.user_agent);
        opt(&mut self.impersonated_user, &r.impersonated_user);
        opt(&mut self.pod_name, &r.pod_name);
        opt(&mut self.pod_uid, &r.pod_uid);
        opt(&mut self.field_manager, &r.field_manager);
        opt(&mut self.error, &r.error);
        opt(&mut self.request_uri, &r.request_uri);
        opt(&mut self.request_object, &r.request_object);
        opt(&mut self.response_object, &r.response_object);
        opt(&mut self.annotations, &r.annotations);

        self.audit_id.append_value(&r.audit_id);
        self.stage.append_value(&r.stage);
        self.received_at.append_value(r.received_at_us);
        self.completed_at.append_value(r.completed_at_us);
        self.duration_ms.append_value(r.duration_ms());
        self.verb.append_value(&r.verb);
        // Upper-case short verbs without allocating; fall back to a String for odd long ones.
        let verb = r.verb.as_bytes();
        if verb.len() <= self.upper.len() {
            let upper = &mut self.upper[..verb.len()];
            upper.copy_from_slice(verb);
            upper.make_ascii_uppercase();
            match std::str::from_utf8(upper) {
                Ok(s) => self.operation_type.append_value(s),
                Err(_) => self.operation_type.append_value(r.operation_type()),
            }
        } else {
            self.operation_type.append_value(r.operation_type());
        }
        self.generation.append_option(r.generation);
        bytes += append_list(&mut self.owner_uids, r.owner_uids.as_deref());
        self.actor_id.append_value(&r.actor_id);
        bytes += append_list(&mut self.user_groups, r.user_groups.as_deref());
        bytes += append_list(&mut self.source_ips, r.source_ips.as_deref());
        self.status_code.append_option(r.status_code);
        self.dry_run.append_value(r.dry_run);
        bytes += r.audit_id.len() + r.actor_id.len() + 2 * r.verb.len() + r.stage.len();
        self.bytes += bytes;
        self.rows += 1;
    }

    /// Builds the batch of everything appended so far and resets the builder.
    ///
    /// The large text columns are re-created with the most capacity any batch so far needed, so
    /// the next batch of similar records is appended without a single buffer reallocation.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let rows = self.rows;
        let high_water = &mut self.text_high_water;
        let mut presized = |column: usize, b: &mut StringBuilder| {
            let used = b.values_slice().len();
            high_water[column] = high_water[column].max(used + used / 8);
            std::mem::replace(b, StringBuilder::with_capacity(rows, high_water[column])).finish()
        };
        let request_object = presized(0, &mut self.request_object);
        let response_object = presized(1, &mut self.response_object);
        let annotations = presized(2, &mut self.annotations);
        let request_uri = presized(3, &mut self.request_uri);
        let user_agent = presized(4, &mut self.user_agent);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.audit_id.finish()),
            Arc::new(self.stage.finish()),
            Arc::new(self.level.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.completed_at.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.verb.finish()),
            Arc::new(self.operation_type.finish()),
            Arc::new(self.api_group.finish()),
            Arc::new(self.api_version.finish()),
            Arc::new(self.resource.finish()),
            Arc::new(self.subresource.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.namespace.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.uid.finish()),
            Arc::new(self.resource_version.finish()),
            Arc::new(self.base_resource_version.finish()),
            Arc::new(self.generation.finish()),
            Arc::new(self.owner_uids.finish()),
            Arc::new(self.actor_id.finish()),
            Arc::new(self.username.finish()),
            Arc::new(user_agent),
            Arc::new(self.user_groups.finish()),
            Arc::new(self.source_ips.finish()),
            Arc::new(self.impersonated_user.finish()),
            Arc::new(self.pod_name.finish()),
            Arc::new(self.pod_uid.finish()),
            Arc::new(self.field_manager.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.error.finish()),
            Arc::new(request_uri),
            Arc::new(self.dry_run.finish()),
            Arc::new(request_object),
            Arc::new(response_object),
            Arc::new(annotations),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(file_schema(), columns)
    }
}
