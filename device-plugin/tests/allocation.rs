//! GetPreferredAllocation and Allocate: the scheduler's choice, the fallback choice, exclusive
//! GPUs across pods, refused IDs and the exact Allocate response.

mod common;

use common::{DEADLINE, NODE, Setup, annotated_pod, start};
use muster_api::machines::builtin;
use muster_device_plugin::pods::PodStore;
use muster_device_plugin::proto;
use std::collections::{BTreeSet, HashMap};
use tonic::Code;

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

/// The kubelet's available list, shuffled so that no "take the first N" shortcut matches.
fn misleading(uuids: &[String]) -> Vec<String> {
    [6, 0, 4, 1, 5, 2, 7, 3]
        .iter()
        .map(|&i| uuids[i].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_choice_is_honoured_against_a_misleading_available_list() {
    let pods = PodStore::new();
    let mut setup = Setup::new("dgx1-v100");
    setup.pods = Some(pods.clone());
    let mut run = start(setup).await;
    let u = run.uuids();
    // Not the best-linked quad ({0,1,2,3} or {4,5,6,7}): only the annotation can explain it.
    let chosen = vec![u[1].clone(), u[3].clone(), u[5].clone(), u[7].clone()];
    pods.apply(annotated_pod("trainer-0", &chosen, 1_000));
    // Distractors: a choice for another node, a terminated pod, an already allocated pod.
    let mut other_node = annotated_pod("elsewhere", &u[0..4], 10);
    other_node.gpu_node = Some("other-node".into());
    pods.apply(other_node);
    let mut done = annotated_pod("finished", &u[4..8], 20);
    done.terminated = true;
    pods.apply(done);
    let mut allocated = annotated_pod("running", &u[0..2], 30);
    allocated.allocated = true;
    pods.apply(allocated);

    // The kubelet would not list GPUs 0 and 1 (held by "running").
    let available: Vec<String> = misleading(&u)
        .into_iter()
        .filter(|id| *id != u[0] && *id != u[1])
        .collect();
    // GPU 1 is in the choice but held: the choice cannot fit, so the fallback answers.
    let fallback = run.kubelet.admit(&available, &[], 4).await.unwrap();
    assert_ne!(set(&fallback.preferred), set(&chosen));
    run.plugin.pods.delete("team/running");
    // Now GPU 1 is free again; a fresh admission with the full misleading list.
    let mut client = run.kubelet.plugin().await.unwrap();
    let preferred = client
        .get_preferred_allocation(proto::PreferredAllocationRequest {
            container_requests: vec![proto::ContainerPreferredAllocationRequest {
                available_device_i_ds: misleading(&u),
                must_include_device_i_ds: vec![],
                allocation_size: 4,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        preferred.container_responses[0].device_i_ds, chosen,
        "exactly the annotated set"
    );
    let response = run
        .kubelet
        .allocate(&mut client, &preferred.container_responses[0].device_i_ds)
        .await
        .unwrap();
    assert_eq!(response.envs["NVIDIA_VISIBLE_DEVICES"], chosen.join(","));
    let recorded = run.allocated.recv().await.unwrap();
    assert_eq!(
        (recorded.name.as_str(), recorded.uid.as_str()),
        ("trainer-0", "uid-trainer-0")
    );
    let text = run.plugin.metrics.render();
    assert!(
        text.contains("muster_device_plugin_preferred_allocations_total{source=\"annotation\"} 1"),
        "{text}"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choice_with_must_include_outside_it_or_wrong_size_falls_back() {
    let pods = PodStore::new();
    let mut setup = Setup::new("dgx1-v100");
    setup.pods = Some(pods.clone());
    let run = start(setup).await;
    let u = run.uuids();
    let chosen = vec![u[1].clone(), u[3].clone(), u[5].clone(), u[7].clone()];
    pods.apply(annotated_pod("trainer-0", &chosen, 1_000));
    // Must-include GPU 4, which the choice lacks: the fallback quad containing it.
    let a = run.kubelet.admit(&u, &[u[4].clone()], 4).await.unwrap();
    assert_eq!(set(&a.preferred), set(&u[4..8]));
    // A 2-GPU request cannot be the 4-GPU pod.
    let b = run.kubelet.admit(&u[0..4], &[], 2).await.unwrap();
    assert_eq!(b.preferred.len(), 2);
    assert_ne!(set(&b.preferred), set(&chosen));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_picks_an_nvlinked_quad_on_dgx1() {
    let run = start(Setup::new("dgx1-v100")).await;
    let u = run.uuids();
    let topo = &builtin("dgx1-v100").unwrap().topology;
    let index = |id: &String| u.iter().position(|x| x == id).unwrap();
    let all_nvlinked = |ids: &[String]| {
        ids.iter().all(|a| {
            ids.iter()
                .all(|b| a == b || topo.link(index(a), index(b)).is_nvlink())
        })
    };
    // Idle machine: one of the two fully NVLinked quads.
    let idle = run.kubelet.admit(&misleading(&u), &[], 4).await.unwrap();
    assert!(all_nvlinked(&idle.preferred), "{:?}", idle.preferred);
    assert!(set(&idle.preferred) == set(&u[0..4]) || set(&idle.preferred) == set(&u[4..8]));
    // GPU 0 taken: only {4,5,6,7} is fully NVLinked.
    let rest: Vec<String> = misleading(&u).into_iter().filter(|x| *x != u[0]).collect();
    let second = run.kubelet.admit(&rest, &[], 4).await.unwrap();
    assert_eq!(set(&second.preferred), set(&u[4..8]));
    // Must-include honoured.
    let with_must = run.kubelet.admit(&u, &[u[6].clone()], 4).await.unwrap();
    assert_eq!(set(&with_must.preferred), set(&u[4..8]));
    // An impossible request is an error, not a panic, and the plugin keeps serving.
    let err = run.kubelet.admit(&u[0..2], &[], 4).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    run.kubelet.admit(&u, &[], 1).await.unwrap();
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pods_never_share_a_gpu() {
    let pods = PodStore::new();
    let mut setup = Setup::new("dgx1-v100");
    setup.pods = Some(pods.clone());
    let run = start(setup).await;
    let u = run.uuids();
    // Two annotated pods with disjoint choices, admitted concurrently against the same
    // available list (a kubelet that has not yet accounted for either).
    pods.apply(annotated_pod("a", &u[0..4], 1));
    pods.apply(annotated_pod("b", &u[4..8], 2));
    let (x, y) = tokio::join!(run.kubelet.admit(&u, &[], 4), run.kubelet.admit(&u, &[], 4));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(
        set(&x.preferred).is_disjoint(&set(&y.preferred)),
        "{x:?} {y:?}"
    );
    let both: BTreeSet<BTreeSet<String>> = [set(&x.preferred), set(&y.preferred)].into();
    assert_eq!(both, [set(&u[0..4]), set(&u[4..8])].into());

    // A third pod whose choice overlaps "a" (a stale plan): the GPUs held by the live pod "a"
    // are refused even if a kubelet asks for them.
    pods.apply(annotated_pod("c", &u[2..6], 3));
    let mut client = run.kubelet.plugin().await.unwrap();
    let err = run
        .kubelet
        .allocate(&mut client, &u[2..6])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("allocated to live pod team/"),
        "{}",
        err.message()
    );
    // When "a" and "b" go away (the watch saw them deleted), the GPUs are free again.
    pods.delete("team/a");
    pods.delete("team/b");
    let ok = run.kubelet.allocate(&mut client, &u[2..6]).await.unwrap();
    assert_eq!(ok.envs["NVIDIA_VISIBLE_DEVICES"], u[2..6].join(","));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_refused_and_the_plugin_keeps_serving() {
    let run = start(Setup::new("dgx1-v100")).await;
    let u = run.uuids();
    let mut client = run.kubelet.plugin().await.unwrap();
    let bogus = "GPU-00000000-0000-0000-0000-000000000000".to_string();
    let err = run
        .kubelet
        .allocate(&mut client, &[u[0].clone(), bogus.clone()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains(&bogus) && err.message().contains("unknown device"),
        "{}",
        err.message()
    );
    let err = run
        .kubelet
        .allocate(&mut client, &[u[0].clone(), u[0].clone()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = run.kubelet.allocate(&mut client, &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Still serving: the stream, the options and a good allocation.
    run.kubelet
        .wait_for_devices(DEADLINE, |d| d.len() == 8)
        .await
        .unwrap();
    let ok = run.kubelet.admit(&u, &[], 2).await.unwrap();
    assert_eq!(ok.preferred.len(), 2);
    let text = run.plugin.metrics.render();
    assert!(
        text.contains("muster_device_plugin_allocation_errors_total{reason=\"unknown_device\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("muster_device_plugin_allocation_errors_total{reason=\"bad_request\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("muster_device_plugin_allocations_total 1"),
        "{text}"
    );
    run.stop().await;
}

fn spec(path: &str, host: &str) -> proto::DeviceSpec {
    proto::DeviceSpec {
        container_path: path.into(),
        host_path: host.into(),
        permissions: "rw".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_response_is_exact() {
    let mut setup = Setup::new("dgx1-v100");
    setup.cdi = true;
    let run = start(setup).await;
    let u = run.uuids();
    let mut client = run.kubelet.plugin().await.unwrap();
    let ids = vec![u[6].clone(), u[2].clone()];
    let started = std::time::Instant::now();
    let response = run.kubelet.allocate(&mut client, &ids).await.unwrap();
    eprintln!("Allocate round trip: {:?}", started.elapsed());
    let root = "/run/nvidia/driver";
    assert_eq!(
        response,
        proto::ContainerAllocateResponse {
            envs: HashMap::from([(
                "NVIDIA_VISIBLE_DEVICES".to_string(),
                format!("{},{}", u[6], u[2])
            )]),
            mounts: vec![],
            devices: vec![
                spec("/dev/nvidiactl", &format!("{root}/dev/nvidiactl")),
                spec("/dev/nvidia-uvm", &format!("{root}/dev/nvidia-uvm")),
                spec(
                    "/dev/nvidia-uvm-tools",
                    &format!("{root}/dev/nvidia-uvm-tools")
                ),
                spec("/dev/nvidia-modeset", &format!("{root}/dev/nvidia-modeset")),
                spec("/dev/nvidia6", &format!("{root}/dev/nvidia6")),
                spec("/dev/nvidia2", &format!("{root}/dev/nvidia2")),
            ],
            annotations: HashMap::new(),
            cdi_devices: vec![
                proto::CdiDevice {
                    name: format!("nvidia.com/gpu={}", u[6])
                },
                proto::CdiDevice {
                    name: format!("nvidia.com/gpu={}", u[2])
                },
            ],
        }
    );
    // Several containers in one request: one response each, in order.
    let both = client
        .allocate(proto::AllocateRequest {
            container_requests: vec![
                proto::ContainerAllocateRequest {
                    devices_ids: vec![u[0].clone()],
                },
                proto::ContainerAllocateRequest {
                    devices_ids: vec![u[1].clone()],
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let envs: Vec<&str> = both
        .container_responses
        .iter()
        .map(|c| c.envs["NVIDIA_VISIBLE_DEVICES"].as_str())
        .collect();
    assert_eq!(envs, vec![u[0].as_str(), u[1].as_str()]);
    assert_eq!(NODE, run.config.node_name);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_of_pods_allocated_before_a_plugin_restart_stay_held() {
    // A pod already marked allocated (by an earlier plugin process) holds its GPUs.
    let pods = PodStore::new();
    let mut setup = Setup::new("dgx1-v100");
    setup.pods = Some(pods.clone());
    let run = start(setup).await;
    let u = run.uuids();
    let mut running = annotated_pod("running", &u[4..8], 1);
    running.allocated = true;
    pods.apply(running.clone());
    let mut client = run.kubelet.plugin().await.unwrap();
    let err = run
        .kubelet
        .allocate(&mut client, &[u[5].clone()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("team/running"), "{}", err.message());
    // It finishes: its GPUs are free.
    running.terminated = true;
    pods.apply(running);
    run.kubelet
        .allocate(&mut client, &[u[5].clone()])
        .await
        .unwrap();
    run.stop().await;
}
