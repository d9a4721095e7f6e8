//! The stand-in answers to the name cudarc asks the dynamic loader for: with SONAME
//! `libcuda.so`, a copy already loaded by the project's probe (kernels/src/probe.rs, only when
//! `RESNET_CUDA_STANDIN` names this file) is the one `dlopen("libcuda.so")` returns.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so");
}
