//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
//!
//! The object is built with a different compiler (Debian's rustc with a BPF `core`), so this
//! script does not build it; it points `include_bytes!` at it and says what to run when it is
//! missing.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=OOMTRACE_EBPF_OBJECT");
    let path = match std::env::var_os("OOMTRACE_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest =
                PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            manifest.join("../target/ebpf/bpfel-unknown-none/release/oomtrace")
        }
    };
    if !path.is_file() {
        panic!(
            "the eBPF object {} is missing: run `cargo xtask build-ebpf` (or `cargo xtask build`), \
             or set OOMTRACE_EBPF_OBJECT to a built object",
            path.display()
        );
    }
    println!("cargo:rerun-if-changed={}", path.display());
    println!(
        "cargo:rustc-env=OOMTRACE_EBPF_OBJECT_PATH={}",
        path.display()
    );
}
