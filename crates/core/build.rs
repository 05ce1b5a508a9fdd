//! Compiles the two C shims:
//! - `csrc/jpeg.c` against the system libjpeg(-turbo), the same library OpenCV's JPEG codec uses;
//! - `csrc/c10d_shim.cpp` against libtorch's own headers (`$LIBTORCH/include`, as torch-sys builds its
//!   wrapper) and Debian's gloo headers, which `ProcessGroupGloo.hpp` includes but the wheel lacks.
//!   It links the c10d code inside `libtorch_cpu.so`; see the file's header for why the 2022 gloo
//!   headers are ABI-safe with the gloo built into libtorch 2.13.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/jpeg.c");
    cc::Build::new().file("csrc/jpeg.c").warnings(true).extra_warnings(true).opt_level(2).compile("tlcv_jpeg");
    println!("cargo:rustc-link-lib=jpeg");
    c10d_shim();
}

fn c10d_shim() {
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!("cargo::error=LIBTORCH is not set: run `cargo xtask setup` (it installs libtorch into .tlcv)");
        return;
    };
    let gloo = PathBuf::from("/usr/include/gloo/context.h");
    if !gloo.is_file() {
        println!(
            "cargo::error=gloo's headers ({}) are missing: run `cargo xtask setup` (it installs libgloo-dev)",
            gloo.display()
        );
        return;
    }
    let include = libtorch.join("include");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("csrc/c10d_shim.cpp")
        .define("USE_C10D_GLOO", None)
        // The wheel is built with the C++11 string ABI (its symbols name std::__cxx11::basic_string).
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // -isystem: libtorch's headers are not ours to warn about.
        .flag("-isystem")
        .flag(include.to_string_lossy().as_ref())
        .flag("-isystem")
        .flag(include.join("torch/csrc/api/include").to_string_lossy().as_ref())
        .warnings(true)
        .opt_level(2)
        .compile("tlcv_c10d");
    check_no_gloo_code(&PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("libtlcv_c10d.a"));
    // torch-sys links libtorch too; naming the two libraries the c10d code lives in keeps the link
    // independent of its choice (the wheel's libtorch.so alone does not carry c10d).
    println!("cargo:rustc-link-search=native={}", libtorch.join("lib").display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// The ABI argument of the shim's header, checked on every build: the object defines and references no
/// gloo function, data, vtable or typeinfo, and nothing of `GlooStore`, so the Debian gloo headers are
/// used for declarations only. (`std::vector<std::shared_ptr<gloo::transport::Device>>` members are
/// std code on pointers, independent of gloo's layouts.)
fn check_no_gloo_code(archive: &std::path::Path) {
    let out = match std::process::Command::new("nm").arg("-C").arg(archive).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            println!("cargo::warning=nm could not list {}; the gloo ABI check was skipped", archive.display());
            return;
        }
    };
    let bad: Vec<&str> = out
        .lines()
        .filter_map(|l| l.get(19..))
        .filter(|name| name.starts_with("gloo::") || name.contains(" for gloo::") || name.contains("GlooStore"))
        .collect();
    if !bad.is_empty() {
        println!(
            "cargo::error=csrc/c10d_shim.cpp instantiates gloo code, whose ABI the Debian headers do not guarantee: {}",
            bad.join("; ")
        );
    }
}
