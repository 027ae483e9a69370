"""Integration: the real MNIST and Fashion-MNIST files on this machine, parsed, verified and cached.

These read real mirrors (skipped, with the reason, when a mirror is absent) but still cache
into the test's temporary ``$LSUV_CACHE_DIR``, never the project's ``data/cache``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lsuvlib import data as lsdata
from lsuvlib.data import load_images

pytestmark = pytest.mark.real_data

# Read before conftest's autouse fixture hides $LSUV_DATA_DIR from each test.
_ENV_ROOTS = [Path(p) for p in os.environ.get("LSUV_DATA_DIR", "").split(os.pathsep) if p]
SHARED = Path("/work/shared/datasets")
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def _has_idx(folder: Path) -> bool:
    return folder.is_dir() and all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in lsdata.IDX_FILES)


def _mnist_root() -> Path | None:
    for root in [*_ENV_ROOTS, SHARED]:
        if any(_has_idx(root / sub) for sub in lsdata.DATASETS["mnist"].folders):
            return root
    return None


MNIST_ROOT = _mnist_root()
needs_mnist = pytest.mark.skipif(
    MNIST_ROOT is None, reason=f"real MNIST not found: put the four IDX files in {SHARED}/mnist "
                               "or set LSUV_DATA_DIR to a folder holding mnist/")
needs_fashion = pytest.mark.skipif(
    not _has_idx(FASHION_SYSTEM_DIR), reason=f"Fashion-MNIST not found in {FASHION_SYSTEM_DIR} "
                                             "(install Debian's dataset-fashion-mnist package)")

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def check_shapes(ds, n_train=60000, n_test=10000):
    assert ds.x_train.shape == (n_train, 1, 28, 28) and ds.x_test.shape == (n_test, 1, 28, 28)
    assert ds.x_train.dtype == ds.x_test.dtype == torch.uint8
    assert ds.y_train.shape == (n_train,) and ds.y_test.shape == (n_test,)
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64


def assert_same(a, b):
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


@needs_mnist
def test_real_mnist(monkeypatch, cache_dir):
    monkeypatch.setenv("LSUV_DATA_DIR", str(MNIST_ROOT))
    ds = load_images("mnist")  # verify=True: the files' MD5s must be the canonical ones
    assert "cached" not in ds.source and Path(ds.source).parent == MNIST_ROOT
    check_shapes(ds)
    assert ds.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(ds.y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(ds.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    mean, std = ds.stats()
    assert mean == pytest.approx(0.130660, abs=1e-5)
    assert std == pytest.approx(0.308108, abs=1e-5)
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0

    assert ds.origin == "local mirror in LSUV_DATA_DIR, MD5-checked"
    again = load_images("mnist")
    assert "cached" in again.source and str(cache_dir / "mnist.pt") in again.source
    assert again.origin == "cache of local mirror in LSUV_DATA_DIR, MD5-checked"
    assert str(MNIST_ROOT) not in repr(again) and str(cache_dir) not in again._repr_markdown_()
    assert_same(ds, again)
    assert sorted(p.name for p in cache_dir.iterdir()) == ["mnist.pt"]


@needs_fashion
def test_real_fashion_mnist_from_the_debian_folder(cache_dir):
    assert "LSUV_DATA_DIR" not in os.environ  # found through the system folder alone
    ds = load_images("fashion_mnist")
    assert ds.source == str(FASHION_SYSTEM_DIR)
    check_shapes(ds)
    assert torch.bincount(ds.y_train, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [1000] * 10
    assert ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10
    mean, std = ds.stats()
    assert 0.2 < mean < 0.4 and 0.3 < std < 0.4  # Fashion-MNIST is brighter than MNIST (about 0.286 / 0.353)

    assert ds.origin == "Debian package dataset-fashion-mnist, MD5-checked"
    again = load_images("fashion-mnist")
    assert "cached" in again.source and str(FASHION_SYSTEM_DIR) in again.source
    assert repr(again) == ("ImageSet('fashion_mnist', train=(60000, 1, 28, 28), test=(10000, 1, 28, 28), "
                           "origin='cache of Debian package dataset-fashion-mnist, MD5-checked')")
    assert_same(ds, again)
    assert lsdata.best_available() == "fashion_mnist"  # SVHN absent: the book's stand-in rule picks it


@needs_fashion
def test_truncated_fashion_mnist_in_the_mirror_falls_through_to_the_debian_copy(tmp_path, monkeypatch, cache_dir):
    """Issue 10 item 3, on the real files: a cut mirror copy is reported and Debian's copy used."""
    mirror = tmp_path / "mirror" / "fashion-mnist"
    mirror.mkdir(parents=True)
    for f in lsdata.IDX_FILES:
        blob = (FASHION_SYSTEM_DIR / f"{f}.gz").read_bytes()
        (mirror / f"{f}.gz").write_bytes(blob[: len(blob) // 2] if f == "train-images-idx3-ubyte" else blob)
    monkeypatch.setenv("LSUV_DATA_DIR", str(tmp_path / "mirror"))
    with pytest.warns(lsdata.DataWarning, match="train-images-idx3-ubyte.gz could not be read") as rec:
        ds = lsdata.prepare("auto", size=None)
    assert ds.name == "fashion_mnist" and ds.source == str(FASHION_SYSTEM_DIR)
    assert any(str(mirror / "train-images-idx3-ubyte.gz") in str(w.message) for w in rec)
    check_shapes(ds)
