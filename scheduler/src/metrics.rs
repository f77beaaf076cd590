//! Prometheus metrics of the scheduler (`/metrics`).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

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
    pub leader: IntGauge,
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
        m.registry.register(Box::new(m.leader.clone()))?;
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
