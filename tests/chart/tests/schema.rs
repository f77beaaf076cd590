//! `values.schema.json` rejects bad values at install time with a message naming the value.

mod common;
use common::*;

/// Renders with bad values; returns helm's error text (the test fails if rendering succeeds).
fn rejected(sets: &[&str]) -> String {
    let out = render_result(sets);
    assert!(
        !out.status.success(),
        "{sets:?} should have been rejected, but rendered"
    );
    text(&out.stderr)
}

#[test]
fn bad_values_fail_with_a_clear_message() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["scheduler.replicas=-1"],
            &["/scheduler/replicas", "minimum"],
        ),
        (
            &["scheduler.replicas=0"],
            &["/scheduler/replicas", "minimum"],
        ),
        (
            &["scheduler.replicas=two"],
            &["/scheduler/replicas", "integer"],
        ),
        (
            &["scheduler.extender.port=70000"],
            &["/scheduler/extender/port", "maximum"],
        ),
        (
            &["scheduler.extender.metricsPort=0"],
            &["/scheduler/extender/metricsPort", "minimum"],
        ),
        (
            &["scheduler.extender.tls.enabled=yes"],
            &["/scheduler/extender/tls/enabled", "boolean"],
        ),
        (
            &["scheduler.extender.tls.validityDays=0"],
            &["/scheduler/extender/tls/validityDays", "minimum"],
        ),
        (&["scheduler.extender.tls.rotate=true"], &["rotate"]),
        (
            &["scheduler.extender.httpTimeout=soon"],
            &["/scheduler/extender/httpTimeout"],
        ),
        (
            &["scheduler.extender.barrierTimeoutSeconds=0"],
            &["/scheduler/extender/barrierTimeoutSeconds", "minimum"],
        ),
        (
            &["scheduler.extender.barrierTimeoutSeconds=115"],
            &["/scheduler/extender/barrierTimeoutSeconds", "maximum"],
        ),
        // Two replicas without leader election would both decide.
        (
            &[
                "scheduler.replicas=2",
                "scheduler.leaderElection.enabled=false",
            ],
            &["/scheduler/leaderElection/enabled"],
        ),
        (
            &["scheduler.extender.preemption=maybe"],
            &["/scheduler/extender/preemption", "boolean"],
        ),
        (
            &["scheduler.schedulerName=default-scheduler"],
            &["/scheduler/schedulerName"],
        ),
        (
            &["scheduler.schedulerName=Not_A_Name"],
            &["/scheduler/schedulerName"],
        ),
        (
            &["node.agent.migStrategy=all"],
            &["/node/agent/migStrategy"],
        ),
        (
            &["node.hostPaths.devicePlugins=relative/path"],
            &["/node/hostPaths/devicePlugins"],
        ),
        (&["image.pullPolicy=Sometimes"], &["/image/pullPolicy"]),
        (&["image.repository="], &["/image/repository"]),
        (
            &["alerts.idleUtilizationPercent=150"],
            &["/alerts/idleUtilizationPercent", "maximum"],
        ),
        (
            &["dashboard.enabled=yes"],
            &["/dashboard/enabled", "boolean"],
        ),
        (
            &["queues.createDefault=yes"],
            &["/queues/createDefault", "boolean"],
        ),
        (
            &["queues.defaultSpec.gpu.weight=-1"],
            &["/queues/defaultSpec/gpu/weight", "minimum"],
        ),
        (&["queues.defaultSpec.gpus.limit=4"], &["gpus"]),
        // A typo is an error, not silently ignored.
        (&["scheduler.replica=2"], &["replica"]),
        (&["nodee.enabled=false"], &["nodee"]),
    ];
    for (sets, needles) in cases {
        let err = rejected(sets);
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{sets:?}: not a schema error:\n{err}"
        );
        for needle in *needles {
            assert!(
                err.contains(needle),
                "{sets:?}: error does not mention {needle:?}:\n{err}"
            );
        }
    }
}

#[test]
fn good_edge_values_pass_the_schema() {
    for sets in [
        &["scheduler.replicas=1"][..],
        &["scheduler.extender.httpTimeout=2m30s"],
        &[
            "scheduler.extender.maxReservations=0",
            "scheduler.extender.reserveAfterSeconds=0",
        ],
        &["alerts.idleUtilizationPercent=0"],
        &["queues.createDefault=false"],
        &[
            "queues.defaultSpec.parent=org",
            "queues.defaultSpec.gpu.guaranteed=2",
            "queues.defaultSpec.memory.limit=1Ti",
        ],
        &["node.devicePlugin.resource=example.com/gpu"],
        &[
            "scheduler.extender.tls.enabled=true",
            "scheduler.extender.tls.validityDays=1",
        ],
    ] {
        render_with(sets);
    }
}
