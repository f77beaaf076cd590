//! Bad input: no driver, a library lacking symbols, a malformed or missing fixture.

mod common;

use common::{FakeNvml, partial_lib};
use muster_gpu_inventory::{Discovery, Inventory, InventoryError, WatchConfig};
use nvml_wrapper::error::NvmlError;
use std::path::PathBuf;

#[test]
fn a_missing_library_means_no_driver() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let missing = dir.join("no-such-dir/libnvidia-ml.so.1");
    match Inventory::open(Some(&missing)).unwrap() {
        Discovery::NoDriver { reason } => assert!(reason.contains("no-such-dir"), "{reason}"),
        Discovery::Ready(_) => panic!("a missing library must not yield GPUs"),
    }
}

#[test]
fn a_library_without_a_fixture_is_a_driver_not_loaded() {
    let fake = FakeNvml::new();
    let got = fake.open(&[]).unwrap();
    assert!(matches!(got, Discovery::NoDriver { .. }), "{got:?}");
}

#[test]
fn a_malformed_fixture_fails_init_with_a_typed_error() {
    let fake = FakeNvml::new();
    let path = fake.file("bad.json", "{\"name\": \"half a fixture\",");
    let err = fake
        .open(&[("MUSTER_FAKE_NVML_FIXTURE", path.to_str().unwrap())])
        .unwrap_err();
    assert!(
        matches!(
            err,
            InventoryError::Nvml {
                call: "nvmlInit_v2",
                gpu: None,
                source: NvmlError::Unknown
            }
        ),
        "{err:?}"
    );
    let err = fake
        .open(&[("MUSTER_FAKE_NVML_FIXTURE", "dgx-9000")])
        .unwrap_err();
    assert!(err.to_string().contains("nvmlInit_v2"), "{err}");
    // The same library still initialises once given a good fixture.
    assert_eq!(fake.inventory("dgx-a100", &[]).gpu_count(), 8);
}

#[test]
fn a_fixture_with_an_invalid_topology_fails_init() {
    let fake = FakeNvml::new();
    let spec = muster_api::machines::builtin("l4-pcie-2s").unwrap();
    let mut json = serde_json::to_value(spec).unwrap();
    json["topology"][0][1] = "QPI".into();
    let path = fake.file("topo.json", &json.to_string());
    assert!(
        fake.open(&[("MUSTER_FAKE_NVML_FIXTURE", path.to_str().unwrap())])
            .is_err()
    );
}

#[test]
fn a_missing_symbol_is_a_clean_error_naming_the_call() {
    let lib = partial_lib();
    let err = Inventory::open(Some(&lib)).unwrap_err();
    assert!(err.is_missing_symbol(), "{err:?}");
    assert!(
        matches!(
            err,
            InventoryError::Nvml {
                call: "nvmlDeviceGetUUID",
                gpu: Some(0),
                ..
            }
        ),
        "{err:?}"
    );
    // nvml-wrapper itself: the library loads, present symbols work, absent ones fail alone.
    let nvml = nvml_wrapper::Nvml::builder()
        .lib_path(lib.as_os_str())
        .init()
        .unwrap();
    assert_eq!(nvml.device_count().unwrap(), 1);
    assert_eq!(
        nvml.device_by_index(0).unwrap().name().unwrap(),
        "Partial GPU"
    );
    assert!(matches!(
        nvml.create_event_set(),
        Err(NvmlError::FailedToLoadSymbol(_))
    ));
}

#[test]
fn bad_handles_and_null_pointers_are_rejected_not_crashed() {
    let fake = FakeNvml::new();
    let inv = fake.inventory("dgx-a100", &[]);
    let lib = inv.nvml().lib();
    let bogus: nvml_wrapper_sys::bindings::nvmlDevice_t = std::ptr::without_provenance_mut(0x1234);
    // SAFETY: only passed back to the library that issued it.
    let gpu0 = unsafe { inv.nvml().device_by_index(0).unwrap().handle() };
    let mut count = 0u32;
    // SAFETY: calling the fake's exports with deliberately bad arguments it must reject.
    unsafe {
        let get_index = lib.nvmlDeviceGetIndex.as_ref().unwrap();
        assert_eq!(
            get_index(bogus, &mut count),
            2,
            "bad handle -> INVALID_ARGUMENT"
        );
        assert_eq!(
            get_index(gpu0, std::ptr::null_mut()),
            2,
            "null out -> INVALID_ARGUMENT"
        );
        let get_count = lib.nvmlDeviceGetCount_v2.as_ref().unwrap();
        assert_eq!(get_count(std::ptr::null_mut()), 2);
        let mut name = [0 as std::ffi::c_char; 4];
        let get_name = lib.nvmlDeviceGetName.as_ref().unwrap();
        assert_eq!(
            get_name(gpu0, name.as_mut_ptr(), 4),
            7,
            "short buffer -> INSUFFICIENT_SIZE"
        );
    }
    // A watcher on a healthy box starts fine after all that.
    inv.watch_health(WatchConfig::default()).unwrap().0.stop();
}
