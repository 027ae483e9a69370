"""How long `lsuv_init` takes on the blog's CNN with a 1024-image batch, per variant.

Target (issue 3): well under 1 s on 2 CPU cores. The last line is one JSON object.
Every variant in ``lsuvlib.lsuv.VARIANTS`` is timed (``blog`` and ``paper`` included);
the "steps" column is the adjustment steps, ``report.forward_passes`` the passes run.

    python benchmarks/lsuv_speed.py [--repeats N] [--batch-size N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import torch

import lsuvlib as L


def time_variant(xb: torch.Tensor, variant: str, repeats: int) -> tuple[float, int, int]:
    """Median seconds of lsuv_init on a fresh model, the total adjustment steps and the forward passes it took."""
    act = partial(L.GeneralRelu, leak=0.1, sub=0.4)
    times, steps, passes = [], 0, 0
    for i in range(repeats + 1):  # the first call warms up the kernels and is not counted
        L.set_seed(i)
        model = L.get_model(act=act)
        start = time.perf_counter()
        report = L.lsuv_init(model, xb, variant)
        if i:
            times.append(time.perf_counter() - start)
            steps, passes = sum(r.iterations for r in report), report.forward_passes
    return statistics.median(times), steps, passes


TORCHVISION = [("resnet18", "loop"), ("resnet18", "paper"), ("vgg11_bn", "loop"), ("mobilenet_v3_small", "loop"),
               ("mobilenet_v3_small", "paper")]  # vgg11_bn's paper run orthonormalises a 4096x25088 matrix: minutes


def time_torchvision(result: dict) -> None:
    """lsuv_init with no extra arguments on three torchvision models (random weights), 32 images at 32x32."""
    import warnings

    import torchvision

    print(f"\n{'model':<20} {'variant':<8} {'s':>6} {'rows':>5} {'not converged':>14}")
    xb = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for name, variant in TORCHVISION:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # residual pairs end "not converged": counted below
            report = L.lsuv_init(model, xb, variant)
        seconds = time.perf_counter() - start
        stuck = [r.layer for r in report if not r.converged]
        result[f"{name}_{variant}_s"] = round(seconds, 3)
        result[f"{name}_{variant}_not_converged"] = stuck
        print(f"{name:<20} {variant:<8} {seconds:>6.2f} {len(report):>5} {len(stuck):>14}  {' '.join(stuck)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--torchvision", action="store_true", help="also time resnet18, vgg11_bn, mobilenet_v3_small")
    args = parser.parse_args()
    ds = L.prepare("mnist", size=32)
    xb, _ = L.dataloaders(ds, args.batch_size).train.one_batch()
    result = {"batch_size": args.batch_size, "threads": torch.get_num_threads(), "target_s": 1.0}
    print(f"{'variant':<10} {'median s':>9} {'steps':>6} {'passes':>7}")
    for variant in L.lsuv.VARIANTS:
        seconds, steps, passes = time_variant(xb, variant, args.repeats)
        result[f"{variant}_s"] = round(seconds, 4)
        print(f"{variant:<10} {seconds:>9.3f} {steps:>6} {passes:>7}")
    if args.torchvision:
        time_torchvision(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
