//! HTTP endpoints: `/metrics` (Prometheus text), `/healthz`, and, only with `--debug-endpoints`,
//! `/debug/state` (what the agent last published: the `GpuNode` spec and labels, as JSON).
//! Without the flag `/debug/state` is not routed and answers 404 like any unknown path.

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
    /// What `/debug/state` serves; `None`: the route does not exist (the default).
    pub debug: Option<Arc<Mutex<serde_json::Value>>>,
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }));
    if let Some(debug) = state.debug.clone() {
        router = router.route(
            "/debug/state",
            get(move || async move { debug_state(&debug) }),
        );
    }
    router.with_state(state)
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

fn debug_state(debug: &Mutex<serde_json::Value>) -> Response {
    let value = debug.lock().unwrap_or_else(|p| p.into_inner()).clone();
    axum::Json(value).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::Service;

    async fn get_status(router: &mut Router, path: &str) -> StatusCode {
        std::future::poll_fn(|cx| <Router as Service<Request<Body>>>::poll_ready(router, cx))
            .await
            .expect("router is ready");
        let request = Request::get(path).body(Body::empty()).expect("request");
        router.call(request).await.expect("infallible").status()
    }

    fn state(debug: bool) -> AppState {
        AppState {
            metrics: Arc::new(Metrics::new().expect("metrics register")),
            debug: debug.then(|| Arc::new(Mutex::new(serde_json::json!({"writes": {}})))),
        }
    }

    #[tokio::test]
    async fn debug_state_is_not_served_by_default() {
        let mut router = router(state(false));
        assert_eq!(
            get_status(&mut router, "/debug/state").await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(get_status(&mut router, "/metrics").await, StatusCode::OK);
        assert_eq!(get_status(&mut router, "/healthz").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn debug_state_is_served_when_enabled() {
        let mut router = router(state(true));
        assert_eq!(
            get_status(&mut router, "/debug/state").await,
            StatusCode::OK
        );
        assert_eq!(get_status(&mut router, "/metrics").await, StatusCode::OK);
    }
}
