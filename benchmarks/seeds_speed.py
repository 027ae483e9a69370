"""Seeds one at a time vs seeds trained together: the notebook's LeNet on MNIST (padded to 32).

For each N, trains N seeds for a fixed number of training batches at batch 256 three ways:
one after another in this process (``over_seeds(workers=1)``, the reference and the book's
CPU default), in forked one-thread workers (``workers=lsuvlib.workers.balanced(N)``, opt-in)
and stacked into one model (``together=True``, the CUDA default), and prints images/s per
model. ``speedup`` and ``together_s`` in the JSON are the workers' (the faster way to train
seeds side by side on a CPU);
``stacked_*`` are the stacked model's. ``max_abs_diff`` is the largest per-seed metric
difference from the reference (thread counts and kernel orders differ: float rounding,
which 50 SGD steps at lr 0.1 amplify). The last line is one JSON object (for CI and the
README's table).

    LSUV_DATA_DIR=/work/shared/datasets python benchmarks/seeds_speed.py            # N = 1, 5, 10
    LSUV_DATA_DIR=/work/shared/datasets python benchmarks/seeds_speed.py --quick    # CI: N = 1, 3

Timings are wall-clock and noisy when other processes share the cores: re-run on an idle
machine before quoting them. ``--threads`` sets torch's intra-op threads (default: torch's).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import lsuvlib  # noqa: E402
from lsuvlib.experiment import over_seeds  # noqa: E402
from lsuvlib.batches import dataloaders  # noqa: E402
from lsuvlib.workers import balanced, imap  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_speed import train_steps  # noqa: E402  (the bare loop epoch_speed's floor times)

WAYS = ("one at a time", "workers", "stacked")


def way_kwargs(way: str, n: int) -> dict:
    return {"one at a time": dict(together=False, workers=1), "workers": dict(together=False, workers=balanced(n)),
            "stacked": dict(together=True)}[way]


def max_diff(a_runs, b_runs) -> float:
    diff = 0.0
    for a, b in zip(a_runs, b_runs):
        for ra, rb in zip(a.history, b.history):
            diff = max(diff, abs(ra["accuracy"] - rb["accuracy"]), abs(ra["loss"] - rb["loss"]))
    return diff


def bare_training(ds, seed: int) -> float:
    """Seconds of one pass of SGD steps on a LeNet, nothing else (no LSUV, no evaluation, no fork)."""
    lsuvlib.set_seed(seed)
    model = lsuvlib.lenet().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = dataloaders(ds, 256, normalise=True, seed=seed, device="cpu").train
    start = time.perf_counter()
    train_steps(model, opt, batches)
    return time.perf_counter() - start


def ceiling(n_images: int = 12800) -> dict:
    """What the cores can give: two runs one after another on all threads vs at once, one thread each.

    Measured on bare SGD steps over ``n_images`` (50 batches), timed inside each process, so
    fork and set-up are left out: the workers' speedup on the same steps cannot beat it.
    """
    ds = lsuvlib.load_images("mnist").padded(32).subset(n_images, 256)
    bare_training(ds, 0)  # warm-up
    two_threads = bare_training(ds, 0) + bare_training(ds, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_thread = bare_training(ds, 0)
    torch.set_num_threads(threads)
    alone_each = [t for _, t in imap(lambda s: bare_training(ds, s), [0, 1], 2)]
    at_once = max(alone_each)  # both started together; the pair is done when the slower is
    out = dict(two_runs_on_all_threads_s=round(two_threads, 3), one_run_one_thread_s=round(one_thread, 3),
               two_runs_at_once_s=round(at_once, 3), each_run_at_once_s=[round(t, 3) for t in alone_each],
               ceiling=round(two_threads / at_once, 3), second_thread_gain=round(2 * one_thread / two_threads, 3))
    print(f"ceiling: two runs on {threads} threads {two_threads:.2f} s; one run on 1 thread {one_thread:.2f} s; "
          f"two runs at once, 1 thread each {at_once:.2f} s "
          f"-> at most {out['ceiling']:.2f}x from workers; a 2nd thread gives {out['second_thread_gain']:.2f}x",
          flush=True)
    return out


def run(ns, n_train, epochs, lsuv, threads, momentum):
    if threads:
        torch.set_num_threads(threads)
    ds = lsuvlib.load_images("mnist").padded(32).subset(n_train, 2000)
    kw = dict(make_model=lsuvlib.lenet, ds=ds, epochs=epochs, lr=0.1, momentum=momentum, batch_size=256,
              normalise=True, lsuv=lsuv, device="cpu", progress=False)
    images = n_train * epochs
    # Warm-up: the first run in a process pays one-time costs (kernel selection, allocator) that
    # would otherwise be charged to whichever way is timed first.
    warm = dict(kw, ds=ds.subset(512, 256))
    for way in WAYS:
        over_seeds([0, 1], **way_kwargs(way, 2), **warm)
    rows = []
    for n in ns:
        seeds = list(range(n))
        secs, runs = {}, {}
        for way in WAYS:
            t = time.perf_counter()
            runs[way] = over_seeds(seeds, **way_kwargs(way, n), **kw)
            secs[way] = time.perf_counter() - t
        seq_s, work_s, stack_s = secs["one at a time"], secs["workers"], secs["stacked"]
        row = dict(n=n, workers=balanced(n), sequential_s=round(seq_s, 3), together_s=round(work_s, 3),
                   speedup=round(seq_s / work_s, 3), stacked_s=round(stack_s, 3),
                   stacked_speedup=round(seq_s / stack_s, 3),
                   max_abs_diff=max(max_diff(runs["one at a time"], runs[w]) for w in ("workers", "stacked")),
                   seq_images_per_s_per_model=round(images / seq_s, 1),
                   together_images_per_s_per_model=round(images / work_s, 1))
        rows.append(row)
        print(f"N={n:3d}  one at a time {seq_s:7.2f} s  {row['workers']} workers {work_s:7.2f} s "
              f"({seq_s / work_s:4.2f}x)  stacked {stack_s:7.2f} s ({seq_s / stack_s:4.2f}x)  images/s per model "
              f"{row['seq_images_per_s_per_model']:.0f} -> {row['together_images_per_s_per_model']:.0f}  "
              f"max |diff| {row['max_abs_diff']:.2e}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run for CI: N = 1, 3 on 1024 images")
    ap.add_argument("--n", type=int, nargs="+", default=None, help="numbers of seeds (default 1 5 10)")
    ap.add_argument("--train", type=int, default=None, help="training images per epoch (default 12800 = 50 batches)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lsuv", default="loop", help="LSUV variant, or 'none'")
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    ns = args.n or ([1, 3] if args.quick else [1, 5, 10])
    n_train = args.train or (1024 if args.quick else 12800)
    rows = run(ns, n_train, args.epochs, None if args.lsuv == "none" else args.lsuv, args.threads, args.momentum)
    last = dict(rows[-1])
    last["ceiling"] = ceiling()
    last["rows"] = rows
    last["max_abs_diff"] = max(r["max_abs_diff"] for r in rows)
    last["threads"] = torch.get_num_threads()
    last["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    last["peak_worker_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    last["note"] = "wall-clock; noisy if other processes share the cores"
    print(json.dumps(last))


if __name__ == "__main__":
    main()
