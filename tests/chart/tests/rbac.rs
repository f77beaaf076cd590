//! Least privilege, per identity (issue 15): the chart grants each Muster binary exactly the
//! API calls its code declares (`access.rs` beside each binary), kube-scheduler exactly what
//! upstream's bootstrap roles give it, and nothing else is bound to Muster's ServiceAccounts.

mod common;
use common::*;
use muster_api::access::{ApiAccess, Scope};
use serde_yaml::Value;
use std::collections::BTreeSet;

/// (apiGroup, resource, verb, resourceName or "").
type Grant = (String, String, String, String);

fn rule_grants(rules: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules.as_sequence().into_iter().flatten() {
        let names = strs(&rule["resourceNames"]);
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for g in strs(&rule["apiGroups"]) {
            for r in strs(&rule["resources"]) {
                for v in strs(&rule["verbs"]) {
                    for n in &names {
                        out.insert((g.clone(), r.clone(), v.clone(), n.clone()));
                    }
                }
            }
        }
    }
    out
}

fn role_grants(objs: &[Value], kind: &str, name: &str) -> BTreeSet<Grant> {
    rule_grants(&one(objs, kind, name)["rules"])
}

/// What `calls` need in `scope`'s kind of role (`Cluster` -> ClusterRole, else the release
/// namespace's Role), with `{release}` expanded.
fn declared(calls: &[&[ApiAccess]], cluster: bool) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for call in calls.iter().flat_map(|c| c.iter()) {
        let names: Vec<String> = match call.scope {
            Scope::Cluster if cluster => vec![String::new()],
            Scope::ReleaseNamespace(names) if !cluster => names
                .iter()
                .map(|n| n.replace("{release}", "muster-scheduler"))
                .collect(),
            _ => continue,
        };
        for (g, r, v) in call.triples() {
            for n in &names {
                out.insert((g.into(), r.into(), v.into(), n.clone()));
            }
        }
    }
    out
}

fn diff(what: &str, rendered: &BTreeSet<Grant>, wanted: &BTreeSet<Grant>) {
    let extra: Vec<_> = rendered.difference(wanted).collect();
    let missing: Vec<_> = wanted.difference(rendered).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: granted but not used by the code: {extra:?}; used but not granted: {missing:?}"
    );
}

#[test]
fn the_extender_is_granted_exactly_its_api_calls() {
    let objs = objects(&[]);
    diff(
        "ClusterRole muster-scheduler-extender",
        &role_grants(&objs, "ClusterRole", "muster-scheduler-extender"),
        &declared(&[muster_scheduler::access::API_CALLS], true),
    );
    diff(
        "Role muster-scheduler-extender-lease",
        &role_grants(&objs, "Role", "muster-scheduler-extender-lease"),
        &declared(&[muster_scheduler::access::API_CALLS], false),
    );
    // Without leader election the extender reads no Lease.
    let single = objects(&["scheduler.leaderElection.enabled=false"]);
    assert!(
        !single
            .iter()
            .any(|o| name_of(o) == "muster-scheduler-extender-lease"),
        "a single replica needs no Lease rights"
    );
}

#[test]
fn the_node_daemonset_is_granted_exactly_its_binaries_api_calls() {
    let objs = objects(&[]);
    diff(
        "ClusterRole muster-node-agent",
        &role_grants(&objs, "ClusterRole", "muster-node-agent"),
        &declared(&[muster_node_agent::access::API_CALLS], true),
    );
    diff(
        "ClusterRole muster-node-device-plugin",
        &role_grants(&objs, "ClusterRole", "muster-node-device-plugin"),
        &declared(&[muster_device_plugin::access::API_CALLS], true),
    );
    // No namespaced rights at all.
    assert!(declared(&[muster_node_agent::access::API_CALLS], false).is_empty());
    let no_plugin = objects(&["node.devicePlugin.enabled=false"]);
    assert!(
        !no_plugin
            .iter()
            .any(|o| name_of(o) == "muster-node-device-plugin"),
        "without the device plugin its rights are not granted"
    );
}

/// Every binding to a Muster ServiceAccount names one of the roles checked here or upstream's
/// authentication reader: no other grant can creep in.
#[test]
fn nothing_else_is_bound_to_musters_service_accounts() {
    let objs = objects(&[]);
    let known = [
        "muster-scheduler-kube-scheduler",
        "muster-scheduler-volume-scheduler",
        "muster-scheduler-extender",
        "muster-scheduler-kube-scheduler-lease",
        "muster-scheduler-extender-lease",
        "extension-apiserver-authentication-reader",
        "muster-node-agent",
        "muster-node-device-plugin",
    ];
    let mut bound = 0;
    for b in objs
        .iter()
        .filter(|o| matches!(kind_of(o), "ClusterRoleBinding" | "RoleBinding"))
    {
        let role = b["roleRef"]["name"].as_str().unwrap_or_default();
        assert!(
            known.contains(&role),
            "{} binds unexpected role {role}",
            name_of(b)
        );
        for s in b["subjects"].as_sequence().into_iter().flatten() {
            assert_eq!(s["kind"], "ServiceAccount", "{}", name_of(b));
            assert_eq!(s["namespace"], "muster-system", "{}", name_of(b));
            let sa = s["name"].as_str().unwrap_or_default();
            let expected = if role.starts_with("muster-node") {
                "muster-node"
            } else {
                "muster-scheduler"
            };
            assert_eq!(sa, expected, "{}", name_of(b));
        }
        bound += 1;
    }
    assert_eq!(bound, known.len(), "each known role is bound once");
    // kube-scheduler's Lease: its own name only (create cannot be limited to a name).
    let lease = role_grants(&objs, "Role", "muster-scheduler-kube-scheduler-lease");
    let want: BTreeSet<Grant> = [
        ("create", ""),
        ("get", "muster-scheduler-kube-scheduler"),
        ("update", "muster-scheduler-kube-scheduler"),
    ]
    .iter()
    .map(|(v, n)| {
        (
            "coordination.k8s.io".into(),
            "leases".into(),
            v.to_string(),
            n.to_string(),
        )
    })
    .collect();
    diff("Role muster-scheduler-kube-scheduler-lease", &lease, &want);
}

fn upstream_grants(role: &k8s_openapi::api::rbac::v1::ClusterRole) -> BTreeSet<Grant> {
    let rules = serde_yaml::to_value(&role.rules).expect("rules as YAML");
    rule_grants(&rules)
}

/// kube-scheduler keeps exactly upstream's rights (the API server's own bootstrap roles), minus
/// its leader-election rules: upstream names the default scheduler's Lease (`kube-scheduler` in
/// any namespace), which Muster must not be able to take; its own Lease is the Role above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_schedulers_rights_are_upstreams() {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let cluster = muster_testcluster::TestCluster::start(Default::default())
        .await
        .expect("control plane");
    let roles: kube::Api<ClusterRole> = kube::Api::all(cluster.client());
    let objs = objects(&[]);
    for (ours, upstream) in [
        ("muster-scheduler-kube-scheduler", "system:kube-scheduler"),
        (
            "muster-scheduler-volume-scheduler",
            "system:volume-scheduler",
        ),
    ] {
        let role = roles.get(upstream).await.expect("bootstrap ClusterRole");
        let want: BTreeSet<Grant> = upstream_grants(&role)
            .into_iter()
            .filter(|(_, r, _, _)| r != "leases" && r != "endpoints")
            .collect();
        diff(
            &format!("ClusterRole {ours} vs upstream {upstream}"),
            &role_grants(&objs, "ClusterRole", ours),
            &want,
        );
    }
}
