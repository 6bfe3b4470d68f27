//! Structured mutations of realistic audit events: the fuzzer's bytes choose a base event and a
//! series of edits (replace any field, at any depth, by a value of any JSON type; delete it; wrap
//! the event in each body shape the decoder accepts). The normalizer must never panic, and no event
//! may vanish: it becomes a record, a dropped stage or a rejection with a reason.

#![no_main]

use kubestep_ingest::normalize::NormalizeConfig;
use kubestep_ingest::prepare::prepare;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// Base events: a write with both objects, a Secret update, a failed patch, a watch, a delete
/// whose response is a Status with details.
const BASES: [&str; 5] = [
    r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"4d2b0c6e-1f7a-4a53-9b61-0c0b2f7e9a10","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/shop/deployments/web?fieldManager=kubectl-client-side-apply","verb":"update","user":{"username":"system:serviceaccount:kube-system:deployment-controller","uid":"2f1","groups":["system:serviceaccounts","system:authenticated"]},"sourceIPs":["10.0.0.5"],"userAgent":"kube-controller-manager/v1.29.2 (linux/amd64) kubernetes/4b8e819/system:serviceaccount:kube-system:deployment-controller","objectRef":{"resource":"deployments","namespace":"shop","name":"web","uid":"a1","apiGroup":"apps","apiVersion":"v1","resourceVersion":"5808"},"responseStatus":{"metadata":{},"code":200},"requestObject":{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web","namespace":"shop","resourceVersion":"5808"},"spec":{"replicas":3}},"responseObject":{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web","namespace":"shop","uid":"a1","resourceVersion":"5812","generation":4,"ownerReferences":[{"apiVersion":"v1","kind":"Thing","name":"o","uid":"o1"}]},"spec":{"replicas":3},"status":{"replicas":3}},"requestReceivedTimestamp":"2024-05-01T10:00:00.123456Z","stageTimestamp":"2024-05-01T10:00:00.131002Z","annotations":{"authorization.k8s.io/decision":"allow"}}"#,
    r#"{"level":"RequestResponse","auditID":"s-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/a/secrets/db","verb":"update","user":{"username":"alice"},"objectRef":{"resource":"secrets","namespace":"a","name":"db","apiVersion":"v1"},"responseStatus":{"code":200},"requestObject":{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"p\":\"aHVudGVyMg==\"}}"}},"data":{"p":"aHVudGVyMg=="}},"responseObject":{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","uid":"s1","resourceVersion":"9"},"data":{"p":"aHVudGVyMg=="}},"requestReceivedTimestamp":"2024-05-01T10:00:01.000001Z","stageTimestamp":"2024-05-01T10:00:01.000900Z"}"#,
    r#"{"level":"Request","auditID":"p-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/a/configmaps/c?dryRun=All","verb":"patch","user":{"username":"bob"},"impersonatedUser":{"username":"carol"},"objectRef":{"resource":"configmaps","namespace":"a","name":"c","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Failure","message":"the object has been modified","reason":"Conflict","code":409},"requestObject":[{"op":"replace","path":"/data/k","value":"v"}],"requestReceivedTimestamp":"2024-05-01T10:00:02.5Z","stageTimestamp":"2024-05-01T10:00:02.6Z"}"#,
    r#"{"level":"Metadata","auditID":"w-1","stage":"ResponseStarted","requestURI":"/api/v1/pods?watch=true","verb":"watch","user":{"username":"system:kube-scheduler"},"objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2024-05-01T10:00:03.000000Z","stageTimestamp":"2024-05-01T10:00:03.000000Z"}"#,
    r#"{"level":"RequestResponse","auditID":"d-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/a/pods/p","verb":"delete","user":{"username":"system:serviceaccount:a:op"},"objectRef":{"resource":"pods","namespace":"a","name":"p","apiVersion":"v1"},"responseStatus":{"code":200},"responseObject":{"kind":"Status","apiVersion":"v1","status":"Success","details":{"name":"p","kind":"pods","uid":"p1"}},"requestReceivedTimestamp":"2024-05-01T10:00:04.000000Z","stageTimestamp":"2024-05-01T10:00:04.010000Z"}"#,
];

/// Reads the fuzzer's bytes as a stream of small decisions.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    fn text(&mut self) -> String {
        let len = usize::from(self.byte() % 24);
        let take = len.min(self.0.len());
        let (bytes, rest) = self.0.split_at(take);
        self.0 = rest;
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn value(&mut self, depth: u8) -> Value {
        match self.byte() % 9 {
            0 => Value::Null,
            1 => json!(self.byte() & 1 == 1),
            2 => json!(i64::from(self.byte() as i8) * 1_000_003),
            3 => json!(f64::from(self.byte()) / 7.0),
            4 => json!(u64::MAX - u64::from(self.byte())),
            5 | 6 => json!(self.text()),
            7 if depth < 3 => Value::Array((0..self.byte() % 3).map(|_| self.value(depth + 1)).collect()),
            _ if depth < 3 => {
                let mut map = serde_json::Map::new();
                for _ in 0..self.byte() % 3 {
                    map.insert(self.text(), self.value(depth + 1));
                }
                Value::Object(map)
            }
            _ => json!(self.text()),
        }
    }
}

/// The object or array nodes of `value`, depth first, as paths of keys and indexes.
fn paths(value: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                prefix.push(json!(key));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(json!(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node<'v>(root: &'v mut Value, path: &[Value]) -> Option<&'v mut Value> {
    path.iter().try_fold(root, |at, step| match step {
        Value::String(key) => at.get_mut(key.as_str()),
        Value::Number(i) => at.get_mut(i.as_u64()? as usize),
        _ => None,
    })
}

const IDENTIFYING: [&str; 5] = ["auditID", "stage", "verb", "requestReceivedTimestamp", "stageTimestamp"];

fuzz_target!(|data: &[u8]| {
    let mut choices = Choices(data);
    let Ok(mut event) = serde_json::from_str::<Value>(BASES[usize::from(choices.byte()) % BASES.len()]) else {
        return;
    };
    let mut touched_identity = false;
    for _ in 0..choices.byte() % 6 {
        let mut all = Vec::new();
        paths(&event, &mut Vec::new(), &mut all);
        let path = all[usize::from(choices.byte()) % all.len()].clone();
        if path.first().and_then(Value::as_str).is_some_and(|k| IDENTIFYING.contains(&k)) || path.is_empty() {
            touched_identity = true;
        }
        match choices.byte() % 3 {
            0 => {
                // Delete the node from its parent.
                if let Some((last, parent)) = path.split_last()
                    && let Some(parent) = node(&mut event, parent)
                {
                    match (parent, last) {
                        (Value::Object(map), Value::String(key)) => {
                            map.remove(key);
                        }
                        (Value::Array(items), Value::Number(i)) => {
                            if let Some(i) = i.as_u64().map(|i| i as usize).filter(|&i| i < items.len()) {
                                items.remove(i);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {
                let value = choices.value(0);
                if let Some(target) = node(&mut event, &path) {
                    *target = value;
                }
            }
        }
    }
    // An edit can turn the event into a list of events (an `items` or `records` key, an array);
    // anything else is one event, which must come out as something.
    let one_event = event.is_object() && event.get("items").is_none() && event.get("records").is_none();
    let text = event.to_string();
    let body = match choices.byte() % 4 {
        0 => text.clone(),
        1 => format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{text}]}}"#),
        2 => format!("[{text}]"),
        _ => json!({"records": [{"properties": {"log": text}}]}).to_string(),
    };
    let config = NormalizeConfig { max_object_bytes: 256 + usize::from(choices.byte()) * 4, ..NormalizeConfig::default() };
    let Ok(prepared) = prepare("fuzz", body.as_bytes(), &config) else { return };
    let outcomes =
        prepared.num_records() + prepared.rejections.len() + prepared.dropped_by_stage.values().sum::<u64>() as usize;
    if one_event {
        assert!(outcomes >= 1, "an event vanished without a record or a rejection: {body}");
    }
    if one_event && !touched_identity && event.get("stage").and_then(Value::as_str) == Some("ResponseComplete") {
        assert_eq!(prepared.num_records() + prepared.rejections.len(), 1, "{body}");
    }
});
