// SPDX-License-Identifier: MPL-2.0
//! Build script: plugin metadata, the libtorch link + rpath, and the embedded default bundle.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

/// Bundle compiled into the plugin: used when the `model` property is empty.
const DEFAULT_BUNDLE_DIR: &str = "../model/bundles/default";

fn main() {
    gst_plugin_version_helper::info();
    link_libtorch();
    embed_default_bundle();
}

/// libtorch is loaded at run time from the venv's torch wheel: record where it is (rpath) and
/// keep `libtorch.so` in DT_NEEDED even though no symbol of it is used directly; without it the
/// linker drops it and with it `libtorch_cuda.so`, and CUDA silently disappears.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-link-search=native={lib}");
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}

/// Writes `$OUT_DIR/embedded_bundle.rs`: a table of (file name, bytes) for every file of the
/// default bundle directory, each included with `include_bytes!`.
fn embed_default_bundle() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let bundle_dir = manifest_dir.join(DEFAULT_BUNDLE_DIR);
    println!("cargo:rerun-if-changed={}", bundle_dir.display());
    let files = bundle_files(&bundle_dir);
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let mut table = String::from("pub static EMBEDDED_FILES: &[(&str, &[u8])] = &[\n");
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name");
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            file.display().to_string()
        ));
    }
    table.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("embedded_bundle.rs");
    fs::write(&out, table).expect("write embedded_bundle.rs");
}

/// manifest.json plus the TorchScript files of the bundle, sorted; empty when the directory
/// does not exist (the element then reports that no default is embedded).
fn bundle_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        println!(
            "cargo:warning=no default bundle at {}: the plugin embeds none",
            dir.display()
        );
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == "manifest.json" || name.ends_with(".pt")
        })
        .map(|p| p.canonicalize().unwrap_or(p))
        .collect();
    files.sort();
    files
}
