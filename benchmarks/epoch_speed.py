"""How long one training epoch of the blog's CNN takes on MNIST, four ways, in one process.

- ``blog``: the blog's pipeline. A Hugging Face ``datasets.Dataset`` of PIL images, a
  per-item ``to_tensor`` transform via ``with_transform`` and a ``torch.utils.data.DataLoader``
  with worker processes, then the forward/backward/step loop.
- ``lsuvlib``: ``lsuvlib.dataloaders`` + ``lsuvlib.Learner``; the time is the training row's
  ``seconds`` from ``learn.history`` (the training pass alone, no evaluation).
- ``lsuvlib+stats``: the same with an ``lsuvlib.ActivationStats`` callback attached.
- ``floor``: the bare forward/backward/step loop over float batches already in memory.

Each way gets one short untimed warm-up, then ``--repeats`` timed epochs (the ways take
turns, so a change in machine load hits them alike); the table shows medians. Every epoch
starts from a fresh model built with the same seed. This is a benchmark, not a test:
targets are printed beside the ratios, never asserted. The last line printed is one JSON object.

    LSUV_DATA_DIR=/work/shared/datasets HF_HUB_OFFLINE=1 python benchmarks/epoch_speed.py [--quick]
"""
from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

# Run as `python benchmarks/epoch_speed.py` from anywhere: lsuvlib sits next to this folder, uninstalled.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lsuvlib  # noqa: E402

QUICK_IMAGES = 8192
TARGETS = {"speedup_vs_blog": (">=", 5.0), "overhead_vs_floor": ("<=", 1.15), "stats_overhead": ("<=", 1.30)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"first {QUICK_IMAGES} training images and 1 repeat (a smoke run for CI)")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per way (default: 3, or 1 with --quick)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the blog pipeline")
    p.add_argument("--lr", type=float, default=0.2, help="SGD learning rate (use 0.05 if 0.2 reports a NaN)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) first (default: torch's own)")
    p.add_argument("--channels-last", action="store_true", help="every model in torch.channels_last memory format")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="glibc only: keep freed memory in the process, so activations stop page-faulting every batch")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.warmup_batches = 1 if args.quick else 3
    if args.repeats < 1 or args.batch_size < 1 or args.workers < 0:
        p.error("--repeats and --batch-size must be positive, --workers non-negative")
    return args


def load_train(quick: bool) -> lsuvlib.ImageSet:
    """MNIST padded to 32x32; the test split is cut to one image because no way evaluates."""
    ds = lsuvlib.load_images("mnist").padded(32)
    return ds.subset(QUICK_IMAGES if quick else None, 1)


def keep_freed_memory() -> None:
    """Stop glibc from returning big freed blocks to the OS.

    By default each tensor over ~128 KiB-32 MiB is a fresh ``mmap`` that is unmapped on
    free, so every batch's activations are page-faulted (and zeroed by the kernel) anew.
    """
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)


def fresh_model(seed: int, channels_last: bool = False) -> torch.nn.Module:
    lsuvlib.set_seed(seed)
    model = lsuvlib.get_model()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def train_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, batches) -> float:
    """The loop all four ways share; returns the last batch's loss."""
    model.train()
    loss = torch.zeros(())
    for xb, yb in batches:
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss.item()


# ----------------------------------------------------------------------------- (a) the blog's pipeline

def blog_dataset(ds: lsuvlib.ImageSet):
    """The images as a Hugging Face dataset of PIL images (stored PNG-encoded, like the Hub's MNIST)."""
    import datasets
    import PIL.Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(ds.classes))})
    images = [PIL.Image.fromarray(a) for a in ds.x_train[:, 0].numpy()]
    return datasets.Dataset.from_dict({"image": images, "label": ds.y_train.tolist()}, features=features)


def to_tensors(batch: dict) -> dict:
    """The blog's transform: one ``to_tensor`` call per image, in Python."""
    from torchvision.transforms.functional import to_tensor

    batch["image"] = [to_tensor(im) for im in batch["image"]]
    return batch


def collate_xy(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """The blog's ``collate_dict``: stack a list of ``{image, label}`` into ``(x, y)``."""
    batch = torch.utils.data.default_collate(items)
    return batch["image"], batch["label"]


def blog_epoch(hf_ds, seed: int, args, n_batches: int | None = None) -> tuple[float, float]:
    """Seconds and last loss; the DataLoader (and its workers) is made inside, once per epoch, as the blog did."""
    model = fresh_model(seed, args.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    dl = torch.utils.data.DataLoader(hf_ds.with_transform(to_tensors), batch_size=args.batch_size, shuffle=True,
                                     num_workers=args.workers, collate_fn=collate_xy,
                                     generator=torch.Generator().manual_seed(seed))
    loss = train_steps(model, opt, itertools.islice(dl, n_batches))
    return time.perf_counter() - start, loss


# ----------------------------------------------------------------------------- (b, d) lsuvlib

def lsuvlib_epoch(ds: lsuvlib.ImageSet, seed: int, args, stats: bool = False) -> tuple[float, float]:
    """The training row's seconds of ``Learner.fit(1)`` and the epoch's mean training loss."""
    dls = lsuvlib.dataloaders(ds, args.batch_size, seed=seed)
    cbs = [lsuvlib.ActivationStats()] if stats else []
    learn = lsuvlib.Learner(fresh_model(seed, args.channels_last), dls, lr=args.lr, cbs=cbs, progress=False).fit(1)
    row = next(r for r in learn.history if r["phase"] == "train")
    return row["seconds"], (math.nan if learn.stopped else row["loss"])


# ----------------------------------------------------------------------------- (c) the floor

def float_batches(ds: lsuvlib.ImageSet, batch_size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A shuffled epoch already scaled to [0, 1] (what to_tensor and lsuvlib give) and cut into batches."""
    order = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(seed))
    x, y = ds.x_train[order].float().div_(255), ds.y_train[order]
    return list(zip(x.split(batch_size), y.split(batch_size)))


def floor_epoch(batches, seed: int, args) -> tuple[float, float]:
    model = fresh_model(seed, args.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    loss = train_steps(model, opt, batches)
    return time.perf_counter() - start, loss


# ----------------------------------------------------------------------------- measuring and reporting

def make_ways(ds: lsuvlib.ImageSet, args) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """Timed epochs and their warm-ups, by name. Building the inputs is not timed."""
    t = time.perf_counter()
    hf_ds = blog_dataset(ds)
    print(f"built the Hugging Face dataset of {len(hf_ds)} images in {time.perf_counter() - t:.1f} s (not timed)")
    batches = float_batches(ds, args.batch_size, args.seed)
    n = args.warmup_batches
    small = ds.subset(n * args.batch_size)
    s = args.seed
    timed = {
        "blog": lambda: blog_epoch(hf_ds, s, args),
        "lsuvlib": lambda: lsuvlib_epoch(ds, s, args),
        "lsuvlib+stats": lambda: lsuvlib_epoch(ds, s, args, stats=True),
        "floor": lambda: floor_epoch(batches, s, args),
    }
    warmup = {
        "blog": lambda: blog_epoch(hf_ds, s, args, n_batches=n),
        "lsuvlib": lambda: lsuvlib_epoch(small, s, args),
        "lsuvlib+stats": lambda: lsuvlib_epoch(small, s, args, stats=True),
        "floor": lambda: floor_epoch(batches[:n], s, args),
    }
    return timed, warmup


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the DataLoader workers, once an epoch ends)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(timed: dict[str, Callable], warmup: dict[str, Callable], repeats: int, n_batches: int) -> dict[str, dict]:
    """Wall seconds, CPU seconds, losses and main-process page faults per batch of every timed epoch.

    CPU seconds cover the whole call (model set-up included, which is tiny); on a shared
    machine they move much less than wall time, so they tell load noise from real cost.
    """
    for fn in warmup.values():
        fn()
    runs = {name: {"seconds": [], "cpu": [], "losses": [], "faults": []} for name in timed}
    for r in range(repeats):
        for name, fn in timed.items():  # interleaved: load drift on a shared machine hits every way
            faults, cpu = minor_faults(), cpu_seconds()
            seconds, loss = fn()
            cpu, faults = cpu_seconds() - cpu, (minor_faults() - faults) / n_batches
            for key, value in zip(("seconds", "cpu", "losses", "faults"), (seconds, cpu, loss, faults)):
                runs[name][key].append(value)
            print(f"  repeat {r + 1}/{repeats}  {name:<14} {seconds:7.2f} s  cpu {cpu:7.2f} s  loss {loss:.3f}  "
                  f"{faults:6.0f} page faults/batch", flush=True)
    return runs


def ratios(med: dict[str, float]) -> dict[str, float]:
    return {"speedup_vs_blog": med["blog"] / med["lsuvlib"],
            "overhead_vs_floor": med["lsuvlib"] / med["floor"],
            "stats_overhead": med["lsuvlib+stats"] / med["lsuvlib"]}


def verdict(name: str, value: float) -> str:
    op, target = TARGETS[name]
    met = value >= target if op == ">=" else value <= target
    return f"target {op} {target:.2f}: {'met' if met else 'MISSED'}"


def print_table(runs: dict[str, dict], med: dict[str, float], rat: dict[str, float], cpu_rat: dict[str, float],
                n_images: int) -> None:
    print(f"\n{'way':<14} {'median s':>9} {'images/s':>9} {'x floor':>8} {'cpu s':>7} {'faults/batch':>13}"
          "   all epochs (s)")
    for name, run in runs.items():
        all_s = " ".join(f"{s:.2f}" for s in run["seconds"])
        cpu, faults = statistics.median(run["cpu"]), statistics.median(run["faults"])
        print(f"{name:<14} {med[name]:9.2f} {n_images / med[name]:9.0f} {med[name] / med['floor']:8.2f} "
              f"{cpu:7.2f} {faults:13.0f}   {all_s}")
    print(f"\n{'ratio':<18} {'wall':>6} {'cpu':>6}")
    for name, value in rat.items():
        print(f"{name:<18} {value:6.2f} {cpu_rat[name]:6.2f}   (wall {verdict(name, value)})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        keep_freed_memory()
    ds = load_train(args.quick)
    n_images = len(ds.x_train)
    print(f"epoch_speed: {n_images} images 32x32, batch {args.batch_size}, lr {args.lr}, "
          f"{torch.get_num_threads()} torch threads, {args.workers} DataLoader workers, {args.repeats} repeat(s), "
          f"channels_last {args.channels_last}, keep_freed_memory {args.keep_freed_memory}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    timed, warmup = make_ways(ds, args)
    runs = measure(timed, warmup, args.repeats, math.ceil(n_images / args.batch_size))
    med = {name: statistics.median(run["seconds"]) for name, run in runs.items()}
    cpu = {name: statistics.median(run["cpu"]) for name, run in runs.items()}
    rat, cpu_rat = ratios(med), ratios(cpu)
    finite = all(math.isfinite(loss) for run in runs.values() for loss in run["losses"])
    print_table(runs, med, rat, cpu_rat, n_images)
    if not finite:
        print(f"warning: a loss went non-finite at lr {args.lr}; lsuvlib stops such epochs early, so its time "
              "is too short. Rerun with --lr 0.05.")
    result = {"blog_pipeline_s": med["blog"], "lsuvlib_s": med["lsuvlib"], "lsuvlib_stats_s": med["lsuvlib+stats"],
              "floor_s": med["floor"], **rat, "n_images": n_images, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "quick": args.quick, "repeats": args.repeats,
              "workers": args.workers, "lr": args.lr, "finite": finite,
              "channels_last": args.channels_last, "keep_freed_memory": args.keep_freed_memory,
              "cpu_s": {name: round(v, 3) for name, v in cpu.items()},
              "cpu_ratios": {name: round(v, 4) for name, v in cpu_rat.items()},
              "load_avg_1m": os.getloadavg()[0], "torch": torch.__version__}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
