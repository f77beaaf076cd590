//! kube-scheduler configuration as the harness runs it.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};

/// Which configuration kube-scheduler runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedulerConfig {
    /// The built-in `default-scheduler` profile.
    Default,
    /// A KubeSchedulerConfiguration document (e.g. a `muster` profile with an extender).
    Yaml(String),
}

const DEFAULT_CONFIG: &str = "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
";

fn key(k: &str) -> Value {
    Value::String(k.to_string())
}

/// The mapping under `parent[name]`, created when absent.
fn child_mapping<'a>(parent: &'a mut Mapping, name: &str) -> Result<&'a mut Mapping> {
    let entry = parent
        .entry(key(name))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if entry.is_null() {
        *entry = Value::Mapping(Mapping::new());
    }
    entry
        .as_mapping_mut()
        .ok_or_else(|| Error::SchedulerConfig(format!("`{name}` must be a mapping")))
}

impl SchedulerConfig {
    /// The YAML written to the cluster directory: the given document with the cluster's
    /// kubeconfig filled in (with `--config`, kube-scheduler ignores `--kubeconfig`).
    pub fn render(&self, kubeconfig: &Path) -> Result<String> {
        let source = match self {
            SchedulerConfig::Default => DEFAULT_CONFIG,
            SchedulerConfig::Yaml(yaml) => yaml.as_str(),
        };
        let mut doc: Value = serde_yaml::from_str(source)
            .map_err(|e| Error::SchedulerConfig(format!("not valid YAML: {e}")))?;
        let root = doc.as_mapping_mut().ok_or_else(|| {
            Error::SchedulerConfig(
                "the document must be a KubeSchedulerConfiguration mapping".into(),
            )
        })?;
        if root.get("kind").and_then(Value::as_str) != Some("KubeSchedulerConfiguration") {
            return Err(Error::SchedulerConfig(
                "kind must be KubeSchedulerConfiguration".into(),
            ));
        }
        let connection = child_mapping(root, "clientConnection")?;
        connection.insert(key("kubeconfig"), key(&kubeconfig.display().to_string()));
        // The defaults (50/100) throttle tests that create hundreds of pods.
        connection.entry(key("qps")).or_insert(Value::from(200));
        connection.entry(key("burst")).or_insert(Value::from(400));
        let election = child_mapping(root, "leaderElection")?;
        election
            .entry(key("leaderElect"))
            .or_insert(Value::Bool(false));
        serde_yaml::to_string(&doc).map_err(|e| Error::SchedulerConfig(format!("serialising: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_gets_kubeconfig_and_no_leader_election() {
        let yaml = SchedulerConfig::Default
            .render(Path::new("/tmp/kc"))
            .unwrap();
        let doc: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            doc["clientConnection"]["kubeconfig"].as_str(),
            Some("/tmp/kc")
        );
        assert_eq!(doc["leaderElection"]["leaderElect"].as_bool(), Some(false));
    }

    #[test]
    fn user_profiles_and_choices_are_kept() {
        let yaml = "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: true
clientConnection:
  kubeconfig: /elsewhere
  qps: 7
profiles:
- schedulerName: muster
";
        let out = SchedulerConfig::Yaml(yaml.into())
            .render(Path::new("/kc"))
            .unwrap();
        let doc: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(doc["clientConnection"]["kubeconfig"].as_str(), Some("/kc"));
        assert_eq!(doc["clientConnection"]["qps"].as_i64(), Some(7));
        assert_eq!(doc["leaderElection"]["leaderElect"].as_bool(), Some(true));
        assert_eq!(doc["profiles"][0]["schedulerName"].as_str(), Some("muster"));
    }

    #[test]
    fn wrong_kind_is_rejected() {
        let err = SchedulerConfig::Yaml("kind: Pod\n".into())
            .render(Path::new("/kc"))
            .unwrap_err();
        assert!(err.to_string().contains("KubeSchedulerConfiguration"));
    }
}
