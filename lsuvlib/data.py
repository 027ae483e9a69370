"""Image datasets as whole uint8 tensors: found in local mirrors or on the Hugging Face Hub, cached once.

Where a dataset is looked for, in order:

1. each folder in ``$LSUV_DATA_DIR`` (``os.pathsep``-separated), then the project's ``data/``
   folder, in a sub-folder named after the dataset (``mnist/``, ``fashion-mnist/``, ``svhn/``)
   holding the canonical files: IDX ``.gz`` for MNIST and Fashion-MNIST,
   ``train_32x32.mat`` / ``test_32x32.mat`` for SVHN;
2. system folders (Debian's ``dataset-fashion-mnist`` package installs
   ``/usr/share/datasets/fashion-mnist``);
3. the Hugging Face Hub through ``datasets``, unless ``HF_HUB_OFFLINE=1``.

The converted tensors are cached in ``$LSUV_CACHE_DIR`` (default: ``data/cache`` in the
project) so a second load is a single ``torch.load``.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_open

PROJECT_DATA = Path(__file__).resolve().parent.parent / "data"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
CACHE_VERSION = 1
AUTO_ORDER = ("svhn", "fashion_mnist", "mnist")  # the blog's dataset first, then the closest stand-ins


class DataError(RuntimeError):
    """A dataset could not be found, verified or parsed."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folders: tuple[str, ...]          # sub-folder names tried inside each mirror root
    files: tuple[str, ...]            # canonical file names (IDX names without .gz)
    md5: dict[str, str]               # MD5 of each canonical file, uncompressed
    hub: tuple[str, str | None]       # Hugging Face repo id and config
    classes: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()


DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist", ("mnist", "MNIST"), IDX_FILES,
        {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
         "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
         "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
         "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
        ("ylecun/mnist", None), DIGITS),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", ("fashion-mnist", "fashion_mnist", "FashionMNIST"), IDX_FILES,
        # MD5s of the canonical uncompressed files, as shipped by Debian's dataset-fashion-mnist.
        {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
         "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
         "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
         "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
        ("zalando-datasets/fashion_mnist", None),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        system_dirs=("/usr/share/datasets/fashion-mnist",)),
    "svhn": DatasetSpec(
        "svhn", ("svhn", "SVHN"), SVHN_FILES,
        {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
         "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"},
        ("ufldl-stanford/svhn", "cropped_digits"), DIGITS),
}


@dataclass
class ImageSet:
    """Train and test images as ``uint8 [N, 1, H, W]`` with ``int64`` labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"ImageSet({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"source={self.source!r})")

    def stats(self) -> tuple[float, float]:
        """Mean and std of the training pixels on the [0, 1] scale (never the test split).

        Computed exactly from the count of each of the 256 byte values, which avoids
        a float copy of the whole split.
        """
        counts = torch.bincount(self.x_train.flatten(), minlength=256).to(torch.float64)
        values = torch.arange(256, dtype=torch.float64) / 255
        n = counts.sum()
        mean = (counts * values).sum() / n
        var = (counts * (values - mean) ** 2).sum() / (n - 1)
        return mean.item(), var.sqrt().item()

    def padded(self, size: int) -> "ImageSet":
        """Zero-pad each image symmetrically to ``size`` x ``size`` (the notebook pads MNIST 28 -> 32)."""
        h = self.x_train.shape[-1]
        if size == h:
            return self
        if size < h:
            raise ValueError(f"cannot pad {h}x{h} images down to {size}x{size}")
        lo, hi = (size - h) // 2, (size - h + 1) // 2
        pad = lambda x: F.pad(x, (lo, hi, lo, hi))  # noqa: E731
        return replace(self, x_train=pad(self.x_train), x_test=pad(self.x_test),
                       notes=[*self.notes, f"padded {h}x{h} -> {size}x{size}"])

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "ImageSet":
        """The first ``n_train`` / ``n_test`` images (``None`` keeps the split whole)."""
        for label, n in (("n_train", n_train), ("n_test", n_test)):
            if n is not None and n < 1:
                raise ValueError(f"{label} must be a positive number of images, got {n}")
        if n_train is None and n_test is None:
            return self
        return replace(self, x_train=self.x_train[:n_train], y_train=self.y_train[:n_train],
                       x_test=self.x_test[:n_test], y_test=self.y_test[:n_test],
                       notes=[*self.notes, f"subset: {len(self.x_train[:n_train])} train / "
                                           f"{len(self.x_test[:n_test])} test images"])


def rgb_to_gray(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of ``uint8 [..., 3]`` pixels, bit-identical to PIL's ``convert('L')``.

    PIL rounds ``(19595 R + 38470 G + 7471 B) / 2**16`` to nearest; so do we, in int32.
    """
    t = torch.as_tensor(np.asarray(rgb)).to(torch.int32)
    luma = (t[..., 0] * 19595 + t[..., 1] * 38470 + t[..., 2] * 7471 + 0x8000) >> 16
    return luma.to(torch.uint8)


# ----------------------------------------------------------------------------- parsers

def _md5_of_gunzip(src: Path, dst: Path) -> str:
    """Decompress ``src`` into ``dst`` and return the MD5 of the uncompressed bytes."""
    md5 = hashlib.md5()
    with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            md5.update(chunk)
            fout.write(chunk)
    return md5.hexdigest()


def _md5(path: Path) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
    return md5.hexdigest()


def _check_md5(spec: DatasetSpec, fname: str, got: str, path: Path, verify: bool) -> None:
    want = spec.md5.get(fname)
    if verify and want and got != want:
        raise DataError(f"{path} is not the canonical {spec.name} file {fname}: its MD5 is {got}, "
                        f"expected {want}. The file may be truncated or a different release; "
                        "replace it, or pass verify=False to use it anyway.")


def read_idx_folder(folder: Path, spec: DatasetSpec, verify: bool = True) -> dict[str, torch.Tensor]:
    """Parse the four IDX files (``.gz`` or plain) with torchvision's reader."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fname, key in zip(IDX_FILES, ("x_train", "y_train", "x_test", "y_test")):
            gz = folder / f"{fname}.gz"
            src = gz if gz.exists() else folder / fname
            try:
                if src == gz:
                    path = Path(tmp) / fname
                    digest = _md5_of_gunzip(gz, path)
                else:
                    path, digest = src, _md5(src)
                _check_md5(spec, fname, digest, src, verify)
                t = read_image_file(str(path)) if "images" in fname else read_label_file(str(path))
            except DataError:
                raise
            except Exception as e:  # gzip, size and magic-number errors all mean a bad file
                raise DataError(f"{src} could not be read as an IDX file: {e}") from e
            out[key] = t.unsqueeze(1).contiguous() if t.ndim == 3 else t.long()
    _check_pairs(out, folder)
    return out


def read_svhn_folder(folder: Path, spec: DatasetSpec, verify: bool = True) -> dict[str, torch.Tensor]:
    """Parse SVHN's ``train_32x32.mat`` / ``test_32x32.mat``: ``X`` is ``[32, 32, 3, N]``, label 10 means digit 0."""
    from scipy.io import loadmat

    out = {}
    for fname, split in zip(SVHN_FILES, ("train", "test")):
        path = folder / fname
        _check_md5(spec, fname, _md5(path), path, verify)
        try:
            mat = loadmat(path)
            x, y = mat["X"], mat["y"]
        except Exception as e:
            raise DataError(f"{path} could not be read as an SVHN .mat file: {e}") from e
        if x.ndim != 4 or x.shape[2] != 3:
            raise DataError(f"{path}: expected X of shape [32, 32, 3, N], got {list(x.shape)}")
        out[f"x_{split}"] = rgb_to_gray(np.moveaxis(x, 3, 0)).unsqueeze(1).contiguous()
        labels = torch.as_tensor(y.reshape(-1).astype(np.int64))
        out[f"y_{split}"] = torch.where(labels == 10, 0, labels)
    _check_pairs(out, folder)
    return out


def from_hub_dataset(dsd, gray: bool = True) -> dict[str, torch.Tensor]:
    """Convert a ``datasets.DatasetDict`` with ``image`` and ``label`` columns into tensors.

    Colour images go through :func:`rgb_to_gray`, the same luma as the ``.mat`` path.
    """
    out = {}
    for split in ("train", "test"):
        if split not in dsd:
            raise DataError(f"the Hub dataset has no '{split}' split (it has {sorted(dsd)})")
        ds = dsd[split]
        imgs = [np.asarray(im.convert("RGB") if gray and im.mode not in ("L", "RGB") else im) for im in ds["image"]]
        arr = np.stack(imgs)
        x = rgb_to_gray(arr) if arr.ndim == 4 else torch.as_tensor(arr)
        out[f"x_{split}"] = x.unsqueeze(1).contiguous()
        out[f"y_{split}"] = torch.as_tensor(np.asarray(ds["label"], dtype=np.int64))
    _check_pairs(out, "the Hub dataset")
    return out


def _check_pairs(t: dict[str, torch.Tensor], where) -> None:
    for split in ("train", "test"):
        x, y = t[f"x_{split}"], t[f"y_{split}"]
        if len(x) != len(y):
            raise DataError(f"{where}: {len(x)} {split} images but {len(y)} labels")


# ----------------------------------------------------------------------------- sources

def mirror_roots() -> list[Path]:
    """Folders searched for local copies, in order: ``$LSUV_DATA_DIR`` entries, then ``data/``."""
    env = os.environ.get("LSUV_DATA_DIR", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p] + [PROJECT_DATA]


def cache_dir() -> Path:
    return Path(os.environ.get("LSUV_CACHE_DIR") or PROJECT_DATA / "cache")


def _has_files(folder: Path, spec: DatasetSpec) -> list[str]:
    """Names of the canonical files missing from ``folder`` (IDX files may be gzipped)."""
    missing = []
    for f in spec.files:
        if not ((folder / f).exists() or (folder / f"{f}.gz").exists()):
            missing.append(f)
    return missing


def _local_candidates(spec: DatasetSpec) -> list[Path]:
    dirs = [root / sub for root in mirror_roots() for sub in spec.folders]
    return dirs + [Path(d) for d in spec.system_dirs]


def _read_source(spec: DatasetSpec, verify: bool, hub: bool) -> tuple[dict[str, torch.Tensor], str]:
    looked = []
    for folder in _local_candidates(spec):
        missing = _has_files(folder, spec) if folder.is_dir() else None
        if missing == []:
            reader = read_svhn_folder if spec.name == "svhn" else read_idx_folder
            return reader(folder, spec, verify), str(folder)
        looked.append(f"  - {folder}: " + ("no such folder" if missing is None else f"missing {', '.join(missing)}"))
    repo, config = spec.hub
    if hub and os.environ.get("HF_HUB_OFFLINE", "") not in ("1", "true", "True"):
        try:
            import datasets

            dsd = datasets.load_dataset(repo, config)
            return from_hub_dataset(dsd), f"huggingface:{repo}" + (f"/{config}" if config else "")
        except Exception as e:  # offline, missing package, or the Hub said no
            looked.append(f"  - Hugging Face Hub {repo}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    else:
        looked.append(f"  - Hugging Face Hub {repo}: skipped (offline: HF_HUB_OFFLINE is set or hub=False)")
    names = ", ".join(spec.files) + (" (each may be .gz)" if spec.files == IDX_FILES else "")
    raise DataError(
        f"Dataset '{spec.name}' was not found. Looked in:\n" + "\n".join(looked) +
        f"\nTo provide it, put {names} in a folder named '{spec.folders[0]}' inside "
        f"{PROJECT_DATA} or inside a folder listed in $LSUV_DATA_DIR, or run online so the Hub copy can be fetched.")


# ----------------------------------------------------------------------------- cache

def _digest(t: dict[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(t):
        h.update(k.encode())
        h.update(t[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_cache(path: Path, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Write atomically: a crash mid-write leaves the old cache (or none), never half a file."""
    payload = {**tensors, "digest": _digest(tensors), "source": source, "version": CACHE_VERSION}
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def _load_cache(path: Path) -> tuple[dict[str, torch.Tensor], str] | None:
    """The cached tensors, or ``None`` (with a warning) when the file is missing, stale or corrupt."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, weights_only=True)
        tensors = {k: payload[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        if payload.get("version") != CACHE_VERSION or payload.get("digest") != _digest(tensors):
            raise ValueError("its checksum does not match its contents")
        return tensors, payload["source"]
    except Exception as e:
        warnings.warn(f"Ignoring cache {path} ({type(e).__name__}: {e}); rebuilding it from the source files.")
        return None


def load_images(name: str, *, verify: bool = True, cache: bool = True, hub: bool = True) -> ImageSet:
    """Load a dataset by name (``mnist``, ``fashion_mnist`` or ``svhn``) as an :class:`ImageSet`.

    SVHN is converted to grayscale with PIL's luma formula, as the blog did. ``verify``
    checks canonical files against their known MD5; ``cache`` reads and writes the
    converted tensors under :func:`cache_dir`; ``hub=False`` never touches the network.
    """
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}.")
    spec = DATASETS[key]
    path = cache_dir() / f"{key}.pt"
    hit = _load_cache(path) if cache else None
    if hit is not None:
        tensors, source = hit
        source = f"{source} (cached in {path})"
    else:
        tensors, source = _read_source(spec, verify, hub)
        if cache:
            _save_cache(path, tensors, source)
    return ImageSet(key, tensors["x_train"], tensors["y_train"], tensors["x_test"], tensors["y_test"],
                    spec.classes, source)


def available(name: str) -> bool:
    """True when ``name`` can be loaded without the network (cache or a local copy)."""
    spec = DATASETS[name]
    return (cache_dir() / f"{name}.pt").exists() or any(
        d.is_dir() and not _has_files(d, spec) for d in _local_candidates(spec))


def best_available(preferred: tuple[str, ...] = AUTO_ORDER) -> str:
    """The first dataset in ``preferred`` that is on this machine (the book's stand-in rule)."""
    for name in preferred:
        if available(name):
            return name
    return preferred[0]


def clear_cache(name: str | None = None) -> None:
    """Delete one cached dataset, or all of them."""
    if name is None:
        shutil.rmtree(cache_dir(), ignore_errors=True)
    else:
        (cache_dir() / f"{name}.pt").unlink(missing_ok=True)


def _load_first(names: tuple[str, ...]) -> ImageSet:
    """The first of ``names`` that loads from anywhere (cache, mirror, system folder or Hub)."""
    errors = []
    for name in names:
        try:
            return load_images(name)
        except DataError as e:
            errors.append(str(e))
    raise DataError("None of the datasets " + ", ".join(names) + " could be loaded:\n\n" + "\n\n".join(errors))


def prepare(dataset: str = "auto", size: int | None = 32, n_train: int | None = None,
            n_test: int | None = None) -> ImageSet:
    """Load a dataset for a chapter, then pad and subset it.

    ``"auto"`` takes the first of SVHN, Fashion-MNIST and MNIST that can be loaded,
    locally or from the Hub.

    The blog's CNN expects 32x32 inputs (SVHN's size), so 28x28 images are padded to it.
    """
    ds = _load_first(AUTO_ORDER) if dataset == "auto" else load_images(dataset)
    if size is not None:
        ds = ds.padded(size)
    return ds.subset(n_train, n_test)
