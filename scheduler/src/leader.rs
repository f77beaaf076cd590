//! Leader election on a `coordination.k8s.io` Lease, so two replicas never both decide.
//!
//! Two modes. `Hold`: the extender takes and renews a Lease of its own (a standalone
//! deployment). `Follow`: the extender leads exactly while the kube-scheduler beside it in the
//! same pod holds kube-scheduler's Lease (its holder identity is `<hostname>_<uuid>`), so the
//! extender that decides is always the one the leading kube-scheduler calls.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseMode {
    Hold,
    /// Lead while the Lease holder's identity starts with `identity` (`<hostname>_`).
    Follow,
}

pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub mode: LeaseMode,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// Keeps trying to hold the lease; `leader` is true exactly while we hold it.
pub async fn run(client: Client, cfg: LeaseConfig, leader: Arc<AtomicBool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    loop {
        let round = match cfg.mode {
            LeaseMode::Hold => try_acquire(&api, &cfg).await,
            LeaseMode::Follow => holds_followed(&api, &cfg).await,
        };
        let held = match round {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, lease = %cfg.name, "lease round failed");
                false
            }
        };
        if held != leader.swap(held, Ordering::AcqRel) {
            tracing::info!(identity = %cfg.identity, leader = held, "leadership changed");
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Whether the followed Lease is held, unexpired, by an identity starting with ours.
async fn holds_followed(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let Some(lease) = api.get_opt(&cfg.name).await? else {
        return Ok(false);
    };
    let spec = lease.spec.unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let fresh = spec.renew_time.as_ref().is_some_and(|t| {
        t.0.as_second() + i64::from(spec.lease_duration_seconds.unwrap_or(15)) >= now
    });
    Ok(fresh
        && spec
            .holder_identity
            .is_some_and(|h| h.starts_with(&cfg.identity)))
}

async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(15);
    let ours = LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(secs),
        renew_time: Some(MicroTime(now)),
        ..Default::default()
    };
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                acquire_time: Some(MicroTime(now)),
                ..ours
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        let dur = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
        t.0.as_second() + dur < now.as_second()
    });
    if holder != cfg.identity && !expired && !holder.is_empty() {
        return Ok(false);
    }
    let acquire_time = if holder == cfg.identity {
        spec.acquire_time
    } else {
        Some(MicroTime(now))
    };
    lease.spec = Some(LeaseSpec {
        acquire_time,
        lease_transitions: Some(
            spec.lease_transitions.unwrap_or(0) + i32::from(holder != cfg.identity),
        ),
        ..ours
    });
    // resourceVersion in the object makes this a compare-and-swap: a racing replica gets 409.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
