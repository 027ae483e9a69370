"""Seeds one at a time vs seeds trained together: the notebook's LeNet on MNIST (padded to 32).

For each N, trains N seeds for a fixed number of training batches at batch 256, first one
after another (``over_seeds(together=False)``), then stacked (``together=True``), and prints
images/s per model. The equivalence check compares every seed's metrics between the two
ways. The last line is one JSON object (for CI and the README's table).

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
    over_seeds([0, 1], together=False, **warm)
    over_seeds([0, 1], together=True, **warm)
    rows = []
    for n in ns:
        seeds = list(range(n))
        t = time.perf_counter()
        seq = over_seeds(seeds, together=False, **kw)
        seq_s = time.perf_counter() - t
        t = time.perf_counter()
        tog = over_seeds(seeds, together=True, **kw)
        tog_s = time.perf_counter() - t
        diff = 0.0
        for a, b in zip(seq, tog):
            for ra, rb in zip(a.history, b.history):
                diff = max(diff, abs(ra["accuracy"] - rb["accuracy"]), abs(ra["loss"] - rb["loss"]))
        row = dict(n=n, sequential_s=round(seq_s, 3), together_s=round(tog_s, 3),
                   speedup=round(seq_s / tog_s, 3), max_abs_diff=diff,
                   seq_images_per_s_per_model=round(images * n / seq_s / n, 1),
                   together_images_per_s_per_model=round(images * n / tog_s / n, 1))
        rows.append(row)
        print(f"N={n:3d}  one at a time {seq_s:7.2f} s  together {tog_s:7.2f} s  speedup {seq_s / tog_s:5.2f}x  "
              f"images/s per model {row['seq_images_per_s_per_model']:.0f} -> "
              f"{row['together_images_per_s_per_model']:.0f}  max |diff| {diff:.2e}", flush=True)
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
    last["rows"] = rows
    last["max_abs_diff"] = max(r["max_abs_diff"] for r in rows)
    last["threads"] = torch.get_num_threads()
    last["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    last["note"] = "wall-clock; noisy if other processes share the cores"
    print(json.dumps(last))


if __name__ == "__main__":
    main()
