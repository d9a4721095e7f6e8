#!/usr/bin/env bash
# Runs a command with the stand-in CUDA driver (kernels/standin) in place of libcuda: the GPU
# path of the project — cudarc, streams, allocation, module loading, launches, CUDA graphs —
# executes for real, and the kernels run on the CPU under the emulator (kernels/emu), with every
# memory access checked. No GPU needed; nvrtc is (NVIDIA's pip wheel, as CI installs it).
#
#   scripts/emulated-gpu.sh target/release/train --device cuda --depth 20 --epochs 1 \
#       --limit-train 256 --batch-size 64 --data-dir D
#   scripts/emulated-gpu.sh cargo test --workspace -- --ignored
#
# Builds the stand-in first (cargo build --profile test: the build `cargo test` reuses).
# Settings (see kernels/standin/src/config.rs): CUDA_STANDIN_MEMORY=512MiB (device size),
# CUDA_STANDIN_FAIL=launch:N|alloc:N|copy:N (fault injection), CUDA_STANDIN_STATS=1,
# CUDA_LAUNCH_BLOCKING=1, CUDA_STANDIN_EAGER_COPIES=1 (device-to-host copies land when queued,
# not at the next synchronisation). NVRTC_LIB_DIR may name the directory of libnvrtc.so.13.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -eq 0 ]]; then
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
fi

(cd "$root" && cargo build --quiet --profile test -p cuda-standin) >&2
export RESNET_CUDA_STANDIN="$root/target/debug/libcuda_standin.so"

# nvrtc: NVRTC_LIB_DIR, else NVIDIA's wheel if it is installed, else whatever the loader finds.
libdir="${NVRTC_LIB_DIR:-}"
if [[ -z "$libdir" ]]; then
    libdir="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)"
fi
if [[ -n "$libdir" && -e "$libdir/libnvrtc.so.13" ]]; then
    export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# The prebuilt kernels file (target/resnet-kernels.bin), which the tests of a start without
# nvrtc load: compiled once per change of the kernels (~40 s), else from the kernel cache.
if ! log=$(cd "$root" && cargo run --quiet --profile test -p xtask -- cubins 2>&1); then
    printf '%s\nemulated-gpu.sh: could not build the prebuilt kernels file (above); the tests that need it will fail\n' "$log" >&2
fi
exec "$@"
