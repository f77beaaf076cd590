//! The API server's audit log, read back: which calls each identity really made. The install
//! test checks them against the API calls each binary declares (`access.rs`), so a call the code
//! starts making without declaring it fails a test, not a production install.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// kube-apiserver flags that log every request's metadata to `dir/audit.log`.
pub fn audit_flags(dir: &Path) -> (Vec<String>, PathBuf) {
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n  - level: Metadata\n",
    )
    .expect("audit policy");
    let log = dir.join("audit.log");
    (
        vec![
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", log.display()),
            "--audit-log-format=json".into(),
            "--audit-log-maxsize=0".into(),
        ],
        log,
    )
}

/// One request as the audit log shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    /// The effective user (the impersonated one, when impersonating).
    pub user: String,
    pub user_agent: String,
    pub verb: String,
    pub group: String,
    /// Resource, with `/subresource` when there is one.
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub code: i64,
}

/// Every resource request of the log (non-resource URLs such as `/healthz` are skipped).
pub fn calls(log: &Path) -> Vec<Call> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete" && e["objectRef"].is_object())
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let o = &e["objectRef"];
            let user = if e["impersonatedUser"].is_object() {
                s(&e["impersonatedUser"]["username"])
            } else {
                s(&e["user"]["username"])
            };
            let mut resource = s(&o["resource"]);
            if let Some(sub) = o["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            Call {
                user,
                user_agent: s(&e["userAgent"]),
                verb: s(&e["verb"]),
                group: s(&o["apiGroup"]),
                resource,
                namespace: s(&o["namespace"]),
                name: s(&o["name"]),
                code: e["responseStatus"]["code"].as_i64().unwrap_or(0),
            }
        })
        .collect()
}
