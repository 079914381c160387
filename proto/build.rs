//! Compiles `proto/palisade/v1/*.proto` with protox (pure Rust), so no system
//! `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let files = [
        "palisade/v1/telemetry.proto",
        "palisade/v1/uplink.proto",
        "palisade/v1/enroll.proto",
        "palisade/v1/local.proto",
        "palisade/v1/state.proto",
        "palisade/v1/command.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed=proto/{file}");
    }
    let descriptors = protox::compile(files, [&root])?;
    prost_build::Config::new()
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
