//! Job operators (Kubeflow training-operator, later Kueue, KubeRay, ...) built like the control
//! plane: `tests/tools/build-operator.sh <name>` builds the module pinned under
//! `tests/tools/operators/<name>/` into the shared tools cache and copies the operator's
//! published CRDs beside the binary. Every test that needs an operator calls [`build`]; within
//! one process each answer is computed once, across processes the script's lock and cache make
//! the build happen once per machine.

mod jobset;
mod katib;
mod katib_services;
mod kuberay;
mod kueue;
mod process;
mod trainer;
mod training;
mod webhook_tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::tools;

pub use jobset::{JobSet, JobSetConfig};
pub use katib::{Katib, KatibConfig};
pub use katib_services::{KatibDb, KatibSuggestion};
pub use kuberay::{KubeRay, KubeRayConfig};
pub use kueue::{Kueue, KueueConfig};
pub use trainer::{Trainer, TrainerConfig};
pub use training::{TrainingOperator, TrainingOperatorConfig};

/// What `build-operator.sh <name>` produced.
#[derive(Clone, Debug)]
pub struct OperatorBuild {
    pub name: String,
    /// `<cache>/operators/<name>-<key>`.
    pub dir: PathBuf,
    /// Holds the binary `<name>`.
    pub bin_dir: PathBuf,
    /// The operator's CustomResourceDefinitions as its module publishes them (one per file,
    /// ready for [`crate::TestCluster::install_crds`]).
    pub crds_dir: PathBuf,
    /// Further published manifests named in its `operator.env` (e.g. the webhook configuration).
    pub manifests_dir: PathBuf,
}

impl OperatorBuild {
    /// The operator's executable.
    pub fn binary(&self) -> PathBuf {
        self.bin_dir.join(&self.name)
    }
}

/// The script, located from this crate's source directory (tests/harness).
pub fn build_operator_script() -> PathBuf {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR"));
    harness
        .parent()
        .unwrap_or(harness)
        .join("tools/build-operator.sh")
}

/// Builds operator `name` if needed (blocking: minutes on a cold cache, ~10 ms warm).
pub fn build(name: &str) -> Result<OperatorBuild> {
    static CACHED: Mutex<Option<HashMap<String, OperatorBuild>>> = Mutex::new(None);
    // A poisoned lock only means another test panicked while building; the cache is still valid.
    let mut cached = CACHED.lock().unwrap_or_else(|e| e.into_inner());
    let cached = cached.get_or_insert_with(HashMap::new);
    if let Some(b) = cached.get(name) {
        return Ok(b.clone());
    }
    let dir = tools::run_script(
        &build_operator_script(),
        &[name],
        &format!("locating operator {name} (builds it on first use)"),
    )?;
    let b = OperatorBuild {
        name: name.to_string(),
        bin_dir: dir.join("bin"),
        crds_dir: dir.join("crds"),
        manifests_dir: dir.join("manifests"),
        dir,
    };
    if !b.binary().is_file() {
        return Err(Error::Operator {
            name: name.into(),
            detail: format!(
                "build-operator.sh printed {} without bin/{name}",
                b.dir.display()
            ),
        });
    }
    cached.insert(name.to_string(), b.clone());
    Ok(b)
}

/// [`build`] from async code.
pub async fn build_async(name: &str) -> Result<OperatorBuild> {
    let owned = name.to_string();
    tokio::task::spawn_blocking(move || build(&owned))
        .await
        .map_err(|e| Error::Operator {
            name: name.into(),
            detail: format!("build task failed: {e}"),
        })?
}

/// kwok's `pod-complete` Stage as build.sh writes it (with the
/// `pod-complete.stage.kwok.x-k8s.io/delay` knob), renamed `pod-complete-operators` and
/// matching pods owned by one of `owner_kinds` instead of `Job`: pods an operator creates
/// (owned by a PyTorchJob, TFJob, ...) then complete as Job pods do. Pass the file to kwok with
/// an extra `--config=` (kwok reads every `--config`).
pub fn kwok_completion_stage(owner_kinds: &[&str]) -> Result<String> {
    let stages = tools::stages_file(&tools::bin_dir()?);
    let text = std::fs::read_to_string(&stages).map_err(|e| Error::Operator {
        name: "kwok".into(),
        detail: format!("reading {}: {e}", stages.display()),
    })?;
    let bad = |detail: String| Error::Operator {
        name: "kwok".into(),
        detail: format!("{}: {detail}", stages.display()),
    };
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut stage = serde_yaml::Value::deserialize(doc).map_err(|e| bad(e.to_string()))?;
        if stage["metadata"]["name"].as_str() != Some("pod-complete") {
            continue;
        }
        stage["metadata"]["name"] = "pod-complete-operators".into();
        let exprs = stage["spec"]["selector"]["matchExpressions"]
            .as_sequence_mut()
            .ok_or_else(|| bad("pod-complete has no matchExpressions".into()))?;
        let owner = exprs
            .iter_mut()
            .find(|e| e["key"].as_str() == Some(".metadata.ownerReferences.[].kind"))
            .ok_or_else(|| bad("pod-complete does not select on the owner's kind".into()))?;
        owner["values"] = owner_kinds
            .iter()
            .map(|k| serde_yaml::Value::from(*k))
            .collect();
        return serde_yaml::to_string(&stage).map_err(|e| bad(e.to_string()));
    }
    Err(bad("no pod-complete Stage".into()))
}
