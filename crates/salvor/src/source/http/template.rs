//! Path templates (`/pools/{id}`, `?pool={pools.id}`) and dotted paths into
//! JSON bodies: shared by the plan, the export and the restore.

use salvor_engine::{Error, Result};
use serde_json::Value;

/// A path split into literal text and `{placeholder}`s.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Part {
    Text(String),
    Field(String),
}

/// Splits `path` at `{...}`; unbalanced braces are an error.
pub(super) fn parse_template(path: &str) -> Result<Vec<Part>> {
    let bad = || {
        Error::invalid(format!("path {path:?} has an unbalanced brace"))
            .hint("write placeholders as {endpoint.field} or {field}")
    };
    let mut parts = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(bad());
        }
        let close = rest[open..].find('}').ok_or_else(bad)? + open;
        let name = &rest[open + 1..close];
        if name.is_empty() || name.contains('{') {
            return Err(bad());
        }
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        parts.push(Part::Field(name.to_string()));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Fills placeholders with encoded values from `lookup`; `None` names the missing one.
pub(super) fn fill(
    parts: &[Part],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Field(f) => out.push_str(&encode(&lookup(f).ok_or_else(|| f.clone())?)),
        }
    }
    Ok(out)
}

/// The value at a dotted path (`links.next`); the empty path is `v` itself.
pub(super) fn at<'v>(v: &'v Value, dotted: &str) -> Option<&'v Value> {
    if dotted.is_empty() {
        return Some(v);
    }
    dotted.split('.').try_fold(v, |cur, key| match cur {
        Value::Object(m) => m.get(key),
        Value::Array(a) => a.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A scalar as placeholder text; objects, arrays and null have none.
pub(super) fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn templates_split_and_fill() {
        let parts = parse_template("/a?pool={pools.id}&x=1").unwrap();
        assert_eq!(
            parts,
            vec![
                Part::Text("/a?pool=".into()),
                Part::Field("pools.id".into()),
                Part::Text("&x=1".into())
            ]
        );
        assert!(parse_template("/a/{id").is_err());
        assert!(parse_template("/a/id}").is_err());
        let filled = fill(&parts, &|_| Some("a b/c".into())).unwrap();
        assert_eq!(filled, "/a?pool=a%20b%2Fc&x=1");
        assert_eq!(fill(&parts, &|_| None).unwrap_err(), "pools.id");
    }

    #[test]
    fn dotted_paths() {
        let v = json!({ "links": { "next": "/n" }, "data": [ { "id": 7 } ] });
        assert_eq!(at(&v, "links.next"), Some(&json!("/n")));
        assert_eq!(at(&v, "data.0.id").and_then(scalar).as_deref(), Some("7"));
        assert_eq!(at(&v, "nope.x"), None);
    }
}
