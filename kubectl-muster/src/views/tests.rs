//! Renderers on a hand-built scene (no cluster): snapshot files plus the facts that matter.

use super::explain::{Target, parse_target, resolve};
use super::{gpus, jobs, nodes, topo};
use crate::render::Style;
use crate::testing::{scene, snapshot};

fn plain() -> Style {
    Style {
        color: false,
        mask_times: false,
    }
}

fn table(r: &crate::render::Rendered) -> String {
    let mut s = r.table.render(&plain());
    for l in &r.footer {
        s.push_str(l);
        s.push('\n');
    }
    s
}

#[test]
fn top_nodes() {
    let s = scene();
    let a = s.analyse();
    let r = nodes::render(&s, &a, true, &plain());
    let text = table(&r);
    snapshot("unit_top_nodes_wide", &text);
    assert!(text.contains("Allocated/Total GPUs: 12/16 (75.0%)   Healthy: 15/16"));
    let items = r.data["items"].as_array().unwrap();
    assert_eq!(items[0]["gpusAllocated"], 4);
    assert_eq!(items[0]["utilizationPercent"], 45.5);
}

#[test]
fn top_gpus() {
    let s = scene();
    let a = s.analyse();
    let text = table(&gpus::render(&s, &a, None, false).unwrap());
    snapshot("unit_top_gpus", &text);
    assert!(text.contains("unhealthy (XID 79)"));
    let one = table(&gpus::render(&s, &a, Some("a100-1"), false).unwrap());
    assert!(one.contains("ml/urgent-0") && !one.contains("a100-0"));
    let err = gpus::render(&s, &a, Some("nope"), false).err().unwrap();
    assert_eq!(err.to_string(), "node nope not found");
}

#[test]
fn top_jobs() {
    let s = scene();
    let a = s.analyse();
    let r = jobs::render(&s, &a, None, false, &plain());
    let text = table(&r);
    snapshot("unit_top_jobs_all", &text);
    let phase = |name: &str| {
        r.data["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .map(|i| i["phase"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(phase("train-a"), "Running");
    assert_eq!(phase("urgent"), "Running");
    assert_eq!(phase("big-c"), "Pending");
    assert_eq!(phase("batch-b"), "Preempted");
    assert_eq!(phase("wait-d"), "Pending");
    let ml = table(&jobs::render(&s, &a, Some("ml"), false, &plain()));
    assert!(!ml.contains("wait-d") && !ml.contains("NAMESPACE"));
}

#[test]
fn topo_matrix() {
    let s = scene();
    let a = s.analyse();
    let text = table(&topo::render(&s, &a, "a100-0").unwrap());
    snapshot("unit_topo", &text);
    assert!(text.contains("NV12"));
    assert!(text.contains("NV#  = Connection traversing a bonded set of # NVLinks"));
    // The fixture-labelled node has the scheduler's matrix.
    assert!(topo::render(&s, &a, "a100-1").is_ok());
    assert!(topo::render(&s, &a, "nope").is_err());
}

use super::queue_tests::{explained_in, kinds};

fn explained(target: &str, ns: &str) -> (String, super::explain::Explanation) {
    explained_in(&scene(), target, ns)
}

#[test]
fn explain_names_the_blocker() {
    let (text, e) = explained("podgroup/big-c", "ml");
    snapshot("unit_explain_big_c", &text);
    assert_eq!(kinds(&e), ["capacity", "unhealthy-gpus", "priority"]);
    assert!(text.contains("a100-0/7 (XID 79)"), "{text}");

    let (text, e) = explained("batch-b", "ml");
    snapshot("unit_explain_batch_b", &text);
    assert_eq!(e.gang.phase, "Preempted");
    assert!(kinds(&e).contains(&"priority"), "{text}");
    assert!(
        e.unblock
            .iter()
            .any(|u| u.contains("would fit after preempting"))
    );

    let (text, e) = explained("pod/wait-d-0", "team-q");
    snapshot("unit_explain_wait_d", &text);
    assert_eq!(kinds(&e), ["members", "quota"]);
    assert!(e.unblock[0].contains("needs 2 more members"), "{text}");

    let (_, e) = explained("train-a", "ml");
    assert!(e.blockers.is_empty());
    assert_eq!(e.placement, ["a100-0", "a100-1"]);
}

#[test]
fn explain_targets() {
    assert_eq!(parse_target("pod/x").unwrap(), Target::Pod("x".into()));
    assert_eq!(parse_target("pg/x").unwrap(), Target::Gang("x".into()));
    assert_eq!(parse_target("x").unwrap(), Target::Any("x".into()));
    assert!(parse_target("deploy/x").is_err());
    assert!(parse_target("pod/").is_err());
    let s = scene();
    let err = resolve(&s, "ml", &Target::Pod("ghost".into()))
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "pod ml/ghost not found");
    assert!(resolve(&s, "ml", &Target::Any("ghost".into())).is_err());
}
