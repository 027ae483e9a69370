"""lsuvlib's LSUV side by side with another implementation, on the same models and batch.

The other implementation is the PyPI package ``lsuv`` (by the paper's first author)
when it is installed; it is NOT a dependency of this project (``pip install lsuv`` to
include it). Without it, the comparison uses a re-implementation of the paper's
Algorithm 1 written below. For each model: seconds, and the std each leaves at every
conv/linear output (what both measure). The last line is one JSON object.

    python benchmarks/lsuv_compare.py [--size 32] [--batch-size 32] [--models resnet18,vgg11_bn,...]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: lsuvlib sits next to this folder
import lsuvlib as L  # noqa: E402

WEIGHTS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def layer_stds(model: nn.Module, xb: torch.Tensor) -> list[float]:
    """Std of every conv/linear layer's output (first call), in execution order, on one eval pass."""
    found: dict[nn.Module, float] = {}

    def hook(m, inp, out):
        found.setdefault(m, out.detach().float().std().item())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, WEIGHTS)]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(xb)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return list(found.values())


def algorithm_1(model: nn.Module, xb: torch.Tensor, tol: float = 0.1, t_max: int = 10) -> nn.Module:
    """Mishkin & Matas (2016), Algorithm 1, written from the paper for this benchmark.

    Orthonormal pre-init of every conv/linear weight; then, for each such layer in the
    order the forward pass reaches it, W <- W / sqrt(Var(B)) while |Var(B) - 1| >= tol
    and fewer than t_max steps, with B the layer's output on the batch.
    """
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, i, o: order.append(m) if m not in order else None)
               for m in model.modules() if isinstance(m, WEIGHTS)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(xb)
            for h in handles:
                h.remove()
            for m in order:
                nn.init.orthogonal_(m.weight)
            for m in order:
                seen = {}
                h = m.register_forward_hook(lambda mod, i, o: seen.setdefault("var", o.float().var().item()))
                for _ in range(t_max + 1):
                    seen.clear()
                    model(xb)
                    if abs(seen["var"] - 1) < tol or _ == t_max:
                        break
                    m.weight /= math.sqrt(seen["var"])
                h.remove()
    finally:
        model.train(was)
    return model


def other_implementation():
    """(name, function(model, xb)) for the comparison: the PyPI package if present, else Algorithm 1 above."""
    try:
        import lsuv  # optional: never a dependency of lsuvlib
    except ImportError:
        print("note: the PyPI package `lsuv` is not installed; comparing with this file's Algorithm 1 instead")
        return "algorithm_1 (this file)", algorithm_1
    version = getattr(lsuv, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version
            version = dist_version("lsuv")
        except Exception:  # noqa: BLE001  (the version is only a label)
            version = "?"
    return f"lsuv {version} (PyPI)", lambda model, xb: lsuv.lsuv_with_singlebatch(model, xb, verbose=False)


def build(name: str) -> nn.Module:
    if name == "blog_cnn":
        return L.get_model()
    import torchvision
    return getattr(torchvision.models, name)(weights=None)


def summarise(stds: list[float]) -> dict:
    gaps = [abs(s - 1) for s in stds]
    return dict(layers=len(stds), median_gap=statistics.median(gaps), max_gap=max(gaps),
                first=stds[0], last=stds[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default="blog_cnn,resnet18,vgg11_bn,mobilenet_v3_small")
    parser.add_argument("--show-layers", action="store_true", help="print every layer's std")
    args = parser.parse_args()
    other_name, other = other_implementation()
    ways = {"lsuvlib paper": lambda m, xb: L.lsuv_init(m, xb, "paper", warn=False),
            "lsuvlib loop": lambda m, xb: L.lsuv_init(m, xb, "loop", warn=False),
            other_name: other}
    result = {"size": args.size, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "other": other_name, "models": {}}
    print(f"{'model':<20} {'implementation':<26} {'seconds':>8} {'layers':>6} {'median |std-1|':>15} "
          f"{'max |std-1|':>12}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        base = build(name)
        channels = 1 if name == "blog_cnn" else 3
        xb = torch.randn(args.batch_size, channels, args.size, args.size, generator=torch.Generator().manual_seed(0))
        result["models"][name] = {}
        for way, fn in ways.items():
            model = copy.deepcopy(base)  # the same starting weights for every implementation
            torch.manual_seed(1)         # the same orthonormal draws where both draw them
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                fn(model, xb)
                seconds = time.perf_counter() - start
            stds = layer_stds(model, xb)
            row = dict(seconds=round(seconds, 3), **{k: round(v, 4) if isinstance(v, float) else v
                                                    for k, v in summarise(stds).items()})
            if args.show_layers:
                row["stds"] = [round(s, 4) for s in stds]
                print("   ", way, " ".join(f"{s:.3f}" for s in stds))
            result["models"][name][way] = row
            print(f"{name:<20} {way:<26} {seconds:>8.2f} {row['layers']:>6} {row['median_gap']:>15.4f} "
                  f"{row['max_gap']:>12.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
