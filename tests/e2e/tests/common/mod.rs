//! Helpers shared by the end-to-end tests.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;

/// Deadline for anything the cluster should do "soon". Generous on purpose: it bounds a wait,
/// it is not a performance assertion.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Creates a namespace.
pub async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    api.create(&PostParams::default(), &ns).await.unwrap();
}

/// Polls `name` until `done` holds, panicking with the last object after `DEADLINE`.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, done: impl Fn(&K) -> bool) -> K
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned,
{
    let started = Instant::now();
    loop {
        let object = api.get_opt(name).await.unwrap();
        if let Some(object) = &object
            && done(object)
        {
            return object.clone();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{name}: gave up waiting for {what}; last seen: {object:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A container spec for kwok pods (the image is never pulled).
pub fn container(gpus: Option<u32>) -> serde_json::Value {
    let mut c = json!({"name": "main", "image": "registry.example/train:1"});
    if let Some(g) = gpus {
        c["resources"] = json!({"limits": {"nvidia.com/gpu": g.to_string()}});
    }
    c
}
