#!/usr/bin/env python3
"""Hold the CPU engine to PyTorch itself.

`train` writes checkpoints whose tensor names follow PyTorch's `state_dict` of the PyTorch
peer's model (../shared/tools/torch_peer.py). This script:
  1. writes a small CIFAR-10-format data set (random pixels, fixed seed);
  2. runs our `train` for one SGD step (one batch of all 128 training images, no augmentation)
     and saves a checkpoint, then resumes it for a second step and saves again;
  3. loads the first checkpoint into the PyTorch model (strict: every name and shape must match),
     sets torch.optim.SGD's momentum buffers from it, takes the same step in PyTorch, and compares
     every parameter, BN running statistic and momentum buffer with our second checkpoint;
  4. evaluates our second checkpoint in PyTorch (eval mode) on the test images and compares the
     test loss and accuracy with what `train` reported;
  5. puts a NaN into one pixel of one test image and runs both engines' forward passes on that
     batch (ours through the `forward_probe` example): in evaluation mode only that image's
     logits are NaN (NaN passes through every ReLU, as in PyTorch, instead of becoming 0), and
     in training mode the batch statistics spread it to every logit and every running
     statistic; the NaN positions must be PyTorch's exactly, the other values agree to 1e-4.

Usage: pytorch_parity.py --train PATH/TO/train [--probe PATH/TO/forward_probe]
                         [--peer ../shared/tools/torch_peer.py] [--depth 20]
(--probe defaults to examples/forward_probe beside the train binary:
`cargo build -p train --profile test --example forward_probe`.)
Needs torch, numpy, safetensors. Exits 1 on any mismatch beyond the stated tolerances.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from safetensors import safe_open

# Tolerances (fp32 on both sides). A step's update Δp = −lr·(μ·buf + g + wd·p) is compared
# per tensor as ‖Δours − Δtorch‖/‖Δtorch‖. Gradients are sums over up to 128·32·32 products
# with heavy cancellation (random pixels and labels give a weak signal), so summation order
# alone moves them: PyTorch's own fp32 gradients of this very step differ from its fp64 ones
# by up to 9.6e-4 (BN biases). 1e-2 leaves 5x headroom over what we measure (2e-3) and still
# catches any wrong term, which is off by O(1). BN running statistics are plain means and
# variances: 1e-5. The evaluation loss: 1e-5 relative; the accuracy: exact.
UPDATE_TOL = 1e-2
BUFFER_TOL = 1e-5
LOSS_TOL = 1e-5
# The NaN probe's finite values: logits of a 20-layer forward in f32, summed in another order
# than PyTorch's (the evaluation loss above agrees to ~1e-6); 1e-4 relative.
PROBE_TOL = 1e-4


def write_data(root, n_train=128, n_test=64, seed=0):
    rng = np.random.default_rng(seed)
    d = os.path.join(root, "cifar-10-batches-bin")
    os.makedirs(d, exist_ok=True)

    def records(n):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        return np.concatenate([labels[:, None], pixels], axis=1).tobytes()

    per = -(-n_train // 5)
    for i in range(5):
        open(os.path.join(d, f"data_batch_{i + 1}.bin"), "wb").write(records(min(per, n_train - i * per)))
    open(os.path.join(d, "test_batch.bin"), "wb").write(records(n_test))
    return d


def read_split(path):
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def normalise(images, meta):
    v = [np.float32(x) for x in meta["normalization"].split(";")]
    mean, std = np.array(v[:3], np.float32), np.array(v[3:], np.float32)
    # The data crate's arithmetic: pix * (1 / (255 std)) + (−mean / std), in f32.
    scale = (np.float32(1.0) / (np.float32(255.0) * std)).astype(np.float32)
    shift = (-mean / std).astype(np.float32)
    return torch.from_numpy(images.astype(np.float32) * scale[None, :, None, None] + shift[None, :, None, None])


def load_ours(path):
    tensors = load_file(path)
    with safe_open(path, "np") as f:
        meta = f.metadata()
    return tensors, meta


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def same_nans(what, ours, theirs):
    """Failures (a list) unless NaN sits at the same places and the rest agrees to PROBE_TOL."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        return [f"{what}: shape {ours.shape} vs {theirs.shape}"]
    a, b = np.isnan(ours), np.isnan(theirs)
    if (a != b).any():
        return [f"{what}: NaN at {int(a.sum())} places, PyTorch at {int(b.sum())} ({int((a != b).sum())} differ)"]
    if (~a).any() and rel(ours[~a], theirs[~a]) > PROBE_TOL:
        return [f"{what}: finite values differ by {rel(ours[~a], theirs[~a]):.2e}"]
    return []


def nan_probe(probe, checkpoint, model, x, work):
    """Step 5: one NaN pixel through both engines' forward passes (see the module doc)."""
    x = x.clone()
    x[3, 1, 17, 5] = float("nan")
    inp, out = os.path.join(work, "probe-in.safetensors"), os.path.join(work, "probe-out.safetensors")
    save_file({"x": x.numpy()}, inp)
    subprocess.run([probe, checkpoint, inp, out], check=True, capture_output=True)
    ours = load_file(out)
    failures = []
    model.eval()
    with torch.no_grad():
        t_eval = model(x).numpy()
        model.train()
        t_train = model(x).numpy()
    nan_rows = np.isnan(t_eval).all(axis=1)
    if list(nan_rows) != [i == 3 for i in range(len(x))]:
        failures.append(f"PyTorch itself: eval NaN rows {np.flatnonzero(nan_rows)}, expected [3]")
    failures += same_nans("eval logits", ours["eval_logits"], t_eval)
    failures += same_nans("train-mode logits", ours["train_logits"], t_train)
    stats = 0
    for name, buf in model.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            failures += same_nans(name + " after the train-mode forward", ours[name], buf.numpy())
            stats += 1
    print(f"NaN probe: eval logits NaN in row(s) {np.flatnonzero(np.isnan(ours['eval_logits']).any(axis=1)).tolist()} "
          f"(PyTorch: {np.flatnonzero(nan_rows).tolist()}); train-mode logits NaN {int(np.isnan(ours['train_logits']).sum())}"
          f"/{t_train.size} (PyTorch: {int(np.isnan(t_train).sum())}); {stats} running statistics compared")
    return failures


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="the train binary")
    p.add_argument("--peer", default=os.path.join(here, "..", "..", "shared", "tools", "torch_peer.py"))
    p.add_argument("--depth", type=int, default=20, choices=[20, 32, 44, 56, 110])
    p.add_argument("--probe", help="the forward_probe example (default: examples/ beside --train)")
    a = p.parse_args()
    probe = a.probe or os.path.join(os.path.dirname(os.path.abspath(a.train)), "examples", "forward_probe")
    if not os.path.isfile(probe):
        sys.exit(f"error: {probe} is missing: build it with `cargo build -p train --profile test --example forward_probe`"
                 " or pass --probe PATH")
    if not os.path.isfile(a.peer):
        sys.exit(f"error: the PyTorch peer {a.peer} is missing: pass --peer PATH/TO/torch_peer.py (it is in shared/tools)")
    sys.path.insert(0, os.path.dirname(os.path.abspath(a.peer)))
    import torch_peer

    torch.manual_seed(0)
    work = tempfile.mkdtemp(prefix="pytorch-parity-")
    failures = []
    try:
        d = write_data(work)
        run = [a.train, "--depth", str(a.depth), "--batch-size", "128", "--no-augment", "--milestones", "100",
               "--device", "cpu", "--seed", "1", "--data-dir", work]
        ck1, ck2 = os.path.join(work, "step1.safetensors"), os.path.join(work, "step2.safetensors")
        subprocess.run(run + ["--epochs", "1", "--save", ck1], check=True, capture_output=True)
        shutil.copy(ck1, ck2)
        subprocess.run(run + ["--epochs", "2", "--extend", "--resume", ck2, "--save", ck2], check=True, capture_output=True)
        t1, meta1 = load_ours(ck1)
        t2, meta2 = load_ours(ck2)

        model = torch_peer.build(f"resnet{a.depth}")
        state = {k: torch.from_numpy(v.copy()) for k, v in t1.items() if not k.startswith("optimizer.")}
        model.load_state_dict(state, strict=True)  # every name and shape must match
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        names = dict(model.named_parameters())
        for name, param in names.items():
            opt.state[param]["momentum_buffer"] = torch.from_numpy(t1["optimizer.momentum." + name].copy())

        images, labels = read_split(os.path.join(d, "data_batch_1.bin"))
        for i in range(2, 6):
            x, y = read_split(os.path.join(d, f"data_batch_{i}.bin"))
            images, labels = np.concatenate([images, x]), np.concatenate([labels, y])
        model.train()
        loss = F.cross_entropy(model(normalise(images, meta1)), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()

        worst, worst_buffer = {}, 0.0
        for name, param in names.items():
            p0, p1 = t1[name], t2[name]
            upd = rel(p1 - p0, param.detach().numpy() - p0)
            buf = rel(t2["optimizer.momentum." + name], opt.state[param]["momentum_buffer"].numpy())
            worst[name] = (upd, buf)
            if upd > UPDATE_TOL or buf > UPDATE_TOL:
                failures.append(f"{name}: update {upd:.2e}, momentum {buf:.2e}")
        for name, buf in model.named_buffers():
            if name.endswith("num_batches_tracked"):
                if int(t2[name]) != int(buf):
                    failures.append(f"{name}: {int(t2[name])} vs {int(buf)}")
                continue
            r = rel(t2[name], buf.numpy())
            worst_buffer = max(worst_buffer, r)
            if r > BUFFER_TOL:
                failures.append(f"{name}: {r:.2e}")
        top = max(worst.items(), key=lambda kv: kv[1][0])
        print(f"one SGD step vs torch.optim.SGD, {len(names)} parameter tensors: worst update error "
              f"{top[1][0]:.2e} ({top[0]}, tolerance {UPDATE_TOL:.0e}); BN running statistics {worst_buffer:.2e} "
              f"(tolerance {BUFFER_TOL:.0e})")

        # Evaluation of the second checkpoint: PyTorch vs what train reported for epoch 2.
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in t2.items() if not k.startswith("optimizer.")})
        model.eval()
        timg, tlab = read_split(os.path.join(d, "test_batch.bin"))
        with torch.no_grad():
            logits = model(normalise(timg, meta2))
        t_loss = F.cross_entropy(logits, torch.from_numpy(tlab)).item()
        t_acc = (logits.argmax(1).numpy() == tlab).mean()
        last = meta2["metrics_csv"].strip().splitlines()[-1].split(",")
        o_loss, o_acc = float(last[4]), float(last[5])
        print(f"eval: test loss ours {o_loss:.6f} torch {t_loss:.6f}; accuracy ours {o_acc:.4f} torch {t_acc:.4f}")
        if abs(o_loss - t_loss) > LOSS_TOL * abs(t_loss) or abs(o_acc - t_acc) > 1e-9:
            failures.append("evaluation differs")

        failures += nan_probe(probe, ck2, model, normalise(timg[:8], meta2), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("MISMATCH:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("pytorch parity: ok")


if __name__ == "__main__":
    main()
