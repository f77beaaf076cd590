//! Reading Kubernetes quantities and pod requests into the core's units.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use muster_api::names::GPU_RESOURCE;
use muster_core::Resources;
use std::collections::BTreeMap;

/// Parses a quantity scaled by `scale` (1000 for millicores, 1 for bytes and counts), rounding
/// up. `None` for malformed input.
pub fn parse_quantity(q: &str, scale: f64) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (num, exp) = match suffix.strip_prefix(['e', 'E']) {
        Some(e) if !e.is_empty() => (num, e.parse::<i32>().ok()?),
        _ => (num, 0),
    };
    let value: f64 = num.parse().ok()?;
    let mult = match suffix {
        _ if exp != 0 => 10f64.powi(exp),
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let v = value * mult * scale;
    (v.is_finite() && v >= 0.0).then(|| v.ceil() as u64)
}

fn get(map: Option<&BTreeMap<String, Quantity>>, key: &str, scale: f64) -> u64 {
    map.and_then(|m| m.get(key))
        .and_then(|q| parse_quantity(&q.0, scale))
        .unwrap_or(0)
}

fn container_requests(c: &Container) -> Resources {
    let r = c.resources.as_ref();
    let requests = r.and_then(|r| r.requests.as_ref());
    let limits = r.and_then(|r| r.limits.as_ref());
    // Requests default to limits (the API server does the same for extended resources).
    let pick = |key: &str, scale: f64| {
        let req = get(requests, key, scale);
        if req > 0 {
            req
        } else {
            get(limits, key, scale)
        }
    };
    Resources {
        cpu_millis: pick("cpu", 1000.0),
        memory_bytes: pick("memory", 1.0),
        pods: 0,
        gpus: u32::try_from(pick(GPU_RESOURCE, 1.0)).unwrap_or(u32::MAX),
    }
}

/// A pod's effective requests: sum of containers, at least the largest init container.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Resources::default()
        };
    };
    let mut total = Resources {
        pods: 1,
        ..Resources::default()
    };
    for c in &spec.containers {
        let r = container_requests(c);
        total.cpu_millis += r.cpu_millis;
        total.memory_bytes += r.memory_bytes;
        total.gpus += r.gpus;
    }
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        total.cpu_millis = total.cpu_millis.max(r.cpu_millis);
        total.memory_bytes = total.memory_bytes.max(r.memory_bytes);
        total.gpus = total.gpus.max(r.gpus);
    }
    if let Some(overhead) = spec.overhead.as_ref() {
        total.cpu_millis += get(Some(overhead), "cpu", 1000.0);
        total.memory_bytes += get(Some(overhead), "memory", 1.0);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m", 1000.0), Some(500));
        assert_eq!(parse_quantity("2", 1000.0), Some(2000));
        assert_eq!(parse_quantity("1.5", 1000.0), Some(1500));
        assert_eq!(parse_quantity("16Gi", 1.0), Some(16 << 30));
        assert_eq!(parse_quantity("1G", 1.0), Some(1_000_000_000));
        assert_eq!(parse_quantity("1e3", 1.0), Some(1000));
        assert_eq!(parse_quantity("8", 1.0), Some(8));
        assert_eq!(parse_quantity("lots", 1.0), None);
        assert_eq!(parse_quantity("-1", 1.0), None);
        assert_eq!(parse_quantity("3Zi", 1.0), None);
    }
}
