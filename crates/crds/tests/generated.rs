//! The CRD YAML in the chart is exactly what the types generate (run `muster-crdgen` to update).

#[test]
fn chart_crds_are_up_to_date() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/muster/crds");
    for (name, yaml) in muster_crds::crd_yaml().unwrap() {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "{name} is stale: run `cargo run -p muster-crds --bin muster-crdgen`"
        );
    }
}

#[test]
fn podgroup_schema_rejects_min_member_below_one() {
    let yaml = &muster_crds::crd_yaml().unwrap()[0].1;
    assert!(yaml.contains("minimum: 1"), "{yaml}");
    assert!(yaml.contains("shortNames"), "{yaml}");
}
