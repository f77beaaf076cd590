//! The gang gate: a `MutatingAdmissionPolicy` (admissionregistration.k8s.io/v1, Kubernetes
//! 1.36 and later) that gives every new gang member of Muster's a scheduling gate
//! ([`GATE_PLACEMENT`]), which the scheduler removes once the member's gang is planned.
//!
//! Why: kube-scheduler takes pods first in, first out and gives each a full attempt (every
//! node filtered, the extender asked, a status write), and retries pods that wait for room on
//! every cluster event. Under contention most attempts are for members of gangs that are still
//! incomplete or have no room, so the gangs that could run wait behind them (the contention
//! benchmark, docs/benchmarks.md (b)). A gated pod is not attempted at all (kube-scheduler's
//! `SchedulingGates` PreEnqueue), so kube-scheduler sees only the gangs Muster has placed.
//!
//! One definition: the chart's template (charts/muster/templates/gang-gate.yaml) renders the
//! same spec (checked by tests/chart), and the test harness installs it from here.

use crate::SchedulerNames;
use crate::names::{
    ANNOTATION_GANG, ANNOTATION_MIN_AVAILABLE, ANNOTATION_VOLCANO_GROUP_NAME, GATE_PLACEMENT,
    LABEL_COSCHEDULING_POD_GROUP, LABEL_POD_GROUP,
};
use serde_json::{Value, json};

/// The CEL condition selecting the pods to gate: Muster's scheduler names, in a gang form
/// that names its group in metadata. Single pods are never gated (a gang of one gains little
/// and would pay a write), nor annotation gangs of `min-available: "1"`; neither is upstream's
/// `spec.schedulingGroup` form.
pub fn match_expression(names: &SchedulerNames) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!(
        "has(object.spec.schedulerName) && object.spec.schedulerName in [{names}] && \
         ((has(object.metadata.labels) && ('{pg}' in object.metadata.labels || '{cos}' in object.metadata.labels)) || \
         (has(object.metadata.annotations) && ('{volcano}' in object.metadata.annotations || \
         ('{gang}' in object.metadata.annotations && !('{min}' in object.metadata.annotations && object.metadata.annotations['{min}'] == '1')))))",
        names = quoted.join(", "),
        pg = LABEL_POD_GROUP,
        cos = LABEL_COSCHEDULING_POD_GROUP,
        gang = ANNOTATION_GANG,
        min = ANNOTATION_MIN_AVAILABLE,
        volcano = ANNOTATION_VOLCANO_GROUP_NAME,
    )
}

/// The mutation: add the gate (schedulingGates is a map list keyed by name, so gates others
/// set stay).
pub fn apply_expression() -> String {
    format!(
        "Object{{spec: Object.spec{{schedulingGates: [Object.spec.schedulingGates{{name: \"{GATE_PLACEMENT}\"}}]}}}}"
    )
}

/// The policy's spec. `failurePolicy: Ignore`: if the policy cannot run, pods are created
/// ungated and kube-scheduler attempts them at once, as without the gate (the extender's
/// barrier keeps gangs whole either way); a failing policy must not block pod creation.
pub fn policy_spec(names: &SchedulerNames) -> Value {
    json!({
        "failurePolicy": "Ignore",
        "reinvocationPolicy": "Never",
        "matchConstraints": {
            "resourceRules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
            }],
        },
        "matchConditions": [{
            "name": "muster-gang-member",
            "expression": match_expression(names),
        }],
        "mutations": [{
            "patchType": "ApplyConfiguration",
            "applyConfiguration": {"expression": apply_expression()},
        }],
    })
}

/// The policy and its binding, named `name`, as API objects.
pub fn objects(name: &str, names: &SchedulerNames) -> [Value; 2] {
    [
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": policy_spec(names),
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name},
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheduler_name_is_matched() {
        let names = SchedulerNames::new(["muster", "scheduler-plugins-scheduler"]).unwrap();
        let e = match_expression(&names);
        assert!(
            e.contains("in ['muster', 'scheduler-plugins-scheduler']"),
            "{e}"
        );
        for marker in [
            LABEL_POD_GROUP,
            LABEL_COSCHEDULING_POD_GROUP,
            ANNOTATION_GANG,
            ANNOTATION_VOLCANO_GROUP_NAME,
        ] {
            assert!(e.contains(marker), "{marker} missing from {e}");
        }
        assert!(apply_expression().contains(GATE_PLACEMENT));
    }
}
