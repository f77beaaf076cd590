//! The `spec.schedulerName`s whose pods Muster schedules.
//!
//! `muster` by default. A cluster may add names other tools hard-code: KubeRay's
//! scheduler-plugins integration, for example, always gives its pods
//! `scheduler-plugins-scheduler`. kube-scheduler then runs one profile per name, and every
//! component that asks "is this pod Muster's?" asks this set.

use crate::names::SCHEDULER_NAME;

/// A non-empty set of scheduler names, each a valid `spec.schedulerName`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerNames(Vec<String>);

/// A name that cannot be a `spec.schedulerName`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "scheduler name {name:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters, starting and ending alphanumeric)"
)]
pub struct InvalidSchedulerName {
    pub name: String,
}

impl Default for SchedulerNames {
    fn default() -> Self {
        SchedulerNames(vec![SCHEDULER_NAME.to_string()])
    }
}

impl SchedulerNames {
    /// The given names, deduplicated in order; the default (`muster`) when `names` is empty.
    pub fn new<I, S>(names: I) -> Result<SchedulerNames, InvalidSchedulerName>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let name = name.into();
            if !is_dns1123_subdomain(&name) {
                return Err(InvalidSchedulerName { name });
            }
            if !out.contains(&name) {
                out.push(name);
            }
        }
        if out.is_empty() {
            return Ok(SchedulerNames::default());
        }
        Ok(SchedulerNames(out))
    }

    /// Whether a pod with this `spec.schedulerName` is Muster's.
    pub fn contains(&self, scheduler_name: Option<&str>) -> bool {
        scheduler_name.is_some_and(|n| self.0.iter().any(|ours| ours == n))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl std::fmt::Display for SchedulerNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// What the API server requires of `spec.schedulerName` (IsDNS1123Subdomain).
fn is_dns1123_subdomain(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && s.split('.')
            .all(|label| label.starts_with(alnum) && label.ends_with(alnum) && label.len() <= 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_muster_alone() {
        let names = SchedulerNames::default();
        assert!(names.contains(Some("muster")));
        assert!(!names.contains(Some("default-scheduler")));
        assert!(!names.contains(None));
        assert_eq!(SchedulerNames::new(Vec::<String>::new()), Ok(names));
    }

    #[test]
    fn added_names_are_ours_and_deduplicated() {
        let names =
            SchedulerNames::new(["muster", "scheduler-plugins-scheduler", "muster"]).unwrap();
        assert!(names.contains(Some("scheduler-plugins-scheduler")));
        assert!(names.contains(Some("muster")));
        assert_eq!(names.to_string(), "muster, scheduler-plugins-scheduler");
    }

    #[test]
    fn a_name_the_api_server_would_refuse_is_an_error() {
        for bad in ["", "Muster", "a_b", "-x", "x-", "a..b", &"a".repeat(254)] {
            let err = SchedulerNames::new([bad]).unwrap_err();
            assert_eq!(err.name, bad);
            assert!(err.to_string().contains("DNS-1123"), "{err}");
        }
        assert!(SchedulerNames::new(["my.scheduler-2"]).is_ok());
    }
}
