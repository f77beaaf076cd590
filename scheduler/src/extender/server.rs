//! Routes. Every verb answers malformed input with 400 and a JSON error body, never a panic.

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

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/filter", post(filter))
        .route("/prioritize", post(prioritize))
        .route("/preempt", post(preempt))
        .route("/bind", post(bind))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
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
                    .failed_nodes
                    .insert(n, format!("gang plan places this pod on {node}"));
            }
        }
        Answer::Wait {
            message,
            unresolvable,
        } => {
            let target = if unresolvable {
                &mut result.failed_and_unresolvable_nodes
            } else {
                &mut result.failed_nodes
            };
            for n in candidates {
                target.insert(n, message.clone());
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
