//! The API calls a binary makes, declared next to its code: the chart's RBAC is checked against
//! these lists (`tests/chart`), so a right nothing uses, or a call without a right, fails a test.

/// Where a grant applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Every namespace (a ClusterRole and ClusterRoleBinding).
    Cluster,
    /// The namespace Muster is installed in (a Role), limited to the named objects when any
    /// are given. Names are patterns: `{release}` stands for the chart's scheduler name.
    ReleaseNamespace(&'static [&'static str]),
}

/// One kind of object a binary reads or writes, the verbs it uses on it, and why.
#[derive(Clone, Copy, Debug)]
pub struct ApiAccess {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource, with `/subresource` where one is used.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// What the code does with it (the chart README's justification).
    pub why: &'static str,
}

impl ApiAccess {
    /// (group, resource, verb) triples, for comparing with RBAC rules.
    pub fn triples(&self) -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
        let (group, resource) = (self.group, self.resource);
        self.verbs.iter().map(move |v| (group, resource, *v))
    }
}
