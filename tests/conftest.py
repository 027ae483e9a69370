"""Shared fixtures: a hermetic data environment, writers for the canonical file formats, tiny datasets.

Every test runs with ``HF_HUB_OFFLINE=1``, ``LSUV_DATA_DIR`` unset, ``LSUV_CACHE_DIR`` and
``lsuvlib.data.PROJECT_DATA`` pointing into the test's own ``tmp_path``, and the Debian
system folder for Fashion-MNIST replaced by an empty temporary one. So no test reads the
project's ``data/`` folder, writes a cache there, or touches the network. Tests marked
``real_data`` keep the real system folders (they still get a temporary cache).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import signal
import struct
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lsuvlib import data as lsdata
from lsuvlib.data import ImageSet


_HYPOTHESIS_HOME: str | None = None


def pytest_configure(config):
    config.addinivalue_line("markers", "real_data: reads real dataset mirrors on this machine (still a tmp cache)")
    # The tests' models are tiny: one thread is faster than two fighting over a busy machine, and repeatable.
    torch.set_num_threads(1)
    # Subprocesses (scripts in tmp_path, kernels) must import this checkout's lsuvlib, not whichever one pip installed.
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    # Hypothesis keeps an example database and constants under ./.hypothesis; keep the project tree clean.
    global _HYPOTHESIS_HOME
    if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        from hypothesis.configuration import set_hypothesis_home_dir

        _HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="lsuv-hypothesis-")
        set_hypothesis_home_dir(_HYPOTHESIS_HOME)


def pytest_unconfigure(config):
    if _HYPOTHESIS_HOME:
        shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def hermetic_data(request, monkeypatch, tmp_path):
    """Point every data location into ``tmp_path`` and switch the Hub off."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("LSUV_DATA_DIR", raising=False)
    cache = tmp_path / "_lsuv_cache"
    monkeypatch.setenv("LSUV_CACHE_DIR", str(cache))
    monkeypatch.setattr(lsdata, "PROJECT_DATA", tmp_path / "_project_data")
    if request.node.get_closest_marker("real_data") is None:
        for key, spec in list(lsdata.DATASETS.items()):
            if spec.system_dirs:
                fake = tuple(str(tmp_path / "_system" / Path(d).name) for d in spec.system_dirs)
                monkeypatch.setitem(lsdata.DATASETS, key, replace(spec, system_dirs=fake))
    return cache


@pytest.fixture
def cache_dir(hermetic_data) -> Path:
    """The (temporary) ``$LSUV_CACHE_DIR`` of this test."""
    return hermetic_data


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    """A temporary mirror root listed in ``$LSUV_DATA_DIR``; put ``mnist/`` etc. inside it."""
    root = tmp_path / "mirror"
    root.mkdir()
    monkeypatch.setenv("LSUV_DATA_DIR", str(root))
    return root


# ----------------------------------------------------------------------------- IDX files

def idx_bytes(arr: np.ndarray) -> bytes:
    """The big-endian IDX encoding of a uint8 array: magic 2051 for images [N, H, W], 2049 for labels [N]."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    magic = {3: 2051, 1: 2049}[arr.ndim]
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_folder(folder: Path, x_train, y_train, x_test, y_test, gz: bool = True) -> dict[str, str]:
    """Write the four canonical MNIST files into ``folder``; returns the MD5 of each uncompressed file."""
    folder.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for name, arr in zip(lsdata.IDX_FILES, (x_train, y_train, x_test, y_test)):
        raw = idx_bytes(arr)
        md5[name] = hashlib.md5(raw).hexdigest()
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(raw)
        else:
            (folder / name).write_bytes(raw)
    return md5


def random_digits(n_train: int = 20, n_test: int = 10, size: int = 28, seed: int = 0):
    """Random uint8 images and labels 0..9 (every class present in the training split)."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (n_train, size, size), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, size, size), dtype=np.uint8)
    y_train = (np.arange(n_train) * 7 % 10).astype(np.uint8)
    y_test = rng.integers(0, 10, n_test).astype(np.uint8)
    return x_train, y_train, x_test, y_test


@pytest.fixture
def idx_arrays():
    return random_digits()


@pytest.fixture
def mnist_mirror(mirror, idx_arrays) -> dict:
    """Synthetic gzipped MNIST in ``$LSUV_DATA_DIR/mnist``: arrays, folder and MD5s."""
    folder = mirror / "mnist"
    md5 = write_idx_folder(folder, *idx_arrays)
    return dict(folder=folder, arrays=idx_arrays, md5=md5)


@pytest.fixture
def trust_md5(monkeypatch):
    """Make the given MD5s the canonical ones for a dataset, so ``verify=True`` accepts test files."""
    def _trust(name: str, md5: dict[str, str]) -> None:
        monkeypatch.setitem(lsdata.DATASETS, name, replace(lsdata.DATASETS[name], md5=dict(md5)))
    return _trust


# ----------------------------------------------------------------------------- a tiny learnable problem

def toy_imageset(n_train: int = 256, n_test: int = 64, n_classes: int = 4, size: int = 8, seed: int = 0) -> ImageSet:
    """Class ``c`` lights up quadrant ``c`` of an 8x8 image, plus noise: easy, but not trivial at step 0."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.arange(n) % n_classes
        y = y[torch.randperm(n, generator=g)]
        x = torch.randint(0, 90, (n, 1, size, size), generator=g)
        h = size // 2
        for c in range(n_classes):
            r, col = divmod(c, 2)
            x[y == c, :, r * h:(r + 1) * h, col * h:(col + 1) * h] += 120
        return x.clamp(0, 255).to(torch.uint8), y.long()

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return ImageSet("toy", x_train, y_train, x_test, y_test, tuple(str(c) for c in range(n_classes)), "memory")


def toy_model(size: int = 8, hidden: int = 16, n_classes: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


@pytest.fixture
def toy() -> ImageSet:
    return toy_imageset()


@pytest.fixture
def make_toy_model():
    return toy_model


@pytest.fixture
def write_idx():
    """``write_idx(folder, x_train, y_train, x_test, y_test, gz=True) -> md5s``."""
    return write_idx_folder


@pytest.fixture
def encode_idx():
    """``encode_idx(uint8 array) -> bytes`` in the IDX format."""
    return idx_bytes


@pytest.fixture(scope="module")
def toy_shared() -> ImageSet:
    """The toy dataset for module-scoped fixtures (read-only: do not modify its tensors)."""
    return toy_imageset()


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything opens an internet (AF_INET/AF_INET6) connection."""
    import socket

    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"test tried to open a network connection to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "create_connection",
                        lambda address, *a, **k: (_ for _ in ()).throw(
                            AssertionError(f"test tried to open a network connection to {address!r}")))


def default_sigint() -> None:
    """``preexec_fn`` for a subprocess a test interrupts: a suite started with SIGINT ignored
    (``nohup``, many CI runners) would otherwise pass that on, and the test's Ctrl-C would go unseen."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def vouch_for(results_dir: Path, build_id: str = "20261201T120000Z-2") -> None:
    """A build manifest naming every results file in `results_dir`, as tools/build_book.py writes it."""
    import json

    from lsuvlib.results import BUILD_MANIFEST, MANIFEST_SCHEMA, file_sha256

    chapters = {}
    for path in sorted(results_dir.glob("*.json")):
        if path.name != BUILD_MANIFEST:
            chapters[path.stem] = dict(status="ok", build_id=json.loads(path.read_text())["build"],
                                       results_sha256=file_sha256(path), finished="2026-12-01T12:05:00+00:00")
    (results_dir / BUILD_MANIFEST).write_text(json.dumps(dict(
        schema=MANIFEST_SCHEMA, build_id=build_id, started="2026-12-01T12:00:00+00:00", status="finished",
        profile="smoke", chapters=chapters)))
