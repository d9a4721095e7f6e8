//! Compiles launch_emu.cpp (which #includes every kernels/cuda/*.cu unmodified) with the host
//! C++ compiler and links it into this crate.

fn main() {
    let cuda_dir = std::path::Path::new("../cuda");
    println!("cargo:rerun-if-changed=cuda_emu.h");
    println!("cargo:rerun-if-changed=launch_emu.cpp");
    println!("cargo:rerun-if-changed=../cuda");
    for entry in std::fs::read_dir(cuda_dir).expect("kernels/cuda") {
        let path = entry.expect("kernels/cuda entry").path();
        if path.extension().is_some_and(|e| e == "cu" || e == "cuh") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    cc::Build::new()
        .cpp(true)
        .file("launch_emu.cpp")
        .std("c++17")
        .opt_level(2)
        .flag("-pthread")
        // Only explicit fmaf() fuses, as in the sources' intent (see cuda_emu.h).
        .flag("-ffp-contract=off")
        // CUDA-isms that are fine: `#pragma unroll`, unsigned threadIdx vs int comparisons.
        .flag_if_supported("-Wno-unknown-pragmas")
        .flag_if_supported("-Wno-sign-compare")
        .compile("kernels_emu");
    println!("cargo:rustc-link-lib=pthread");
}
