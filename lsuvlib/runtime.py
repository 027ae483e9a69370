"""Where code runs and how to make it repeatable: device choice, seeds, versions, argument checks."""
from __future__ import annotations

import numbers
import os
import platform
import random

import numpy as np
import torch


def default_device(device: str | torch.device | None = "auto") -> torch.device:
    """CUDA when this machine has it, else the CPU, for `"auto"` or `None`; a name is checked and returned as a device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a device name: use 'auto', 'cpu' or 'cuda'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for, but this machine has no CUDA GPU "
                           "(torch.cuda.is_available() is False): use device='auto' or device='cpu'")
    return dev


def progress_line(text: str) -> None:
    """Append one line to the file named by `$LSUV_PROGRESS_FILE` (the build shows it); else nothing.

    Errors writing it are ignored on purpose: progress is a courtesy and must never stop a run.
    """
    path = os.environ.get("LSUV_PROGRESS_FILE")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")
            f.flush()
    except OSError:
        pass


def bars_shown(progress: bool) -> bool:
    """Whether to draw fastprogress bars: when asked for, except inside a book build, which reports
    progress through `$LSUV_PROGRESS_FILE` and would otherwise save spent bars into its pages."""
    return bool(progress) and not os.environ.get("LSUV_PROGRESS_FILE")


def check_positive(name: str, value, *, whole: bool = False) -> None:
    """Raise unless `value` is a positive number (a positive int if `whole`).

    The error is one line naming the argument, what it must be and what was given,
    e.g. `lr must be a positive number, got '0.1' (str)`: a `TypeError` for the wrong
    type, a `ValueError` for a number that is not positive.
    """
    kind = numbers.Integral if whole else numbers.Real
    expected = "a positive whole number" if whole else "a positive number"
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")
    if not value > 0:  # also catches NaN
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch so that a CPU run repeats exactly.

    Args:
        seed: a whole number.
        deterministic: on CUDA, also ask cuDNN for deterministic kernels (slower); the CPU
            kernels used here are deterministic already.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be a whole number, got {seed!r} ({type(seed).__name__})")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic and torch.cuda.is_available():
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def versions() -> dict[str, str]:
    """The versions that decide whether a result can be reproduced: Python, torch, lsuvlib, NumPy, platform, CUDA."""
    from . import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lsuvlib": __version__,
        "numpy": np.__version__,
        "platform": platform.platform(terse=True),
        "cuda": torch.version.cuda or "none",
    }
