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
    // `1e3` is an exponent; `16Ei` is a suffix.
    let exp = suffix
        .strip_prefix(['e', 'E'])
        .and_then(|e| e.parse::<i32>().ok())
        .unwrap_or(0);
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
    // Beyond u64 is not a quantity anything can hold (and `as` would saturate silently).
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then(|| v.ceil() as u64)
}

fn get(map: Option<&BTreeMap<String, Quantity>>, key: &str, scale: f64) -> u64 {
    map.and_then(|m| m.get(key))
        .and_then(|q| parse_quantity(&q.0, scale))
        .unwrap_or(0)
}

fn container_requests(c: &Container) -> Result<Resources, String> {
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
    let gpus = pick(GPU_RESOURCE, 1.0);
    Ok(Resources {
        cpu_millis: pick("cpu", 1000.0),
        memory_bytes: pick("memory", 1.0),
        pods: 0,
        gpus: u32::try_from(gpus).map_err(|_| {
            format!(
                "container {} requests {gpus} {GPU_RESOURCE}, more than any node can have",
                c.name
            )
        })?,
    })
}

/// A pod's effective requests: sum of containers plus overhead, at least the largest init
/// container. Sums that do not fit are an error (the pod cannot be placed), never a wrap.
pub fn pod_requests(pod: &Pod) -> Result<Resources, String> {
    let mut total = Resources {
        pods: 1,
        ..Resources::default()
    };
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(total);
    };
    let too_big =
        |what: &str| format!("the pod's {what} requests add up to more than can be counted");
    let add = |total: &mut Resources, r: &Resources| -> Result<(), String> {
        total.cpu_millis = total
            .cpu_millis
            .checked_add(r.cpu_millis)
            .ok_or_else(|| too_big("cpu"))?;
        total.memory_bytes = total
            .memory_bytes
            .checked_add(r.memory_bytes)
            .ok_or_else(|| too_big("memory"))?;
        total.gpus = total
            .gpus
            .checked_add(r.gpus)
            .ok_or_else(|| too_big(GPU_RESOURCE))?;
        Ok(())
    };
    for c in &spec.containers {
        add(&mut total, &container_requests(c)?)?;
    }
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c)?;
        total.cpu_millis = total.cpu_millis.max(r.cpu_millis);
        total.memory_bytes = total.memory_bytes.max(r.memory_bytes);
        total.gpus = total.gpus.max(r.gpus);
    }
    if let Some(overhead) = spec.overhead.as_ref() {
        let o = Resources {
            cpu_millis: get(Some(overhead), "cpu", 1000.0),
            memory_bytes: get(Some(overhead), "memory", 1.0),
            pods: 0,
            gpus: 0,
        };
        add(&mut total, &o)?;
    }
    Ok(total)
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
        assert_eq!(parse_quantity("1Ei", 1.0), Some(1 << 60));
        assert_eq!(parse_quantity("2e2", 1000.0), Some(200_000));
        assert_eq!(parse_quantity("16Ei", 1.0), None, "beyond u64");
    }

    fn pod_with(containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": containers}
        }))
        .unwrap()
    }

    #[test]
    fn requests_add_up_or_fail_without_wrapping() {
        let two = pod_with(serde_json::json!([
            {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "2"}, "requests": {"cpu": "500m"}}},
            {"name": "b", "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "1", "memory": "1Gi"}}}
        ]));
        let r = pod_requests(&two).unwrap();
        assert_eq!(
            (r.gpus, r.cpu_millis, r.memory_bytes, r.pods),
            (3, 1500, 1 << 30, 1)
        );

        // 2^31 + 2^31 GPUs: each fits a u32, the sum does not.
        let huge = pod_with(serde_json::json!([
            {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "2147483648"}}},
            {"name": "b", "resources": {"limits": {"nvidia.com/gpu": "2147483648"}}}
        ]));
        let err = pod_requests(&huge).unwrap_err();
        assert!(err.contains("nvidia.com/gpu"), "{err}");

        let one_too_many = pod_with(serde_json::json!([
            {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "99999999999"}}}
        ]));
        let err = pod_requests(&one_too_many).unwrap_err();
        assert!(err.contains("container a"), "{err}");

        let memory = pod_with(serde_json::json!([
            {"name": "a", "resources": {"requests": {"memory": "8Ei"}}},
            {"name": "b", "resources": {"requests": {"memory": "8Ei"}}}
        ]));
        assert!(pod_requests(&memory).unwrap_err().contains("memory"));
    }
}
