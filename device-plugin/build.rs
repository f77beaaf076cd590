//! Generates the kubelet device-plugin API (v1beta1) with a vendored `protoc`, so building needs
//! no system protobuf compiler. Both sides are generated: the plugin serves `DevicePlugin` and
//! calls `Registration`; the tests' fake kubelet does the opposite.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let proto = "proto/deviceplugin/v1beta1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[proto], &["proto"])?;
    Ok(())
}
