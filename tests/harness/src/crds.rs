//! Installing CustomResourceDefinitions (e.g. Muster's, from the chart) into a test cluster.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;

use crate::cluster::TestCluster;
use crate::error::{Context, Error, Result};

impl TestCluster {
    /// Creates every CRD in the YAML files of `dir` and waits until each is established.
    /// Returns their names.
    pub async fn install_crds(&self, dir: &Path) -> Result<Vec<String>> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        let mut names = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .context(format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for path in files {
            let text =
                std::fs::read_to_string(&path).context(format!("reading {}", path.display()))?;
            let crd: CustomResourceDefinition = serde_yaml::from_str(&text)
                .map_err(|e| Error::NodeSpec(format!("{} is not a CRD: {e}", path.display())))?;
            names.push(crd.metadata.name.clone().unwrap_or_default());
            api.create(&PostParams::default(), &crd)
                .await
                .context(format!("creating CRD from {}", path.display()))?;
        }
        self.wait_crds_established(&names, Duration::from_secs(120))
            .await?;
        Ok(names)
    }

    /// Waits until every named CRD has condition Established=True.
    pub async fn wait_crds_established(&self, names: &[String], deadline: Duration) -> Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        let started = Instant::now();
        for name in names {
            loop {
                let crd = api.get(name).await.context(format!("reading CRD {name}"))?;
                let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
                if established {
                    break;
                }
                if started.elapsed() > deadline {
                    return Err(Error::Timeout {
                        what: format!("CRD {name} to be established"),
                        seconds: deadline.as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}
