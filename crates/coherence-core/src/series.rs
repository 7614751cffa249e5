//! Series keys with dimensions (labels).
//!
//! A series is keyed by `(host, metric_name)` text. Labels other than the host travel inside
//! the metric name in Prometheus' canonical text form: `name{key1="v1",key2="v2"}` — keys
//! sorted, values double-quoted with `\\`, `\"` and `\n` escaped, no spaces. A series without
//! labels is just `name`, so data written before labels existed keeps its keys, and every
//! detector, event, incident and view carries the labels with no change.
//!
//! [`series_key`] builds the canonical key; [`parse_series_key`] is its inverse (any string
//! that is not `name{...}` with a valid label list is a plain name). [`series_name`] is the
//! base name alone, for rules that judge the metric (the percent rule).

use std::collections::BTreeMap;

/// Replacement for characters a label key may not contain.
const KEY_REPLACEMENT: char = '_';

/// Whether `c` may appear in a label key of the canonical form: not one of `= , { } " \`,
/// whitespace or a control character.
fn key_char_ok(c: char) -> bool {
    !matches!(c, '=' | ',' | '{' | '}' | '"' | '\\') && !c.is_whitespace() && !c.is_control()
}

/// PostgreSQL text cannot hold NUL: replaced by U+FFFD.
fn no_nul(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

/// The canonical series key of metric `name` with `labels`: `name{k1="v1",k2="v2"}`, or `name`
/// alone without labels.
///
/// * Labels are sorted by key; exact duplicate pairs count once; a key given with several
///   distinct values becomes one label whose value is those values sorted and joined by `,`.
/// * In keys, `= , { } " \`, whitespace and control characters become `_` (two keys that then
///   coincide are one key); an empty key is dropped.
/// * Values are double-quoted with `\` → `\\`, `"` → `\"`, newline → `\n`.
/// * NUL (which PostgreSQL text cannot hold) becomes U+FFFD in the name and the values.
///
/// [`parse_series_key`] inverts it for every name without `{`.
pub fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for &(k, v) in labels {
        if k.is_empty() {
            continue;
        }
        let key: String = k
            .chars()
            .map(|c| if key_char_ok(c) { c } else { KEY_REPLACEMENT })
            .collect();
        grouped.entry(key).or_default().push(no_nul(v).into_owned());
    }
    let mut out = no_nul(name).into_owned();
    if grouped.is_empty() {
        return out;
    }
    out.push('{');
    for (i, (key, mut values)) in grouped.into_iter().enumerate() {
        values.sort();
        values.dedup();
        if i > 0 {
            out.push(',');
        }
        out.push_str(&key);
        out.push_str("=\"");
        for c in values.join(",").chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// Splits `key` into its base name and labels when it has the form `name{k="v",...}`: a
/// non-empty name before the first `{`, then one or more `key="value"` pairs separated by `,`
/// (keys non-empty, of characters [`series_key`] keeps, none repeated; values with the escapes
/// `\\`, `\"`, `\n` only), then `}` at the very end. `None` for anything else.
fn split_series_key(key: &str) -> Option<(&str, Vec<(String, String)>)> {
    let open = key.find('{')?;
    let (name, rest) = (&key[..open], &key[open + 1..]);
    if name.is_empty() {
        return None;
    }
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        // key
        let mut k = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if !key_char_ok(c) {
                return None;
            }
            k.push(c);
            chars.next();
        }
        if k.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
            return None;
        }
        // quoted value
        let mut v = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    '\\' => v.push('\\'),
                    '"' => v.push('"'),
                    'n' => v.push('\n'),
                    _ => return None,
                },
                c => v.push(c),
            }
        }
        if labels.iter().any(|(seen, _)| *seen == k) {
            return None;
        }
        labels.push((k, v));
        match chars.next()? {
            ',' => continue,
            '}' => break,
            _ => return None,
        }
    }
    if chars.next().is_some() {
        return None;
    }
    Some((name, labels))
}

/// The base name and labels of a series key: the inverse of [`series_key`]. A string that is
/// not `name{...}` with a valid label list (see [`series_key`]'s form; `name{}` included) is a
/// plain name with no labels; this never fails. Labels come in the key's order (sorted for a
/// canonical key).
pub fn parse_series_key(key: &str) -> (String, Vec<(String, String)>) {
    match split_series_key(key) {
        Some((name, labels)) => (name.to_string(), labels),
        None => (key.to_string(), Vec::new()),
    }
}

/// The base name of a series key (`cpu` for `cpu{core="0"}`; the key itself when it has no
/// valid label list).
pub fn series_name(key: &str) -> &str {
    match split_series_key(key) {
        Some((name, _)) => name,
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_labels_is_the_name_alone() {
        assert_eq!(series_key("cpu", &[]), "cpu");
        assert_eq!(parse_series_key("cpu"), ("cpu".into(), vec![]));
        assert_eq!(series_name("disk.used"), "disk.used");
    }

    #[test]
    fn canonical_form_sorts_keys_and_quotes_values() {
        let k = series_key("disk.used", &[("mount", "/"), ("device", "sda")]);
        assert_eq!(k, r#"disk.used{device="sda",mount="/"}"#);
        assert_eq!(
            parse_series_key(&k),
            (
                "disk.used".into(),
                owned(&[("device", "sda"), ("mount", "/")])
            )
        );
        assert_eq!(series_name(&k), "disk.used");
    }

    #[test]
    fn duplicates_and_multiple_values() {
        // An exact duplicate pair counts once.
        assert_eq!(series_key("m", &[("a", "1"), ("a", "1")]), r#"m{a="1"}"#);
        // Distinct values of one key: sorted, joined by ",".
        assert_eq!(
            series_key(
                "m",
                &[
                    ("role", "web"),
                    ("b", "x"),
                    ("role", "api"),
                    ("role", "web")
                ]
            ),
            r#"m{b="x",role="api,web"}"#
        );
    }

    #[test]
    fn keys_are_sanitized_and_empty_keys_dropped() {
        assert_eq!(
            series_key(
                "m",
                &[
                    ("a b", "1"),
                    ("", "x"),
                    ("k=\"{,}\\", "2"),
                    ("t\tab\n", "3")
                ]
            ),
            r#"m{a_b="1",k______="2",t_ab_="3"}"#
        );
        // Keys that coincide once sanitized are one key.
        assert_eq!(
            series_key("m", &[("a b", "1"), ("a_b", "2")]),
            r#"m{a_b="1,2"}"#
        );
        // Only empty keys: no labels at all.
        assert_eq!(series_key("m", &[("", "x")]), "m");
    }

    #[test]
    fn values_are_escaped() {
        let k = series_key("m", &[("path", "C:\\tmp \"x\"\nnext,{}=")]);
        assert_eq!(k, r#"m{path="C:\\tmp \"x\"\nnext,{}="}"#);
        assert_eq!(
            parse_series_key(&k).1,
            owned(&[("path", "C:\\tmp \"x\"\nnext,{}=")])
        );
    }

    #[test]
    fn nul_becomes_replacement_character() {
        let k = series_key("a\0b", &[("k\0", "v\0w")]);
        assert_eq!(k, "a\u{FFFD}b{k_=\"v\u{FFFD}w\"}");
        assert!(!k.contains('\0'));
    }

    #[test]
    fn anything_else_is_a_plain_name() {
        for s in [
            "",
            "cpu{}",
            "{a=\"1\"}",
            "cpu{a=\"1\"",
            "cpu{a=\"1\"}x",
            "cpu{a=\"1\",}",
            "cpu{a=1}",
            "cpu{a=\"1\" ,b=\"2\"}",
            "cpu{ a=\"1\"}",
            "cpu{=\"1\"}",
            "cpu{a=\"\\t\"}",
            "cpu{a=\"1\",a=\"2\"}",
            "cpu{a=\"1\"}}",
            "cpu{a=\"x\"\"}",
            "cpu{a=\"\\\"}",
        ] {
            assert_eq!(parse_series_key(s), (s.to_string(), vec![]), "{s:?}");
            assert_eq!(series_name(s), s);
        }
    }

    #[test]
    fn non_canonical_but_valid_lists_are_parsed_in_order() {
        assert_eq!(
            parse_series_key(r#"m{b="2",a="1"}"#),
            ("m".into(), owned(&[("b", "2"), ("a", "1")]))
        );
        assert_eq!(
            parse_series_key(r#"m{a=""}"#),
            ("m".into(), owned(&[("a", "")]))
        );
    }

    /// What series_key keeps of a label list, as a model: sanitized keys, each with its
    /// distinct values sorted and joined.
    fn model(labels: &[(String, String)]) -> Vec<(String, String)> {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (k, v) in labels {
            if k.is_empty() {
                continue;
            }
            let k: String = k
                .chars()
                .map(|c| if key_char_ok(c) { c } else { '_' })
                .collect();
            m.entry(k).or_default().insert(v.replace('\0', "\u{FFFD}"));
        }
        m.into_iter()
            .map(|(k, vs)| (k, vs.into_iter().collect::<Vec<_>>().join(",")))
            .collect()
    }

    fn label_lists() -> impl Strategy<Value = Vec<(String, String)>> {
        // Small alphabets so that keys collide and values need escaping often.
        let key = prop_oneof!["[a-c]{0,3}", "[a-c =,{}\"\\\\\t\n\0]{0,3}", "\\PC{0,4}",];
        let value = prop_oneof!["[xy,]{0,3}", "[xy\"\\\\\n{}=, \0]{0,4}", "\\PC{0,6}",];
        proptest::collection::vec((key, value), 0..6)
    }

    proptest! {
        /// parse(series_key(name, labels)) gives the name and the model's labels, and the
        /// key is a fixed point: built again from its parse, it is the same key.
        #[test]
        fn parse_inverts_series_key(
            name in prop_oneof!["[a-z_:.][a-z0-9_:.]{0,12}", "[^{\0]{1,8}"],
            labels in label_lists(),
        ) {
            let refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let key = series_key(&name, &refs);
            prop_assert!(!key.contains('\0'));
            let (base, parsed) = parse_series_key(&key);
            prop_assert_eq!(&base, &name);
            prop_assert_eq!(&parsed, &model(&labels));
            prop_assert_eq!(series_name(&key), name.as_str());
            let again: Vec<(&str, &str)> = parsed.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(series_key(&base, &again), key);
        }

        /// The key does not depend on the order the labels come in.
        #[test]
        fn order_independent(labels in label_lists(), seed in any::<u64>()) {
            let mut shuffled = labels.clone();
            let mut r = crate::rng::Rng::new(seed);
            for i in (1..shuffled.len()).rev() {
                let j = r.below(i as u64 + 1) as usize;
                shuffled.swap(i, j);
            }
            let a: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let b: Vec<(&str, &str)> = shuffled.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(series_key("m", &a), series_key("m", &b));
        }

        /// Any string parses without panicking; a plain name comes back unchanged, and the
        /// base name is always a prefix of the key.
        #[test]
        fn parse_never_fails(s in "\\PC{0,24}|[a-z]{1,3}\\{[a-z=\",\\\\n{}]{0,12}\\}") {
            let (base, labels) = parse_series_key(&s);
            prop_assert!(s.starts_with(&base));
            if labels.is_empty() {
                prop_assert_eq!(&base, &s);
            }
            prop_assert_eq!(series_name(&s), base.as_str());
        }
    }
}
