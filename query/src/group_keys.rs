//! Map keys for the passes that count by group (actor, kind, namespace, name, ...) as rows go by,
//! and the maps those passes keep.
//!
//! A pass looks up a group per row: building the key must cost no allocation, hashing it must be
//! cheap, and two groups must never share a key, null apart from empty and no text able to fake a
//! separator. A key is each field as `-` (null) or its length, `:` and its bytes, appended into a
//! buffer the pass reuses; the maps hash with foldhash, not SipHash: the keys are the recording's
//! own values, and a pass is not a service an outsider can flood with colliding keys.

use std::collections::HashMap;

/// A map from encoded group keys, hashed fast.
pub(crate) type GroupMap<V> = FastMap<String, V>;

/// A map a pass fills from the recording's values (interned texts, indexes), hashed fast.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A set of the same kind.
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// Appends one field of a group to `key`.
pub(crate) fn push_field(key: &mut String, field: Option<&str>) {
    match field {
        None => key.push('-'),
        Some(text) => {
            push_number(key, text.len() as u64);
            key.push(':');
            key.push_str(text);
        }
    }
}

/// Appends `n` in decimal to `key` (or to a field path), without the formatting machinery.
pub(crate) fn push_number(key: &mut String, n: u64) {
    for digit in decimal(n, &mut [0; 20]) {
        key.push(char::from(*digit));
    }
}

/// `n` in decimal, written at the end of `digits`.
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fields: &[Option<&str>]) -> String {
        let mut key = String::new();
        for field in fields {
            push_field(&mut key, *field);
        }
        key
    }

    #[test]
    fn groups_that_differ_get_different_keys() {
        let groups: [&[Option<&str>]; 8] = [
            &[None, Some("a")],
            &[Some(""), Some("a")],
            &[Some("a"), None],
            &[Some("a"), Some("")],
            &[Some("a:1"), Some("b")],
            &[Some("a"), Some("1:b")],
            &[Some("ab"), Some("")],
            &[Some("1234567890"), Some("x")],
        ];
        let keys: std::collections::BTreeSet<String> = groups.iter().map(|g| key(g)).collect();
        assert_eq!(keys.len(), groups.len(), "{keys:?}");
        assert_eq!(key(&[Some("1234567890"), None]), "10:1234567890-");
        let mut n = String::new();
        for value in [0, 7, 10, 4096, u64::MAX] {
            n.clear();
            push_number(&mut n, value);
            assert_eq!(n, value.to_string());
        }
    }
}
