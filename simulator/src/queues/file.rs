//! `--queue-file`: a list of leaf queues, `{name, guaranteed, limit, weight}` each, as JSON
//! or as YAML in block style:
//!
//! ```yaml
//! # GPUs
//! - name: vc-6214e9
//!   guaranteed: 256
//!   limit: 384      # optional; absent or null: may borrow up to the cluster
//!   weight: 2       # optional, default 1
//! - name: vc-11cb48
//!   guaranteed: 128
//! ```
//!
//! The YAML reader covers exactly this shape (a sequence of flat mappings with scalar
//! values), which keeps the simulator free of a YAML dependency; anything else is an error
//! that names the line.

use super::{QueueDef, ROOT};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum QueueFileError {
    #[error("reading queue file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("queue file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// One entry as written (signed, so negative values get a clear error).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    guaranteed: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    weight: Option<i64>,
}

const FIELDS: &str = "name, guaranteed, limit, weight";

pub fn load(path: &Path) -> Result<Vec<QueueDef>, QueueFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| QueueFileError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|message| QueueFileError::Invalid {
        path: shown,
        message,
    })
}

/// Parses and validates a queue file's text (JSON if it starts with `[`, else YAML).
pub fn parse(text: &str) -> Result<Vec<QueueDef>, String> {
    let raws: Vec<(Option<usize>, Raw)> = if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<Raw>>(text)
            .map_err(|e| format!("not a JSON list of {{{FIELDS}}}: {e}"))?
            .into_iter()
            .map(|r| (None, r))
            .collect()
    } else {
        yaml(text)?
    };
    if raws.is_empty() {
        return Err("no queues: expected a list of {name, guaranteed, limit, weight}".into());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(raws.len());
    for (i, (line, raw)) in raws.into_iter().enumerate() {
        let at = match line {
            Some(l) => format!("line {l}"),
            None => format!("entry {}", i + 1),
        };
        let name = raw
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{at}: a queue needs a non-empty name"))?;
        if name == ROOT {
            return Err(format!(
                "{at}: queue name {ROOT:?} is reserved for the root"
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(format!("{at}: queue {name} is defined twice"));
        }
        let guaranteed = raw
            .guaranteed
            .ok_or_else(|| format!("{at}: queue {name} has no guaranteed (GPUs)"))?;
        let guaranteed = u64::try_from(guaranteed).map_err(|_| {
            format!("{at}: queue {name}: guaranteed is {guaranteed}, it must not be negative")
        })?;
        let limit = match raw.limit {
            None => None,
            Some(l) => Some(u64::try_from(l).map_err(|_| {
                format!("{at}: queue {name}: limit is {l}, it must not be negative")
            })?),
        };
        if let Some(l) = limit
            && l < guaranteed
        {
            return Err(format!(
                "{at}: queue {name}: guaranteed {guaranteed} is above its limit {l}"
            ));
        }
        let weight = raw.weight.unwrap_or(1);
        let weight = u64::try_from(weight)
            .ok()
            .filter(|&w| w >= 1)
            .ok_or_else(|| {
                format!("{at}: queue {name}: weight is {weight}, it must be at least 1")
            })?;
        out.push(QueueDef {
            name,
            guaranteed,
            limit,
            weight,
        });
    }
    Ok(out)
}

/// The block-style YAML subset: `- key: value` opens an entry, indented `key: value` lines
/// continue it. Returns each entry with the line it starts on.
fn yaml(text: &str) -> Result<Vec<(Option<usize>, Raw)>, String> {
    let mut out: Vec<(Option<usize>, Raw, BTreeSet<String>)> = Vec::new();
    for (i, full) in text.lines().enumerate() {
        let n = i + 1;
        let line = strip_comment(full);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed == "---" {
            continue;
        }
        let rest = if let Some(item) = trimmed.strip_prefix('-') {
            if !(item.is_empty() || item.starts_with(' ')) {
                return Err(format!(
                    "line {n}: expected \"- name: ...\", got {trimmed:?}"
                ));
            }
            out.push((Some(n), Raw::default(), BTreeSet::new()));
            item.trim()
        } else if line.starts_with(' ') && !out.is_empty() {
            trimmed
        } else {
            return Err(format!(
                "line {n}: expected a list of queues (\"- name: ...\" then indented fields), got {trimmed:?}"
            ));
        };
        if rest.is_empty() {
            continue;
        }
        if rest.starts_with('{') || rest.starts_with('[') {
            return Err(format!(
                "line {n}: flow mappings are not supported; write one \"key: value\" per line (or use JSON)"
            ));
        }
        let Some((key, value)) = rest.split_once(':') else {
            return Err(format!("line {n}: expected \"key: value\", got {rest:?}"));
        };
        let key = key.trim();
        let value = unquote(value.trim());
        let Some((_, raw, keys)) = out.last_mut() else {
            return Err(format!("line {n}: a field outside any queue"));
        };
        if !keys.insert(key.to_string()) {
            return Err(format!("line {n}: {key} given twice for one queue"));
        }
        let int = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("line {n}: {key} must be a whole number, got {v:?}"))
        };
        match key {
            "name" => raw.name = Some(value.to_string()),
            "guaranteed" => raw.guaranteed = Some(int(value)?),
            "limit" => {
                raw.limit = match value {
                    "" | "~" | "null" | "none" => None,
                    v => Some(int(v)?),
                }
            }
            "weight" => raw.weight = Some(int(value)?),
            other => {
                return Err(format!(
                    "line {n}: unknown field {other:?} (fields: {FIELDS})"
                ));
            }
        }
    }
    Ok(out.into_iter().map(|(l, r, _)| (l, r)).collect())
}

/// Drops a `#` comment (at the start or after a space) outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev == ' ' || prev == '\t' => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn reads_yaml_and_json() {
        let yaml = "# queues\n---\n- name: vc-a   # big\n  guaranteed: 256\n  limit: 384\n  weight: 2\n-\n  name: 'vc-b'\n  guaranteed: 0\n  limit: ~\n";
        let q = parse(yaml).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(
            q[0],
            QueueDef {
                name: "vc-a".into(),
                guaranteed: 256,
                limit: Some(384),
                weight: 2
            }
        );
        assert_eq!(
            (q[1].name.as_str(), q[1].limit, q[1].weight),
            ("vc-b", None, 1)
        );
        let json = r#"[{"name":"vc-a","guaranteed":8},{"name":"x#1","guaranteed":2,"limit":4}]"#;
        let q = parse(json).unwrap();
        assert_eq!(q[1].name, "x#1");
        assert_eq!(q[1].limit, Some(4));
    }

    #[test]
    fn bad_files_say_what_and_where() {
        assert!(err("").contains("no queues"));
        assert!(err("[]").contains("no queues"));
        assert!(err("- name: a\n  guaranteed: -3\n").contains("line 1: queue a: guaranteed is -3"));
        assert!(err("- name: a\n  guaranteed: 8\n  limit: 4\n").contains("above its limit 4"));
        assert!(
            err("- name: a\n  guaranteed: 1\n- name: a\n  guaranteed: 1\n")
                .contains("line 3: queue a is defined twice")
        );
        assert!(err("- name: a\n").contains("has no guaranteed"));
        assert!(err("- guaranteed: 3\n").contains("non-empty name"));
        assert!(
            err("- name: a\n  guaranteed: lots\n")
                .contains("line 2: guaranteed must be a whole number")
        );
        assert!(err("- name: a\n  guaranteed: 1\n  gpus: 2\n").contains("unknown field \"gpus\""));
        assert!(err("- name: a\n  guaranteed: 1\n  weight: 0\n").contains("at least 1"));
        assert!(err("- name: a\n  name: b\n").contains("line 2: name given twice"));
        assert!(err("name: a\n").contains("line 1: expected a list"));
        assert!(err("- {name: a, guaranteed: 1}\n").contains("flow mappings"));
        assert!(err("- name: cluster\n  guaranteed: 1\n").contains("reserved"));
        assert!(
            err("[{\"name\": \"a\", \"guaranteed\": 1, \"extra\": 2}]").contains("unknown field")
        );
        assert!(err("[{\"name\": \"a\", \"guaranteed\": 1.5}]").contains("not a JSON list"));
        let missing = load(Path::new("/nonexistent/q.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("reading queue file /nonexistent/q.yaml"),
            "{missing}"
        );
    }
}
