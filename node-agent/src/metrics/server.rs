//! HTTP endpoints: `/metrics` (Prometheus text), `/healthz`, and `/debug/state` (what the agent
//! would publish: the `GpuNode` spec and labels, as JSON).

use super::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub debug: Arc<Mutex<serde_json::Value>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/debug/state", get(debug_state))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

async fn debug_state(State(state): State<AppState>) -> Response {
    let value = state
        .debug
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    axum::Json(value).into_response()
}
