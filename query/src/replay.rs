//! `kubestep replay SESSION`: the steps of a session in order, streamed a batch at a time.

use std::collections::VecDeque;

use datafusion::arrow::array::RecordBatch;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use serde::Serialize;

use crate::QueryError;
use crate::context::{collect, frame};
use crate::diff::{FieldChange, diff_objects};
use crate::values::{Floats, Ints, Micros, Strings, format_time};

const REPLAY_SQL: &str = include_str!("../sql/replay.sql");
const WRITE_DIFFS_SQL: &str = include_str!("../sql/write_diffs.sql");
const STEP_OBJECTS_SQL: &str = include_str!("../sql/step_objects.sql");

/// `--object KIND/NAMESPACE/NAME` (or `KIND/NAME` for cluster-scoped objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFilter {
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectFilter {
    /// Parses `KIND/NS/NAME` or `KIND/NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let (kind, namespace, name) = match parts.as_slice() {
            [kind, name] => (*kind, "", *name),
            [kind, namespace, name] => (*kind, *namespace, *name),
            _ => return Err(format!("{text:?} is not KIND/NAMESPACE/NAME (or KIND/NAME for cluster-scoped objects)")),
        };
        if kind.is_empty() || name.is_empty() {
            return Err(format!("{text:?} needs a kind and a name"));
        }
        Ok(Self { kind: kind.to_owned(), namespace: namespace.to_owned(), name: name.to_owned() })
    }
}

/// Which steps to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayQuery {
    /// The session.
    pub session: String,
    /// First index (of the whole session) to show.
    pub from: u64,
    /// At most this many steps.
    pub limit: Option<usize>,
    /// Only this actor's steps.
    pub actor: Option<String>,
    /// Only steps on this object.
    pub object: Option<ObjectFilter>,
    /// Only writes.
    pub writes_only: bool,
    /// Attach to each write what it changed in the object.
    pub diff: bool,
    /// With `diff`, keep bookkeeping fields too.
    pub all_fields: bool,
}

/// One step of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Position in the session (0-based).
    pub index: u64,
    /// `index + 1`.
    pub sequence_number: u64,
    /// When the request was received.
    pub time: String,
    /// Who made it.
    pub actor_id: String,
    /// Its user agent.
    pub user_agent: Option<String>,
    /// Raw verb.
    pub verb: String,
    /// `GET`, `UPDATE`, ...
    pub operation_type: String,
    /// Object kind.
    pub kind: Option<String>,
    /// Object namespace.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, ...).
    pub subresource: Option<String>,
    /// Object uid.
    pub uid: Option<String>,
    /// The version the client sent.
    pub base_resource_version: Option<String>,
    /// The version the request produced.
    pub resource_version: Option<String>,
    /// HTTP status.
    pub status_code: Option<i64>,
    /// Milliseconds.
    pub duration_ms: f64,
    /// The failure message.
    pub error: Option<String>,
    /// The audit ID.
    pub audit_id: String,
    /// With `--diff`, for a successful write of an object seen before: the fields it changed
    /// (empty for a no-op write).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<FieldChange>>,
}

impl Step {
    /// `Kind ns/name` (or `Kind name` for cluster-scoped objects, `Kind` for collections).
    pub fn object_label(&self) -> String {
        let kind = self.kind.as_deref().unwrap_or("?");
        match (self.namespace.as_deref(), self.name.as_deref()) {
            (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
            (None, Some(name)) => format!("{kind} {name}"),
            (Some(ns), None) => format!("{kind} {ns}/*"),
            (None, None) => kind.to_owned(),
        }
    }
}

/// The steps of a replay, a batch at a time.
pub struct StepStream {
    steps: SendableRecordBatchStream,
    pending: VecDeque<Step>,
    diffs: Option<DiffCursor>,
    remaining: Option<usize>,
}

struct DiffCursor {
    stream: SendableRecordBatchStream,
    pending: VecDeque<(u64, Option<String>, Option<String>)>,
    all_fields: bool,
    done: bool,
}

impl DiffCursor {
    /// The changes of the write at `index`, if it is a successful write with an object.
    async fn changes_at(&mut self, index: u64) -> Result<Option<Vec<FieldChange>>, QueryError> {
        loop {
            while let Some((i, _, _)) = self.pending.front() {
                if *i < index {
                    self.pending.pop_front();
                } else {
                    break;
                }
            }
            if let Some((i, new, old)) = self.pending.front() {
                if *i != index {
                    return Ok(None);
                }
                // Without a previous version (a create, or the first write seen) there is nothing to compare.
                return Ok(match (old, new) {
                    (Some(old), Some(new)) => diff_objects(old, new, self.all_fields).ok(),
                    _ => None,
                });
            }
            if self.done {
                return Ok(None);
            }
            match self.stream.next().await {
                Some(batch) => {
                    let batch = batch?;
                    let idx = Ints::of(&batch, "index")?;
                    let new = Strings::of(&batch, "response_object")?;
                    let old = Strings::of(&batch, "previous_object")?;
                    for row in 0..batch.num_rows() {
                        self.pending.push_back((idx.get(row).unwrap_or(0) as u64, new.owned(row), old.owned(row)));
                    }
                }
                None => self.done = true,
            }
        }
    }
}

impl StepStream {
    /// The next step, or `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Step, QueryError>> {
        if self.remaining == Some(0) {
            return None;
        }
        while self.pending.is_empty() {
            match self.steps.next().await? {
                Ok(batch) => match steps_of(&batch) {
                    Ok(steps) => self.pending.extend(steps),
                    Err(e) => return Some(Err(e)),
                },
                Err(e) => return Some(Err(e.into())),
            }
        }
        let mut step = self.pending.pop_front()?;
        if let Some(diffs) = &mut self.diffs {
            match diffs.changes_at(step.index).await {
                Ok(changes) => step.changes = changes,
                Err(e) => return Some(Err(e)),
            }
        }
        if let Some(n) = &mut self.remaining {
            *n -= 1;
        }
        Some(Ok(step))
    }
}

fn steps_of(batch: &RecordBatch) -> Result<Vec<Step>, QueryError> {
    let index = Ints::of(batch, "index")?;
    let seq = Ints::of(batch, "sequence_number")?;
    let received = Micros::of(batch, "received_at")?;
    let s = |name| Strings::of(batch, name);
    let (actor, agent, verb, op) = (s("actor_id")?, s("user_agent")?, s("verb")?, s("operation_type")?);
    let (kind, ns, name, sub, uid) = (s("kind")?, s("namespace")?, s("name")?, s("subresource")?, s("uid")?);
    let (base, rv, error, audit) = (s("base_resource_version")?, s("resource_version")?, s("error")?, s("audit_id")?);
    let status = Ints::of(batch, "status_code")?;
    let duration = Floats::of(batch, "duration_ms")?;
    Ok((0..batch.num_rows())
        .map(|row| Step {
            index: index.get(row).unwrap_or(0) as u64,
            sequence_number: seq.get(row).unwrap_or(0) as u64,
            time: received.get(row).map(format_time).unwrap_or_default(),
            actor_id: actor.text(row),
            user_agent: agent.owned(row),
            verb: verb.text(row),
            operation_type: op.text(row),
            kind: kind.owned(row),
            namespace: ns.owned(row),
            name: name.owned(row),
            subresource: sub.owned(row),
            uid: uid.owned(row),
            base_resource_version: base.owned(row),
            resource_version: rv.owned(row),
            status_code: status.get(row),
            duration_ms: duration.get(row).unwrap_or(0.0),
            error: error.owned(row),
            audit_id: audit.text(row),
            changes: None,
        })
        .collect())
}

/// Starts a replay (the session must exist; see [`crate::context::ensure_session`]).
pub async fn replay(ctx: &SessionContext, query: &ReplayQuery) -> Result<StepStream, QueryError> {
    crate::consistency::consistently(ctx, || replay_once(ctx, query)).await
}

async fn replay_once(ctx: &SessionContext, query: &ReplayQuery) -> Result<StepStream, QueryError> {
    let text = |v: Option<&str>| ScalarValue::Utf8(v.map(str::to_owned));
    let params = vec![
        ScalarValue::from(query.session.as_str()),
        ScalarValue::Int64(Some(query.from as i64)),
        text(query.actor.as_deref()),
        text(query.object.as_ref().map(|o| o.kind.as_str())),
        text(query.object.as_ref().map(|o| o.namespace.as_str())),
        text(query.object.as_ref().map(|o| o.name.as_str())),
        ScalarValue::Boolean(Some(query.writes_only)),
    ];
    let steps = match query.limit {
        Some(limit) => frame(ctx, &format!("{REPLAY_SQL}LIMIT {limit}\n"), params).await?,
        None => frame(ctx, REPLAY_SQL, params).await?,
    };
    let diffs = match query.diff {
        true => {
            let params = vec![ScalarValue::from(query.session.as_str()), ScalarValue::Int64(Some(query.from as i64))];
            let stream = frame(ctx, WRITE_DIFFS_SQL, params).await?.execute_stream().await?;
            Some(DiffCursor { stream, pending: VecDeque::new(), all_fields: query.all_fields, done: false })
        }
        false => None,
    };
    Ok(StepStream { steps: steps.execute_stream().await?, pending: VecDeque::new(), diffs, remaining: query.limit })
}

/// The objects of one step, for `replay -i`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepObjects {
    /// The request body, as JSON text.
    pub request: Option<String>,
    /// The response body.
    pub response: Option<String>,
    /// The object as the previous successful write of the same uid left it.
    pub previous: Option<String>,
}

/// The objects of step `index` of `session`.
pub async fn step_objects(ctx: &SessionContext, session: &str, index: u64) -> Result<StepObjects, QueryError> {
    let params = vec![ScalarValue::from(session), ScalarValue::Int64(Some(index as i64))];
    for batch in collect(ctx, STEP_OBJECTS_SQL, params).await? {
        if batch.num_rows() > 0 {
            return Ok(StepObjects {
                request: Strings::of(&batch, "request_object")?.owned(0),
                response: Strings::of(&batch, "response_object")?.owned(0),
                previous: Strings::of(&batch, "previous_object")?.owned(0),
            });
        }
    }
    Ok(StepObjects::default())
}

#[cfg(test)]
mod tests {
    use super::ObjectFilter;

    #[test]
    fn object_filters_take_a_namespace_or_not() {
        let namespaced = ObjectFilter::parse("Deployment/prod/web").unwrap();
        assert_eq!(
            (namespaced.kind.as_str(), namespaced.namespace.as_str(), namespaced.name.as_str()),
            ("Deployment", "prod", "web")
        );
        assert_eq!(ObjectFilter::parse("Node/n1").unwrap().namespace, "");
        assert!(ObjectFilter::parse("web").is_err());
        assert!(ObjectFilter::parse("a/b/c/d").is_err());
        assert!(ObjectFilter::parse("/ns/").is_err());
    }
}
