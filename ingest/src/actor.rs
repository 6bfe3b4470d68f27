//! Actors: who is behind a request, as a stable name that analyses group by.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem;
use regex::Regex;

/// A user rule: requests whose `username|user_agent` matches `pattern` belong to actor `name`.
#[derive(Debug, Clone)]
pub struct ActorRule {
    pattern: Regex,
    name: String,
}

/// Why an `--actor-rule` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActorRuleError {
    /// No `=` separating the pattern from the name.
    #[error("actor rule {0:?} is not REGEX=NAME")]
    Shape(String),
    /// The pattern does not compile.
    #[error("actor rule {rule:?}: {source}")]
    Regex {
        /// The whole rule.
        rule: String,
        /// Why the pattern is invalid.
        source: regex::Error,
    },
}

impl ActorRule {
    /// Parses `REGEX=NAME`; the last `=` separates the two, so patterns may contain `=`.
    pub fn parse(rule: &str) -> Result<Self, ActorRuleError> {
        let (pattern, name) = rule.rsplit_once('=').ok_or_else(|| ActorRuleError::Shape(rule.to_owned()))?;
        if pattern.is_empty() || name.is_empty() {
            return Err(ActorRuleError::Shape(rule.to_owned()));
        }
        let pattern = Regex::new(pattern).map_err(|source| ActorRuleError::Regex { rule: rule.to_owned(), source })?;
        Ok(Self { pattern, name: name.to_owned() })
    }
}

const SA_PREFIX: &str = "system:serviceaccount:";

/// Finds the kube-controller-manager style suffix in a user agent, searching from the end.
static SA_IN_USER_AGENT: LazyLock<memmem::FinderRev<'static>> =
    LazyLock::new(|| memmem::FinderRev::new("/system:serviceaccount:"));

/// `NS/NAME` for `system:serviceaccount:NS:NAME` (ignoring anything after a following `/`).
fn service_account(text: &str) -> Option<String> {
    let rest = text.strip_prefix(SA_PREFIX)?;
    let rest = rest.split('/').next().unwrap_or(rest);
    let (ns, name) = rest.split_once(':')?;
    if ns.is_empty() || name.is_empty() {
        return None;
    }
    let mut actor = String::with_capacity(ns.len() + 1 + name.len());
    actor.push_str(ns);
    actor.push('/');
    actor.push_str(name);
    Some(actor)
}

/// Derives the actor of a request, first match wins:
/// 1. the user's rules, matched against `username|user_agent`;
/// 2. a kube-controller-manager style user-agent suffix `.../system:serviceaccount:NS:NAME`;
/// 3. a service-account username `system:serviceaccount:NS:NAME`;
/// 4. the username itself (a `/leader-election` suffix on the user agent changes nothing, since
///    the user agent is not part of it); `unknown` when the request had no user.
pub fn derive_actor<'a>(rules: &[ActorRule], username: Option<&'a str>, user_agent: Option<&str>) -> Cow<'a, str> {
    if !rules.is_empty() {
        let subject = format!("{}|{}", username.unwrap_or(""), user_agent.unwrap_or(""));
        if let Some(rule) = rules.iter().find(|r| r.pattern.is_match(&subject)) {
            return Cow::Owned(rule.name.clone());
        }
    }
    if let Some(ua) = user_agent
        && let Some(pos) = SA_IN_USER_AGENT.rfind(ua.as_bytes())
        && let Some(actor) = service_account(&ua[pos + 1..])
    {
        return Cow::Owned(actor);
    }
    match username {
        Some(user) => match service_account(user) {
            Some(actor) => Cow::Owned(actor),
            None if user.is_empty() => Cow::Borrowed("unknown"),
            None => Cow::Borrowed(user),
        },
        None => Cow::Borrowed("unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_manager_suffix_wins_over_its_username() {
        let ua = "kube-controller-manager/v1.28.7 (linux/amd64) kubernetes/c8dcb00/system:serviceaccount:kube-system:replicaset-controller";
        assert_eq!(
            derive_actor(&[], Some("system:kube-controller-manager"), Some(ua)),
            "kube-system/replicaset-controller"
        );
    }

    #[test]
    fn service_accounts_and_plain_users() {
        let ua = "manager/v0.0.0 (linux/amd64) kubernetes/$Format/leader-election";
        assert_eq!(
            derive_actor(&[], Some("system:serviceaccount:ops:widget-operator"), Some(ua)),
            "ops/widget-operator"
        );
        assert_eq!(
            derive_actor(
                &[],
                Some("system:kube-scheduler"),
                Some("kube-scheduler/v1.32.2 (linux/arm64) kubernetes/67a30c0/leader-election")
            ),
            "system:kube-scheduler"
        );
        assert_eq!(derive_actor(&[], Some("alice@example.com"), Some("kubectl/v1.29.2")), "alice@example.com");
        assert_eq!(derive_actor(&[], None, None), "unknown");
        assert_eq!(derive_actor(&[], Some("system:serviceaccount:broken"), None), "system:serviceaccount:broken");
    }

    #[test]
    fn user_rules_come_first() {
        let rules = [ActorRule::parse("kubectl/=humans").unwrap()];
        assert_eq!(derive_actor(&rules, Some("system:serviceaccount:a:b"), Some("kubectl/v1.29.2")), "humans");
        assert_eq!(derive_actor(&rules, Some("system:serviceaccount:a:b"), Some("helm/3")), "a/b");
    }

    #[test]
    fn bad_rules_say_why() {
        assert!(ActorRule::parse("no-separator").unwrap_err().to_string().contains("REGEX=NAME"));
        assert!(ActorRule::parse("(=x").is_err());
    }
}
