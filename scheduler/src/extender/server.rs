//! Routes. Every verb answers malformed input with 400 and a JSON error body, never a panic.
//!
//! Two routers, served on two listeners: [`verbs_router`] (what kube-scheduler calls; loopback
//! or mutual TLS) and [`ops_router`] (`/metrics`, `/healthz`, `/readyz`; scrapes and probes).

use super::types::*;
use crate::engine::{Answer, BindTarget, Engine};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Extender requests carry one pod and node names; 16 MiB leaves room for full node lists.
pub const MAX_BODY_BYTES: usize = 16 << 20;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub ready: Arc<AtomicBool>,
}

/// The extender verbs: `/filter`, `/prioritize`, `/preempt`, `/bind`. Nothing else.
pub fn verbs_router(state: AppState) -> Router {
    Router::new()
        .route("/filter", post(filter))
        .route("/prioritize", post(prioritize))
        .route("/preempt", post(preempt))
        .route("/bind", post(bind))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// `/metrics`, `/healthz` and `/readyz`: read-only, no verb.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

fn decode<T: DeserializeOwned>(
    verb: &str,
    body: &Bytes,
    state: &AppState,
) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        state
            .engine
            .metrics
            .extender_errors
            .with_label_values(&[verb, "bad_request"])
            .inc();
        let body = serde_json::json!({ "Error": format!("malformed {verb} request: {e}") });
        Box::new((StatusCode::BAD_REQUEST, axum::Json(body)).into_response())
    })
}

fn json<T: Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

fn observe(state: &AppState, verb: &str, started: Instant) {
    state
        .engine
        .metrics
        .extender_latency
        .with_label_values(&[verb])
        .observe(started.elapsed().as_secs_f64());
}

async fn filter(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let args: ExtenderArgs = match decode("filter", &body, &state) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let candidates = args.candidate_names();
    let Some(pod) = args.pod.as_ref() else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"Error": "filter request has no Pod"})),
        )
            .into_response();
    };
    let mut result = ExtenderFilterResult {
        node_names: Some(Vec::new()),
        ..Default::default()
    };
    match state.engine.filter(pod).await {
        // Nodes left out of both lists are simply not feasible: per-node reasons are only
        // worth their bytes when the pod cannot go anywhere.
        Answer::Node(node) if candidates.contains(&node) => {
            result.node_names = Some(vec![node]);
        }
        Answer::Node(node) => {
            tracing::debug!(node, "planned node not among the scheduler's candidates");
            // kube-scheduler tries a nominated node alone first: a stale nomination elsewhere
            // says nothing about the planned node.
            let nominated = pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_ref());
            let only_nominated =
                candidates.len() == 1 && nominated.is_some_and(|n| candidates.contains(n));
            if !only_nominated && let Some(uid) = pod.metadata.uid.as_deref() {
                state.engine.planned_node_refused(uid, &node).await;
            }
            for n in candidates {
                result
                    .failed_and_unresolvable_nodes
                    .insert(n, format!("gang plan places this pod on {node}"));
            }
        }
        // Always unresolvable, whatever the engine's reason: kube-scheduler's own preemption
        // never helps a Muster pod (the preempt verb offers no victims; the engine evicts whole
        // gangs itself), yet on resolvable nodes it runs a dry run that re-filters every one of
        // them, a third of each failed attempt under contention. Unresolvable nodes skip it.
        Answer::Wait { message, .. } => {
            for n in candidates {
                result
                    .failed_and_unresolvable_nodes
                    .insert(n, message.clone());
            }
        }
    }
    observe(&state, "filter", started);
    json(&result)
}

async fn prioritize(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let args: ExtenderArgs = match decode("prioritize", &body, &state) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let uid = args
        .pod
        .as_ref()
        .and_then(|p| p.metadata.uid.clone())
        .unwrap_or_default();
    let planned = state.engine.planned_node(&uid).await;
    let scores: Vec<HostPriority> = args
        .candidate_names()
        .into_iter()
        .map(|host| HostPriority {
            score: if planned.as_deref() == Some(host.as_str()) {
                10
            } else {
                0
            },
            host,
        })
        .collect();
    observe(&state, "prioritize", started);
    json(&scores)
}

/// kube-scheduler's per-pod preemption would break gangs: Muster evicts whole gangs itself
/// (see the engine), so it offers kube-scheduler no victims.
async fn preempt(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let _args: ExtenderPreemptionArgs = match decode("preempt", &body, &state) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    observe(&state, "preempt", started);
    json(&ExtenderPreemptionResult::default())
}

async fn bind(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let args: ExtenderBindingArgs = match decode("bind", &body, &state) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if args.pod_uid.is_empty() || args.node.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"Error": "bind request needs PodUID and Node"})),
        )
            .into_response();
    }
    let target = BindTarget {
        namespace: &args.pod_namespace,
        name: &args.pod_name,
        uid: &args.pod_uid,
    };
    let error = match state.engine.bind(&target, &args.node).await {
        Ok(()) => String::new(),
        Err(e) => {
            state
                .engine
                .metrics
                .extender_errors
                .with_label_values(&["bind", "refused"])
                .inc();
            tracing::info!(pod = %args.pod_name, namespace = %args.pod_namespace, error = %e, "bind refused");
            e
        }
    };
    observe(&state, "bind", started);
    json(&ExtenderBindingResult { error })
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.engine.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the cache or the leader lease",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Cache, CacheObjects};
    use crate::engine::EngineConfig;
    use crate::metrics::Metrics;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tower::ServiceExt;

    /// An engine over an empty cache; its client points at a closed port (never called here).
    pub(crate) fn state() -> AppState {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let engine = Engine::new(
            Cache::from_objects(CacheObjects::default()),
            client.clone(),
            client,
            EngineConfig {
                planner: muster_core::PlannerConfig::default(),
                barrier_timeout: Duration::from_secs(1),
                report: false,
                nominate: false,
            },
            Metrics::new().unwrap(),
        );
        AppState {
            engine,
            ready: Arc::new(AtomicBool::new(true)),
        }
    }

    async fn call(app: &Router, method: &str, path: &str, body: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// kube-scheduler's preemption dry run never helps a Muster pod (the preempt verb offers
    /// no victims; whole gangs are evicted by the engine), so every wait is unresolvable.
    #[tokio::test]
    async fn every_wait_is_unresolvable_so_kube_scheduler_skips_its_preemption_dry_run() {
        let verbs = verbs_router(state());
        // A pod the cache has not seen yet: it waits, a case preemption could never solve.
        let request = serde_json::json!({
            "Pod": {"metadata": {"name": "p", "namespace": "ml", "uid": "uid-p"},
                    "spec": {"schedulerName": "muster", "containers": []}},
            "NodeNames": ["n1", "n2"],
        });
        let (status, body) = call(&verbs, "POST", "/filter", &request.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let result: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(result["FailedNodes"], serde_json::json!({}), "{body}");
        let unresolvable = result["FailedAndUnresolvableNodes"].as_object().unwrap();
        assert_eq!(unresolvable.len(), 2, "{body}");
    }

    #[tokio::test]
    async fn verbs_are_served_apart_from_metrics_and_probes() {
        let state = state();
        let verbs = verbs_router(state.clone());
        let ops = ops_router(state.clone());
        assert_eq!(
            call(&verbs, "POST", "/preempt", "{}").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(&verbs, "POST", "/filter", "{not json").await.0,
            StatusCode::BAD_REQUEST
        );
        for path in ["/metrics", "/healthz", "/readyz"] {
            assert_eq!(
                call(&verbs, "GET", path, "").await.0,
                StatusCode::NOT_FOUND,
                "verbs listener serves {path}"
            );
            assert_eq!(
                call(&ops, "GET", path, "").await.0,
                StatusCode::OK,
                "{path}"
            );
        }
        for verb in ["/filter", "/prioritize", "/preempt", "/bind"] {
            assert_eq!(
                call(&ops, "POST", verb, "{}").await.0,
                StatusCode::NOT_FOUND,
                "metrics listener serves {verb}"
            );
        }
        let (_, text) = call(&ops, "GET", "/metrics", "").await;
        assert!(text.contains("muster_extender_errors_total"), "{text}");
        state.ready.store(false, Ordering::Release);
        assert_eq!(
            call(&ops, "GET", "/readyz", "").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
