//! The `audit.k8s.io/v1` wire types, as the API server writes them.
//!
//! Strings borrow from the input buffer where they can (`Cow` falls back to an owned string only
//! when the JSON string contains escapes), and `requestObject` / `responseObject` stay raw JSON so
//! that decoding an event never builds a value tree for the (often large) objects it carries.
//! Unknown fields are ignored, which is what lets pre-v1 events (extra `timestamp` and `metadata`)
//! and vendor-enriched events (`p_*`, `_source_file`) decode with the same types.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One audit event (`kind: Event`). Every field is optional here: the API server always writes
/// `level`, `auditID`, `stage`, `requestURI`, `verb`, `user` and the two timestamps, but files from
/// other tools do not, and the normalizer decides what an event must have to become a record.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event<'a> {
    /// `"Event"` in log-backend lines; absent in webhook `EventList.items`.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub kind: Option<Cow<'a, str>>,
    /// `"audit.k8s.io/v1"`; absent in webhook items and in some pre-v1 events.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub api_version: Option<Cow<'a, str>>,
    /// `Metadata`, `Request` or `RequestResponse`.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub level: Option<Cow<'a, str>>,
    /// Unique per request unless the client sent an `Audit-ID` header.
    #[serde(rename = "auditID", borrow, default, deserialize_with = "optional_text")]
    pub audit_id: Option<Cow<'a, str>>,
    /// `RequestReceived`, `ResponseStarted`, `ResponseComplete` or `Panic`.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub stage: Option<Cow<'a, str>>,
    /// Path and raw query of the request.
    #[serde(rename = "requestURI", borrow, default, deserialize_with = "optional_text")]
    pub request_uri: Option<Cow<'a, str>>,
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...).
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub verb: Option<Cow<'a, str>>,
    /// The authenticated user.
    #[serde(borrow, default)]
    pub user: Option<UserInfo<'a>>,
    /// The user the request impersonated, if any.
    #[serde(borrow, default)]
    pub impersonated_user: Option<UserInfo<'a>>,
    /// Client addresses, the last one being the direct peer.
    #[serde(rename = "sourceIPs", borrow, default, deserialize_with = "optional_texts")]
    pub source_ips: Option<Vec<Cow<'a, str>>>,
    /// The client's `User-Agent`.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub user_agent: Option<Cow<'a, str>>,
    /// The object the request was about; absent for non-resource requests.
    #[serde(borrow, default)]
    pub object_ref: Option<ObjectReference<'a>>,
    /// The response's status (`code` always; message, reason and details for failures).
    #[serde(borrow, default)]
    pub response_status: Option<ResponseStatus<'a>>,
    /// The request body, at level `Request` and above.
    #[serde(borrow, default)]
    pub request_object: Option<&'a RawValue>,
    /// The response body, at level `RequestResponse`.
    #[serde(borrow, default)]
    pub response_object: Option<&'a RawValue>,
    /// When the API server received the request.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub request_received_timestamp: Option<Cow<'a, str>>,
    /// When the event's stage was reached.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub stage_timestamp: Option<Cow<'a, str>>,
    /// Free-form annotations (authorization decision, latency, truncation...).
    #[serde(borrow, default)]
    pub annotations: Option<&'a RawValue>,
    /// Pre-v1 events carry one `timestamp` instead of the two timestamps above.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub timestamp: Option<Cow<'a, str>>,
}

/// `authentication/v1 UserInfo`.
#[derive(Debug, Default, Deserialize)]
pub struct UserInfo<'a> {
    /// `system:serviceaccount:NS:NAME`, `system:kube-scheduler`, `alice@example.com`, ...
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub username: Option<Cow<'a, str>>,
    /// Group memberships.
    #[serde(borrow, default, deserialize_with = "optional_texts")]
    pub groups: Option<Vec<Cow<'a, str>>>,
    /// The extra attributes KubeStep uses: which pod a bound service-account token belongs to.
    #[serde(borrow, default)]
    pub extra: Option<UserExtra<'a>>,
}

/// The `user.extra` keys that identify the pod behind a bound service-account token; every other
/// key is skipped without being materialised.
#[derive(Debug, Default, Deserialize)]
pub struct UserExtra<'a> {
    /// `authentication.kubernetes.io/pod-name`
    #[serde(rename = "authentication.kubernetes.io/pod-name", borrow, default, deserialize_with = "optional_texts")]
    pub pod_name: Option<Vec<Cow<'a, str>>>,
    /// `authentication.kubernetes.io/pod-uid`
    #[serde(rename = "authentication.kubernetes.io/pod-uid", borrow, default, deserialize_with = "optional_texts")]
    pub pod_uid: Option<Vec<Cow<'a, str>>>,
}

/// `objectRef`: what the URL (and, for writes, the request body's metadata) said about the object.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference<'a> {
    /// Plural resource name (`pods`, `deployments`).
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub resource: Option<Cow<'a, str>>,
    /// Namespace; absent for cluster-scoped objects.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub namespace: Option<Cow<'a, str>>,
    /// Object name; absent for collections and for creates rejected before the body was read.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub name: Option<Cow<'a, str>>,
    /// Object uid, when the request body carried one.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub uid: Option<Cow<'a, str>>,
    /// API group (empty for the core group).
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub api_group: Option<Cow<'a, str>>,
    /// API version.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub api_version: Option<Cow<'a, str>>,
    /// The resourceVersion the client **sent** (a precondition), not the one the write produced.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub resource_version: Option<Cow<'a, str>>,
    /// `status`, `scale`, `exec`, ...
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub subresource: Option<Cow<'a, str>>,
}

/// `responseStatus`, a `metav1.Status`.
#[derive(Debug, Default, Deserialize)]
pub struct ResponseStatus<'a> {
    /// HTTP status code.
    #[serde(default)]
    pub code: Option<i32>,
    /// `Success` or `Failure`.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub status: Option<Cow<'a, str>>,
    /// Human-readable description.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub message: Option<Cow<'a, str>>,
    /// Machine-readable reason (`Conflict`, `NotFound`, `Forbidden`, ...).
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub reason: Option<Cow<'a, str>>,
    /// Which object the status is about; deletes name the deleted object's uid here.
    #[serde(borrow, default)]
    pub details: Option<StatusDetails<'a>>,
}

/// `metav1.StatusDetails`.
#[derive(Debug, Default, Deserialize)]
pub struct StatusDetails<'a> {
    /// Object name.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub name: Option<Cow<'a, str>>,
    /// Plural resource name, despite the field's name.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub kind: Option<Cow<'a, str>>,
    /// Object uid.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub uid: Option<Cow<'a, str>>,
}

/// The head of a Kubernetes object (request or response body): enough to identify it and its
/// version without materialising the rest of it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectHead<'a> {
    /// `Pod`, `Deployment`, `Status`, `PodList`, ...
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub kind: Option<Cow<'a, str>>,
    /// The object's `apiVersion`.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub api_version: Option<Cow<'a, str>>,
    /// `metadata`.
    #[serde(borrow, default)]
    pub metadata: Option<ObjectMeta<'a>>,
    /// `details` of a `Status` object (a delete's response).
    #[serde(borrow, default)]
    pub details: Option<StatusDetails<'a>>,
}

/// The `metadata` fields of an object that KubeStep records.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta<'a> {
    /// Object name.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub name: Option<Cow<'a, str>>,
    /// Object namespace.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub namespace: Option<Cow<'a, str>>,
    /// Object uid.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub uid: Option<Cow<'a, str>>,
    /// Opaque version string; compare for equality only.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub resource_version: Option<Cow<'a, str>>,
    /// Bumped by spec changes only.
    #[serde(default)]
    pub generation: Option<i64>,
    /// Owners of the object.
    #[serde(borrow, default)]
    pub owner_references: Option<Vec<OwnerReference<'a>>>,
}

/// One `metadata.ownerReferences[]` entry (only its uid is recorded).
#[derive(Debug, Default, Deserialize)]
pub struct OwnerReference<'a> {
    /// The owner's uid.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub uid: Option<Cow<'a, str>>,
}

/// `EventList`, the body of every webhook POST.
#[derive(Debug, Deserialize)]
pub struct EventList<'a> {
    /// `"EventList"`.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub kind: Option<Cow<'a, str>>,
    /// The events, kept raw so that one bad item does not fail the list.
    #[serde(borrow, default)]
    pub items: Vec<&'a RawValue>,
}

/// A JSON string that borrows from the input unless it contains escapes. (`Cow<str>`'s own
/// `Deserialize` always allocates, even under `#[serde(borrow)]` when wrapped in `Option` or `Vec`.)
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

fn optional_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(Option::<Text<'de>>::deserialize(deserializer)?.map(|t| t.0))
}

fn optional_texts<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<Cow<'de, str>>>, D::Error> {
    Ok(Option::<Vec<Text<'de>>>::deserialize(deserializer)?.map(|v| v.into_iter().map(|t| t.0).collect()))
}

impl<'a> ObjectHead<'a> {
    /// Reads the head of the object `json`, stopping as soon as `kind` and `metadata` have been
    /// seen (Kubernetes writes them before `spec` and `status`), so the bulk of a large object is
    /// never scanned a second time. `Status` objects are read to the end for their `details`.
    /// Returns `None` when `json` is not an object.
    pub fn parse(json: &'a str) -> Option<ObjectHead<'a>> {
        let mut head = ObjectHead::default();
        let mut complete = false;
        let mut de = serde_json::Deserializer::from_str(json);
        match serde::de::DeserializeSeed::deserialize(HeadSeed { out: &mut head, complete: &mut complete }, &mut de) {
            Ok(()) => Some(head),
            Err(_) if complete => Some(head),
            Err(_) => None,
        }
    }
}

/// The message of the error that ends reading an object head early; not an error at all (the seed
/// sets `complete` before returning it).
const HEAD_COMPLETE: &str = "kubestep: object head complete";

struct HeadSeed<'s, 'a> {
    out: &'s mut ObjectHead<'a>,
    complete: &'s mut bool,
}

impl<'de, 's> serde::de::DeserializeSeed<'de> for HeadSeed<'s, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, 's> serde::de::Visitor<'de> for HeadSeed<'s, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen_kind = false;
        let mut seen_metadata = false;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match key.as_ref() {
                "kind" => {
                    self.out.kind = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0);
                    seen_kind = true;
                }
                "apiVersion" => self.out.api_version = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                "metadata" => {
                    // Everything a head needs precedes `managedFields` in the API server's own
                    // encoding, and `managedFields` is often the largest part of `metadata`: once
                    // the kind is known, reading may stop there (see `MetaSeed`).
                    let may_stop = seen_kind && self.out.kind.as_deref() != Some("Status");
                    let mut stopped = false;
                    let seed = MetaSeed { out: &mut self.out.metadata, may_stop, stopped: &mut stopped };
                    match map.next_value_seed(seed) {
                        Ok(()) => seen_metadata = true,
                        Err(_) if stopped => {
                            *self.complete = true;
                            return Err(serde::de::Error::custom(HEAD_COMPLETE));
                        }
                        Err(err) => return Err(err),
                    }
                }
                "details" => self.out.details = map.next_value()?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            if seen_kind && seen_metadata && self.out.kind.as_deref() != Some("Status") {
                *self.complete = true;
                return Err(serde::de::Error::custom(HEAD_COMPLETE));
            }
        }
        Ok(())
    }
}

/// Reads an object's `metadata` into an [`ObjectMeta`]. With `may_stop`, reading ends at
/// `managedFields` when `uid` and `resourceVersion` have already been seen: the API server writes
/// `managedFields` last (after `ownerReferences` and `generation`), so nothing the head needs can
/// follow. Metadata whose keys come in another order (sorted by a log pipeline, say, where
/// `managedFields` precedes `uid`) is read to its end. Stopping is reported through `stopped` and
/// an error, which the caller turns into a complete head.
struct MetaSeed<'s, 'a> {
    out: &'s mut Option<ObjectMeta<'a>>,
    may_stop: bool,
    stopped: &'s mut bool,
}

impl<'de, 's> serde::de::DeserializeSeed<'de> for MetaSeed<'s, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, 's> serde::de::Visitor<'de> for MetaSeed<'s, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("object metadata")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let meta = self.out.insert(ObjectMeta::default());
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            let text = |map: &mut A| Ok::<_, A::Error>(map.next_value::<Option<Text<'de>>>()?.map(|t| t.0));
            match key.as_ref() {
                "name" => meta.name = text(&mut map)?,
                "namespace" => meta.namespace = text(&mut map)?,
                "uid" => meta.uid = text(&mut map)?,
                "resourceVersion" => meta.resource_version = text(&mut map)?,
                "generation" => meta.generation = map.next_value()?,
                "ownerReferences" => meta.owner_references = map.next_value()?,
                "managedFields" if self.may_stop && meta.uid.is_some() && meta.resource_version.is_some() => {
                    *self.stopped = true;
                    return Err(serde::de::Error::custom(HEAD_COMPLETE));
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_borrow_from_the_input_unless_they_hold_escapes() {
        let json = r#"{"auditID":"a-1","verb":"get","userAgent":"say \"hi\"","sourceIPs":["10.0.0.1"],
            "user":{"username":"alice","groups":["system:authenticated"]},"objectRef":{"name":"p","namespace":"n"}}"#;
        let event: Event<'_> = serde_json::from_str(json).unwrap();
        let borrowed = |c: &Option<Cow<'_, str>>| matches!(c, Some(Cow::Borrowed(_)));
        assert!(borrowed(&event.audit_id) && borrowed(&event.verb));
        assert_eq!(event.user_agent.as_deref(), Some("say \"hi\""));
        assert!(matches!(event.user_agent, Some(Cow::Owned(_))), "an escaped string has to be unescaped");
        assert!(matches!(event.source_ips.as_deref(), Some([Cow::Borrowed("10.0.0.1")])));
        let user = event.user.unwrap();
        assert!(borrowed(&user.username));
        assert!(matches!(user.groups.as_deref(), Some([Cow::Borrowed("system:authenticated")])));
        let object = event.object_ref.unwrap();
        assert!(borrowed(&object.name) && borrowed(&object.namespace));
        let head =
            ObjectHead::parse(r#"{"kind":"Pod","metadata":{"name":"p","ownerReferences":[{"uid":"o"}]}}"#).unwrap();
        assert!(borrowed(&head.kind));
        let meta = head.metadata.unwrap();
        assert!(borrowed(&meta.name));
        assert!(borrowed(&meta.owner_references.unwrap()[0].uid));
        let null: Event<'_> = serde_json::from_str(r#"{"verb":null,"sourceIPs":null}"#).unwrap();
        assert!(null.verb.is_none() && null.source_ips.is_none());
    }

    #[test]
    fn object_heads_stop_early_but_read_status_details() {
        // The tail is not even valid JSON: it is never read.
        let head = ObjectHead::parse(r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","uid":"u","resourceVersion":"7","generation":2},"spec":{"#).unwrap();
        assert_eq!(head.kind.as_deref(), Some("Pod"));
        let meta = head.metadata.unwrap();
        assert_eq!(
            (meta.name.as_deref(), meta.uid.as_deref(), meta.resource_version.as_deref(), meta.generation),
            (Some("p"), Some("u"), Some("7"), Some(2))
        );
        let status = ObjectHead::parse(r#"{"kind":"Status","metadata":{},"status":"Success","details":{"name":"x","kind":"configmaps","uid":"cm-1"}}"#).unwrap();
        assert_eq!(status.details.unwrap().uid.as_deref(), Some("cm-1"));
        let late_kind =
            ObjectHead::parse(r#"{"apiVersion":"v1","data":{"a":"b"},"kind":"ConfigMap","metadata":{"name":"c"}}"#)
                .unwrap();
        assert_eq!(late_kind.kind.as_deref(), Some("ConfigMap"));
        assert!(ObjectHead::parse("[1,2]").is_none());
        // The API server's order: `managedFields` last, so reading stops there (the rest is never
        // scanned, here not even valid); in another order every key is read.
        let go_order = ObjectHead::parse(r#"{"kind":"Pod","metadata":{"uid":"u","resourceVersion":"7","ownerReferences":[{"uid":"o"}],"managedFields":[{"#).unwrap();
        let meta = go_order.metadata.unwrap();
        assert_eq!((meta.uid.as_deref(), meta.owner_references.unwrap()[0].uid.as_deref()), (Some("u"), Some("o")));
        let sorted = ObjectHead::parse(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"generation":3,"managedFields":[{"manager":"m"}],"name":"p","ownerReferences":[{"uid":"o"}],"resourceVersion":"7","uid":"u"},"spec":{}}"#).unwrap();
        let meta = sorted.metadata.unwrap();
        assert_eq!(
            (
                meta.generation,
                meta.uid.as_deref(),
                meta.resource_version.as_deref(),
                meta.owner_references.map(|o| o.len())
            ),
            (Some(3), Some("u"), Some("7"), Some(1))
        );
        // Without the kind first, metadata is read whole so that the kind after it is still found.
        let kind_last = ObjectHead::parse(
            r#"{"metadata":{"uid":"u","resourceVersion":"7","managedFields":[],"name":"n"},"kind":"Pod"}"#,
        )
        .unwrap();
        assert_eq!((kind_last.kind.as_deref(), kind_last.metadata.unwrap().name.as_deref()), (Some("Pod"), Some("n")));
        assert!(ObjectHead::parse(r#"{"kind":"Pod","metadata":null}"#).unwrap().metadata.is_none());
        assert!(ObjectHead::parse(r#"{"kind":"Pod","metadata":{"name":5}}"#).is_none());
    }
}
