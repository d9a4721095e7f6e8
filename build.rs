//! Stamps the build with the git commit it came from, so every checkpoint and `--version`
//! says which code produced it (`resnet_cifar::BUILD_INFO`). Outside a git checkout (a
//! source tarball) the commit reads "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    println!(
        "cargo:rustc-env=RESNET_BUILD_INFO=resnet-cifar {} (commit {commit}, {profile}, {target})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
    // Rebuild when HEAD moves (a checkout or a commit), not on every file change.
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            if let Some(p) = git(&["rev-parse", "--git-path", &r]) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
