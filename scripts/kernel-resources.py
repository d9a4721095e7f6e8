#!/usr/bin/env python3
"""Registers, spills and shared memory of every CUDA kernel, for a GPU we don't have.

Compiles each kernels/cuda/*.cu to PTX with nvrtc (the options kernels/src/nvrtc.rs uses, the
`#include "x.cuh"` lines inlined as kernels/build.rs does), then assembles it with ptxas -v for
a real architecture and prints one line per kernel. No GPU, no driver, no CUDA toolkit: the
nvrtc and nvcc wheels from PyPI are enough.

    python3 scripts/kernel-resources.py [--arch sm_90] [--max-spill-bytes 0] [--sass] [FILE.cu ...]

--sass also disassembles the cubin (cuobjdump and nvdisasm: pip wheels nvidia-cuda-cuobjdump and
nvidia-cuda-nvdisasm, any 13.x; or set CUOBJDUMP / NVDISASM_PATH) and describes each kernel's
main loop, the backward branch whose body holds the most math instructions: its length in
instructions and its mix (HMMA / FFMA math, LDG / LDS loads, BRA). For the conv kernels that is
one K step, so "instructions per mma" is a static measure of how much of the issue bandwidth
the gathers take, readable without a GPU.

Exits 1 if a kernel spills more than --max-spill-bytes (loads + stores), 2 on a setup error.
Why it matters: a spill turns register traffic into local-memory traffic in the inner loop, a
regression we can otherwise only see as time on a GPU.
"""
import argparse
import collections
import ctypes
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_DIR = os.path.join(ROOT, "kernels", "cuda")
BASE_OPTIONS = ["--std=c++17", "--generate-line-info"]  # kernels/src/nvrtc.rs
INCLUDE = re.compile(r'^\s*#include "([^"]+\.cuh)"\s*$')


def inline(path, depth=0):
    if depth > 8:
        sys.exit(f"{path}: headers nested too deep")
    out = []
    for line in open(path):
        m = INCLUDE.match(line)
        out.append(inline(os.path.join(CUDA_DIR, m.group(1)), depth + 1) if m else line)
    return "".join(out)


def nvidia_dir():
    try:
        import nvidia  # the namespace package of NVIDIA's wheels
    except ImportError:
        return None
    return os.path.join(list(nvidia.__path__)[0], "cu13")


def tools():
    base = nvidia_dir()
    lib = os.environ.get("NVRTC_LIB_DIR") or (base and os.path.join(base, "lib"))
    ptxas = os.environ.get("PTXAS") or (base and os.path.join(base, "bin", "ptxas"))
    if not lib or not os.path.exists(os.path.join(lib, "libnvrtc.so.13")):
        sys.stderr.write('libnvrtc.so.13 not found: pip install "nvidia-cuda-nvrtc==13.0.*" '
                         "(or set NVRTC_LIB_DIR)\n")
        sys.exit(2)
    if not ptxas or not os.path.exists(ptxas):
        sys.stderr.write('ptxas not found: pip install "nvidia-cuda-nvcc==13.0.*" (or set PTXAS)\n')
        sys.exit(2)
    # nvrtc dlopens its builtins by name; loaded first by path, that name is already resolved
    # (no LD_LIBRARY_PATH needed).
    for builtins in sorted(f for f in os.listdir(lib) if f.startswith("libnvrtc-builtins.so")):
        ctypes.CDLL(os.path.join(lib, builtins), mode=ctypes.RTLD_GLOBAL)
    return ctypes.CDLL(os.path.join(lib, "libnvrtc.so.13")), ptxas


def ptx_of(nvrtc, name, source, arch):
    prog = ctypes.c_void_p()
    check = lambda rc, what: rc == 0 or sys.exit(f"{name}: {what} failed ({rc})")
    check(nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
          "nvrtcCreateProgram")
    opts = BASE_OPTIONS + [f"--gpu-architecture={arch.replace('sm_', 'compute_')}"]
    argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), argv)
    if rc != 0:
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(prog, log)
        sys.exit(f"{name}: nvrtc failed:\n{log.value.decode()}")
    size = ctypes.c_size_t()
    check(nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
    ptx = ctypes.create_string_buffer(size.value)
    check(nvrtc.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode()


def sass_tools():
    """(cuobjdump, env) for disassembly, or exit 2 saying what to install."""
    base = nvidia_dir()
    cuobjdump = os.environ.get("CUOBJDUMP") or (base and os.path.join(base, "bin", "cuobjdump"))
    env = dict(os.environ)
    if "NVDISASM_PATH" not in env and base:
        env["NVDISASM_PATH"] = os.path.join(base, "bin")
    nvdisasm = os.path.join(env.get("NVDISASM_PATH", ""), "nvdisasm")
    if not cuobjdump or not os.path.exists(cuobjdump) or not os.path.exists(nvdisasm):
        sys.stderr.write('--sass needs cuobjdump and nvdisasm: pip install "nvidia-cuda-cuobjdump==13.*" '
                         '"nvidia-cuda-nvdisasm==13.*" (or set CUOBJDUMP / NVDISASM_PATH)\n')
        sys.exit(2)
    return cuobjdump, env


MATH = ("HMMA", "FFMA")


def main_loops(sass):
    """{kernel: (length, Counter of opcodes)} of each kernel's main loop in cuobjdump -sass text."""
    out = {}
    parts = re.split(r"\n\s*Function : (\w+)\n", sass)
    for name, body in zip(parts[1::2], parts[2::2]):
        ins = [(int(a, 16), t.strip()) for a, t in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", body)]
        index = {a: i for i, (a, _) in enumerate(ins)}
        best = None
        for i, (a, text) in enumerate(ins):
            m = re.search(r"BRA\s.*?0x([0-9a-f]+)", text)
            if not m or int(m.group(1), 16) >= a or int(m.group(1), 16) not in index:
                continue
            body_ops = collections.Counter(
                re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for _, t in ins[index[int(m.group(1), 16)]:i + 1])
            key = sum(body_ops[op] for op in MATH)
            if key and (best is None or key > best[0]):
                best = (key, sum(body_ops.values()), body_ops)
        if best:
            out[name] = best[1:]
    return out


def resources(ptxas, ptx, arch, sass=None):
    """{kernel: {registers, spill_stores, spill_loads, smem, stack}} from ptxas -v, plus `loop`
    (main_loops) when `sass` = (cuobjdump, env)."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        cubin = os.path.join(d, "k.cubin")
        open(src, "w").write(ptx)
        res = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", src, "-o", cubin],
                             capture_output=True, text=True)
        loops = {}
        if sass and res.returncode == 0:
            dis = subprocess.run([sass[0], "-sass", cubin], capture_output=True, text=True, env=sass[1])
            if dis.returncode != 0:
                sys.exit(f"cuobjdump failed:\n{dis.stderr}")
            loops = main_loops(dis.stdout)
    if res.returncode != 0:
        sys.exit(f"ptxas failed:\n{res.stderr}")
    out, kernel = {}, None
    for line in res.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            kernel = m.group(1)
            out[kernel] = dict(registers=0, spill_stores=0, spill_loads=0, smem=0, stack=0)
            continue
        if kernel is None:
            continue
        k = out[kernel]
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            k["stack"], k["spill_stores"], k["spill_loads"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            k["registers"] = int(m.group(1))
        m = re.search(r"(\d+) bytes smem", line)
        if m:
            k["smem"] = int(m.group(1))
    for kernel, loop in loops.items():
        if kernel in out:
            out[kernel]["loop"] = loop
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90", help="real architecture for ptxas (default sm_90)")
    ap.add_argument("--max-spill-bytes", type=int, default=None,
                    help="exit 1 if any kernel spills more (loads + stores)")
    ap.add_argument("--sass", action="store_true", help="also describe each kernel's main loop")
    ap.add_argument("files", nargs="*", help="kernels/cuda/*.cu files (default: all)")
    args = ap.parse_args()
    nvrtc, ptxas = tools()
    sass = sass_tools() if args.sass else None
    files = args.files or sorted(os.path.join(CUDA_DIR, f) for f in os.listdir(CUDA_DIR) if f.endswith(".cu"))
    worst = 0
    print(f"{'kernel':<48} {'regs':>5} {'smem B':>7} {'stack B':>7} {'spill st/ld B':>14}   ({args.arch})")
    sys.stdout.flush()
    for path in files:
        name = os.path.basename(path)
        for kernel, r in sorted(resources(ptxas, ptx_of(nvrtc, name, inline(path), args.arch), args.arch, sass).items()):
            spill = r["spill_stores"] + r["spill_loads"]
            worst = max(worst, spill)
            flag = "  <- spills" if spill else ""
            print(f"{name + ':' + kernel:<48} {r['registers']:>5} {r['smem']:>7} {r['stack']:>7} "
                  f"{r['spill_stores']:>6}/{r['spill_loads']:<7}{flag}")
            if "loop" in r:
                n, ops = r["loop"]
                math = sum(ops[op] for op in MATH)
                mix = " ".join(f"{op} {ops[op]}" for op in ("HMMA", "FFMA", "LDG", "LDS", "STS", "BRA") if ops[op])
                print(f"    main loop: {n} instructions, {n / math:.1f} per math instruction ({mix})")
    if args.max_spill_bytes is not None and worst > args.max_spill_bytes:
        print(f"a kernel spills {worst} bytes (> {args.max_spill_bytes})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
