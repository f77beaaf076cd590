//! How each competitor is told that pods form a gang: the group object it reads (native's
//! `PodGroup.scheduling.k8s.io`, coscheduling's `PodGroup.scheduling.x-k8s.io`) and the fields
//! on the pods. Only these differ between schedulers; the pods are otherwise identical.

use anyhow::{Context, Result};
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::competitors::Competitor;

/// The group object a gang needs with this competitor, if any.
pub fn group_object(
    competitor: Competitor,
    ns: &str,
    gang: &str,
    min: usize,
    priority_class: Option<&str>,
) -> Option<(ApiResource, Value)> {
    match competitor {
        Competitor::Plain | Competitor::Muster => None,
        Competitor::Native => {
            let mut spec = json!({"schedulingPolicy": {"gang": {"minCount": min}}});
            if let Some(pc) = priority_class {
                spec["priorityClassName"] = json!(pc);
            }
            Some((
                ApiResource {
                    group: "scheduling.k8s.io".into(),
                    version: "v1beta1".into(),
                    api_version: "scheduling.k8s.io/v1beta1".into(),
                    kind: "PodGroup".into(),
                    plural: "podgroups".into(),
                },
                json!({
                    "apiVersion": "scheduling.k8s.io/v1beta1",
                    "kind": "PodGroup",
                    "metadata": {"name": gang, "namespace": ns},
                    "spec": spec,
                }),
            ))
        }
        Competitor::Coscheduling => Some((
            ApiResource {
                group: "scheduling.x-k8s.io".into(),
                version: "v1alpha1".into(),
                api_version: "scheduling.x-k8s.io/v1alpha1".into(),
                kind: "PodGroup".into(),
                plural: "podgroups".into(),
            },
            json!({
                "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                "kind": "PodGroup",
                "metadata": {"name": gang, "namespace": ns},
                "spec": {"minMember": min},
            }),
        )),
    }
}

/// Creates a gang's group object (no-op for competitors without one).
pub async fn create_group(
    client: &Client,
    competitor: Competitor,
    ns: &str,
    gang: &str,
    min: usize,
    priority_class: Option<&str>,
) -> Result<()> {
    let Some((ar, value)) = group_object(competitor, ns, gang, min, priority_class) else {
        return Ok(());
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let obj: DynamicObject = serde_json::from_value(value).context("PodGroup JSON")?;
    api.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating {} {ns}/{gang}", ar.api_version))?;
    Ok(())
}

/// Dresses a pod of gang `gang` (min `min`) for `competitor`: schedulerName plus the gang
/// field each scheduler reads. Nothing else differs.
pub fn dress(pod: &mut Value, competitor: Competitor, gang: &str, min: usize) {
    pod["spec"]["schedulerName"] = json!(competitor.scheduler_name());
    match competitor {
        Competitor::Plain => {}
        Competitor::Native => pod["spec"]["schedulingGroup"] = json!({"podGroupName": gang}),
        Competitor::Coscheduling => {
            pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] = json!(gang)
        }
        Competitor::Muster => {
            pod["metadata"]["annotations"]["muster.dev/gang"] = json!(gang);
            pod["metadata"]["annotations"]["muster.dev/min-available"] = json!(min.to_string());
        }
    }
}

/// Whether Muster runs with the chart's gang gate (`muster_api::gate`): on unless
/// `MUSTER_BENCH_GATE=false`.
pub fn gang_gate_enabled() -> bool {
    std::env::var("MUSTER_BENCH_GATE").map_or(true, |v| v != "false")
}
