#!/usr/bin/env bash
# Compile-check every CUDA kernel with nvrtc 13 — no GPU, no driver, no CUDA toolkit needed.
#
#   bash kernels/ci-nvrtc.sh            # run it
#   source kernels/ci-nvrtc.sh          # also leaves LD_LIBRARY_PATH exported in your shell
#
# Installs NVIDIA's nvrtc wheel from PyPI (quietly), puts its lib/ on LD_LIBRARY_PATH and runs
# the ignored nvrtc tests of the kernels crate. Exits non-zero if anything fails, including
# "nvrtc could not be loaded" and "the filter matched no test".
# Set NVRTC_LIB_DIR to a directory holding libnvrtc.so.13 to skip the pip step.

# Prints the directory holding libnvrtc.so.13, installing the wheel first if needed.
_ci_nvrtc_libdir() (
    set -euo pipefail
    libdir="${NVRTC_LIB_DIR:-}"
    if [[ -z "$libdir" ]]; then
        py="${PYTHON:-python3}"
        pkgs=("nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-runtime==13.0.*")
        "$py" -m pip install -q --disable-pip-version-check "${pkgs[@]}" >&2 ||
            "$py" -m pip install -q --disable-pip-version-check --break-system-packages "${pkgs[@]}" >&2
        # The cu13 wheels put their libraries under nvidia/cu13/lib.
        libdir="$("$py" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
    fi
    if [[ ! -e "$libdir/libnvrtc.so.13" ]]; then
        echo "ci-nvrtc: libnvrtc.so.13 not found in $libdir" >&2
        exit 1
    fi
    echo "$libdir"
)

# Runs the nvrtc compile tests; fails if none ran.
_ci_nvrtc_test() (
    set -euo pipefail
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    cd "$root"
    # --workspace (not -p kernels): the same feature set as `cargo test --workspace`, so CI
    # reuses that build instead of recompiling the dependencies.
    cargo test --workspace --test nvrtc -- --ignored every_kernel_compiles 2>&1 | tee "$log"
    # Guard against a renamed test silently matching nothing ("0 passed").
    if ! grep -Eq '^test result: ok\. [1-9][0-9]* passed' "$log"; then
        echo "ci-nvrtc: no nvrtc test ran" >&2
        exit 1
    fi
)

_ci_nvrtc_dir="$(_ci_nvrtc_libdir)" && {
    export LD_LIBRARY_PATH="$_ci_nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "ci-nvrtc: using $_ci_nvrtc_dir/libnvrtc.so.13"
    _ci_nvrtc_test
}
_ci_nvrtc_rc=$?
unset _ci_nvrtc_dir
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    exit "$_ci_nvrtc_rc"
else
    return "$_ci_nvrtc_rc"
fi
