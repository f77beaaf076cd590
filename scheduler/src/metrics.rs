//! Prometheus metrics of the scheduler (`/metrics`).

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Label values the counters below are incremented with (see their call sites). They are
/// created at 0 at start-up: otherwise a counter has no series until its first event, and a
/// rate over it ("errors per verb", "evictions by result") is an empty result, not 0 - the
/// dashboard shows "No data" and an alert cannot tell "none" from "not scraped".
const EXTENDER_ERRORS: [(&str, &str); 7] = [
    ("filter", "bad_request"),
    ("prioritize", "bad_request"),
    ("preempt", "bad_request"),
    ("bind", "bad_request"),
    ("filter", "forged"),
    ("bind", "forged"),
    ("bind", "refused"),
];
const EVICTION_RESULTS: [&str; 4] = ["evicted", "refused", "gone", "failed"];
const GANG_ATTEMPT_RESULTS: [&str; 3] = ["placed", "waiting", "preempting"];

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub extender_latency: HistogramVec,
    pub extender_errors: IntCounterVec,
    pub gang_attempts: IntCounterVec,
    pub gang_wait: HistogramVec,
    pub pending_gangs: IntGaugeVec,
    pub preemptions: IntCounter,
    pub evictions: IntCounterVec,
    pub barrier_timeouts: IntCounter,
    pub rollbacks: IntCounter,
    pub dropped_plans: IntCounterVec,
    pub barrier_waiting: IntGauge,
    pub plan_seconds: HistogramVec,
    pub fast_placements: IntCounter,
    pub nominations: IntCounterVec,
    pub gate_releases: IntCounterVec,
    pub leader: IntGauge,
    pub queues: QueueMetrics,
}

/// Per queue, as of the last round (`resource`: `nvidia.com/gpu`, `cpu` in cores, `memory` in
/// bytes).
#[derive(Clone)]
pub struct QueueMetrics {
    pub allocated: GaugeVec,
    pub guaranteed: GaugeVec,
    /// Only queues with a limit on the resource have a series.
    pub limit: GaugeVec,
    pub borrowed: GaugeVec,
    pub pending_gangs: IntGaugeVec,
    pub running_gangs: IntGaugeVec,
    /// Allocated over fair share on the dominant resource.
    pub share: GaugeVec,
    /// Reclaims started, by the reclaiming queue.
    pub reclaims: IntCounterVec,
}

impl QueueMetrics {
    fn new(registry: &Registry) -> Result<QueueMetrics, prometheus::Error> {
        let by_resource =
            |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["queue", "resource"]);
        let q = QueueMetrics {
            allocated: by_resource(
                "muster_queue_allocated",
                "What the queue's running gangs hold, by resource (GPUs, CPU cores, memory bytes)",
            )?,
            guaranteed: by_resource(
                "muster_queue_guaranteed",
                "The queue's guarantee, by resource",
            )?,
            limit: by_resource(
                "muster_queue_limit",
                "The most the queue may hold, by resource (no series: no limit)",
            )?,
            borrowed: by_resource(
                "muster_queue_borrowed",
                "What the queue holds above its guarantee, by resource",
            )?,
            pending_gangs: IntGaugeVec::new(
                Opts::new("muster_queue_pending_gangs", "Gangs waiting in the queue"),
                &["queue"],
            )?,
            running_gangs: IntGaugeVec::new(
                Opts::new("muster_queue_running_gangs", "Gangs the queue runs"),
                &["queue"],
            )?,
            share: GaugeVec::new(
                Opts::new(
                    "muster_queue_share",
                    "Allocated over fair share on the queue's dominant resource (1: at its share)",
                ),
                &["queue"],
            )?,
            reclaims: IntCounterVec::new(
                Opts::new(
                    "muster_reclaims_total",
                    "Reclaims started (borrowing gangs of other queues evicted whole), by the reclaiming queue",
                ),
                &["queue"],
            )?,
        };
        registry.register(Box::new(q.allocated.clone()))?;
        registry.register(Box::new(q.guaranteed.clone()))?;
        registry.register(Box::new(q.limit.clone()))?;
        registry.register(Box::new(q.borrowed.clone()))?;
        registry.register(Box::new(q.pending_gangs.clone()))?;
        registry.register(Box::new(q.running_gangs.clone()))?;
        registry.register(Box::new(q.share.clone()))?;
        registry.register(Box::new(q.reclaims.clone()))?;
        Ok(q)
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let m = Metrics {
            extender_latency: HistogramVec::new(
                HistogramOpts::new(
                    "muster_extender_request_duration_seconds",
                    "Extender call latency by verb",
                )
                .buckets(buckets.clone()),
                &["verb"],
            )?,
            extender_errors: IntCounterVec::new(
                Opts::new(
                    "muster_extender_errors_total",
                    "Extender calls answered with an error, by verb and kind",
                ),
                &["verb", "kind"],
            )?,
            gang_attempts: IntCounterVec::new(
                Opts::new(
                    "muster_gang_scheduling_attempts_total",
                    "Gang placement attempts by result",
                ),
                &["result"],
            )?,
            gang_wait: HistogramVec::new(
                HistogramOpts::new(
                    "muster_gang_wait_seconds",
                    "Time from gang creation to all members bound",
                )
                .buckets(vec![
                    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
                ]),
                &["queue"],
            )?,
            pending_gangs: IntGaugeVec::new(
                Opts::new(
                    "muster_pending_gangs",
                    "Gangs waiting to be placed, by queue",
                ),
                &["queue"],
            )?,
            preemptions: IntCounter::new(
                "muster_preemptions_total",
                "Gangs evicted to make room for higher priority",
            )?,
            evictions: IntCounterVec::new(
                Opts::new(
                    "muster_evictions_total",
                    "Pod evictions requested, by result",
                ),
                &["result"],
            )?,
            leader: IntGauge::new(
                "muster_leader",
                "1 while this replica leads (decides and writes), 0 otherwise",
            )?,
            fast_placements: IntCounter::new(
                "muster_fast_placements_total",
                "Gangs placed on their own between full planning rounds",
            )?,
            nominations: IntCounterVec::new(
                Opts::new(
                    "muster_nominations_total",
                    "Planned pods nominated to their node (status.nominatedNodeName), by result",
                ),
                &["result"],
            )?,
            gate_releases: IntCounterVec::new(
                Opts::new(
                    "muster_gate_releases_total",
                    "Planned gang members whose muster.dev/placement scheduling gate was removed, by result",
                ),
                &["result"],
            )?,
            barrier_timeouts: IntCounter::new(
                "muster_bind_barrier_timeouts_total",
                "Gangs whose members did not all reach bind in time (nothing bound, retried whole)",
            )?,
            rollbacks: IntCounter::new(
                "muster_gang_rollbacks_total",
                "Gangs bound part-way whose bound members were deleted to re-plan them whole",
            )?,
            dropped_plans: IntCounterVec::new(
                Opts::new(
                    "muster_dropped_plans_total",
                    "Gang plans dropped before binding (nothing bound, re-planned whole), by cause",
                ),
                &["cause"],
            )?,
            barrier_waiting: IntGauge::new(
                "muster_bind_barrier_waiting_pods",
                "Pods whose bind call waits at their gang's barrier",
            )?,
            plan_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "muster_plan_duration_seconds",
                    "Snapshot and planning time per cycle",
                )
                .buckets(buckets),
                &["phase"],
            )?,
            queues: QueueMetrics::new(&registry)?,
            registry,
        };
        m.registry.register(Box::new(m.extender_latency.clone()))?;
        m.registry.register(Box::new(m.extender_errors.clone()))?;
        m.registry.register(Box::new(m.gang_attempts.clone()))?;
        m.registry.register(Box::new(m.gang_wait.clone()))?;
        m.registry.register(Box::new(m.pending_gangs.clone()))?;
        m.registry.register(Box::new(m.preemptions.clone()))?;
        m.registry.register(Box::new(m.evictions.clone()))?;
        m.registry.register(Box::new(m.barrier_timeouts.clone()))?;
        m.registry.register(Box::new(m.barrier_waiting.clone()))?;
        m.registry.register(Box::new(m.rollbacks.clone()))?;
        m.registry.register(Box::new(m.dropped_plans.clone()))?;
        m.registry.register(Box::new(m.plan_seconds.clone()))?;
        m.registry.register(Box::new(m.fast_placements.clone()))?;
        m.registry.register(Box::new(m.nominations.clone()))?;
        m.registry.register(Box::new(m.gate_releases.clone()))?;
        m.registry.register(Box::new(m.leader.clone()))?;
        for labels in EXTENDER_ERRORS {
            m.extender_errors.with_label_values(&[labels.0, labels.1]);
        }
        for result in EVICTION_RESULTS {
            m.evictions.with_label_values(&[result]);
        }
        for result in GANG_ATTEMPT_RESULTS {
            m.gang_attempts.with_label_values(&[result]);
        }
        Ok(m)
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_by_known_labels_start_at_zero() {
        let text = Metrics::new().unwrap().render();
        for series in [
            r#"muster_extender_errors_total{kind="bad_request",verb="filter"} 0"#,
            r#"muster_extender_errors_total{kind="refused",verb="bind"} 0"#,
            r#"muster_evictions_total{result="evicted"} 0"#,
            r#"muster_gang_scheduling_attempts_total{result="placed"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == series), "no {series} in\n{text}");
        }
    }
}
