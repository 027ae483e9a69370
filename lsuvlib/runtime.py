"""Where code runs and how to make it repeatable: device choice, seeds, versions."""
from __future__ import annotations

import platform
import random

import numpy as np
import torch


def default_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return CUDA when it exists, else the CPU; an explicit name is passed through."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch so a CPU run repeats exactly.

    On CUDA, ``deterministic`` also asks cuDNN for deterministic kernels, which
    costs some speed; CPU kernels used here are deterministic already.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic and torch.cuda.is_available():
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def versions() -> dict[str, str]:
    """Versions that decide whether a result can be reproduced."""
    from . import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lsuvlib": __version__,
        "numpy": np.__version__,
        "platform": platform.platform(terse=True),
        "cuda": torch.version.cuda or "none",
    }
