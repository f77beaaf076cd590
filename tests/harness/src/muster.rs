//! Muster's own processes next to a test cluster: the KubeSchedulerConfiguration whose
//! `muster` profile calls the extender, and a node agent per kwok node on the fake NVML. Shared
//! by the end-to-end tests and `muster-cluster demo`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::process::Proc;

/// KubeSchedulerConfiguration with a `muster` profile, and one for each of `extra_names` (as
/// the chart's `scheduler.additionalSchedulerNames` renders it), calling the extender on
/// `127.0.0.1:port`.
pub fn scheduler_config(port: u16, extra_names: &[&str]) -> String {
    let mut profiles = String::new();
    for name in std::iter::once(&"muster").chain(extra_names) {
        // The extender answers with the planned node: check every node, not a sample.
        profiles.push_str(&format!(
            "- schedulerName: {name}\n  percentageOfNodesToScore: 100\n"
        ));
    }
    format!(
        r#"apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
# Gang members rejected while their gang was incomplete retry quickly once it is planned.
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 2
profiles:
{profiles}extenders:
- urlPrefix: "http://127.0.0.1:{port}"
  filterVerb: filter
  prioritizeVerb: prioritize
  preemptVerb: preempt
  bindVerb: bind
  weight: 1
  nodeCacheCapable: true
  httpTimeout: 120s
"#
    )
}

/// One node agent for one kwok node on the fake NVML (whose state is process-global, hence a
/// process per node); killed on drop.
pub struct AgentProcess {
    proc: Proc,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Runs `agent` for `node` against the fake NVML `fake_nvml` with `fixture` (a built-in
    /// fixture's name or a JSON path).
    pub fn start(
        agent: &Path,
        fake_nvml: &Path,
        kubeconfig: &Path,
        node: &str,
        fixture: &str,
        log: PathBuf,
        extra_args: &[&str],
    ) -> std::io::Result<AgentProcess> {
        let mut args: Vec<String> = vec![
            "--node-name".into(),
            node.into(),
            "--nvml-lib".into(),
            fake_nvml.display().to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
        ];
        // Defaults the caller may override: an ephemeral metrics port, and no kubelet (the
        // agent then reads pod allocations from the API server only).
        for (flag, value) in [
            ("--metrics-addr", "127.0.0.1:0"),
            ("--pod-resources-socket", "/nonexistent/kubelet.sock"),
        ] {
            if !extra_args.contains(&flag) {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let env: [(&str, &OsStr); 4] = [
            ("MUSTER_FAKE_NVML_FIXTURE", fixture.as_ref()),
            ("MUSTER_FAKE_NVML_NODE", node.as_ref()),
            // Real time, whatever the caller's environment says.
            ("MUSTER_FAKE_NVML_TIME_SCALE", "1".as_ref()),
            ("RUST_LOG", "info".as_ref()),
        ];
        let proc = Proc::spawn_env(agent, &args, &env, &log)?;
        Ok(AgentProcess { proc, log })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.exited().is_none()
    }

    pub fn stop(mut self) {
        self.proc.kill();
    }
}

/// Installs the gang gate (`muster_api::gate`, as the chart does) for `names` and waits until
/// the API server applies it: a dry-run gang member comes back gated. Policies reach the
/// admission chain asynchronously, and a pod created before would be attempted ungated.
pub async fn install_gang_gate(
    client: &kube::Client,
    names: &muster_api::SchedulerNames,
) -> crate::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding,
    };
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};
    let err = |what: &str, e: &dyn std::fmt::Display| {
        crate::Error::Setup(format!("gang gate: {what}: {e}"))
    };
    let [policy, binding] = muster_api::gate::objects("muster-gang-gate", names);
    let policy: MutatingAdmissionPolicy =
        serde_json::from_value(policy).map_err(|e| err("policy", &e))?;
    let binding: MutatingAdmissionPolicyBinding =
        serde_json::from_value(binding).map_err(|e| err("binding", &e))?;
    Api::<MutatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .map_err(|e| err("creating the policy", &e))?;
    Api::<MutatingAdmissionPolicyBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .map_err(|e| err("creating the binding", &e))?;
    let scheduler = names
        .iter()
        .next()
        .unwrap_or(muster_api::names::SCHEDULER_NAME);
    let probe: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "muster-gang-gate-probe",
            "annotations": {muster_api::names::ANNOTATION_GANG: "probe"}},
        "spec": {"schedulerName": scheduler,
            "containers": [{"name": "c", "image": "registry.example/probe:1"}]}
    }))
    .map_err(|e| err("probe pod", &e))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let gated = match pods.create(&dry, &probe).await {
            Ok(p) => p.spec.and_then(|s| s.scheduling_gates).is_some_and(|g| {
                g.iter()
                    .any(|g| g.name == muster_api::names::GATE_PLACEMENT)
            }),
            Err(kube::Error::Api(s)) if s.code == 404 => false, // namespace not there yet
            Err(e) => return Err(err("dry-run probe", &e)),
        };
        if gated {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(crate::Error::Setup(
                "gang gate: the API server did not apply the MutatingAdmissionPolicy within 30 s"
                    .into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
