"""Image datasets as whole uint8 tensors: found in local mirrors or on the Hugging Face Hub, cached once.

Where a dataset is looked for, in order:

1. each folder in `$LSUV_DATA_DIR` (`os.pathsep`-separated), then the project's `data/`
   folder, in a sub-folder named after the dataset (`mnist/`, `fashion-mnist/`, `svhn/`)
   holding the canonical files: IDX (`.gz` or plain) for MNIST and Fashion-MNIST,
   `train_32x32.mat` / `test_32x32.mat` for SVHN;
2. system folders (Debian's `dataset-fashion-mnist` package installs
   `/usr/share/datasets/fashion-mnist`);
3. the Hugging Face Hub through `datasets`, unless `HF_HUB_OFFLINE=1`.

A copy that fails its checks (MD5, truncation, format) is reported with a warning naming
the file, and the next source of the *same* dataset is tried. `prepare("auto")` moves on
to another dataset only when no source of the preferred one works, and says so (a warning
when a copy was broken, and a sentence in `ImageSet.notes` either way).

The converted tensors are cached in `$LSUV_CACHE_DIR` (default: `data/cache` in the
project) so a second load is a single `torch.load`. A cache file records what it was
built from (each source file's size and timestamps, the `verify` flag, the expected
MD5s and the cache format) and is used only when those inputs are unchanged; a cache of
MD5-checked or Hub data also serves when no local copy is left. A cache that cannot be
written (read-only folder, full disk, file-size limit) costs a warning, never the data.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import struct
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_open
from .runtime import check_positive

PROJECT_DATA = Path(__file__).resolve().parent.parent / "data"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
CACHE_VERSION = 2  # 2: payload records the inputs' key, origin and trust; digest is SHA-256
AUTO_ORDER = ("svhn", "fashion_mnist", "mnist")  # the blog's dataset first, then the closest stand-ins
TENSOR_KEYS = ("x_train", "y_train", "x_test", "y_test")
CACHE_FIELDS = (*TENSOR_KEYS, "digest", "source", "version", "key", "origin", "trusted", "skipped")
MIN_PER_CLASS = 5  # a split with fewer images per class than this gives accuracies that mean nothing


class DataError(RuntimeError):
    """A dataset could not be found, verified or parsed; the message lists every place looked and why.

    Attributes:
        brief: the problem without machine paths, for a page.
        missing: true when no copy was found at all (not a copy that failed its checks).
        failures: the full message of each copy that was found but failed.
    """

    def __init__(self, message: str, *, brief: str | None = None, missing: bool = False,
                 failures: list[str] | None = None):
        super().__init__(message)
        self.brief = brief or message
        self.missing = missing
        self.failures = list(failures or [])


class DataConfigError(DataError):
    """`$LSUV_CACHE_DIR` points somewhere that cannot be a folder; the message says how to fix it."""


class DataWarning(UserWarning):
    """A data source was skipped or replaced, or a split is too small; the message says which and why."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folders: tuple[str, ...]          # sub-folder names tried inside each mirror root
    files: tuple[str, ...]            # canonical file names (IDX names without .gz)
    md5: dict[str, str]               # MD5 of each canonical file, uncompressed
    hub: tuple[str, str | None]       # Hugging Face repo id and config
    classes: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    title: str = ""                   # the name a reader knows ("Fashion-MNIST")
    system_labels: tuple[str, ...] = ()  # what each system folder is, without its path


DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist", ("mnist", "MNIST"), IDX_FILES,
        {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
         "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
         "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
         "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
        ("ylecun/mnist", None), DIGITS, title="MNIST"),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", ("fashion-mnist", "fashion_mnist", "FashionMNIST"), IDX_FILES,
        # MD5s of the canonical uncompressed files, as shipped by Debian's dataset-fashion-mnist.
        {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
         "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
         "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
         "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
        ("zalando-datasets/fashion_mnist", None),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        system_dirs=("/usr/share/datasets/fashion-mnist",), title="Fashion-MNIST",
        system_labels=("Debian package dataset-fashion-mnist",)),
    "svhn": DatasetSpec(
        "svhn", ("svhn", "SVHN"), SVHN_FILES,
        {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
         "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"},
        ("ufldl-stanford/svhn", "cropped_digits"), DIGITS, title="SVHN"),
}


def _title(name: str) -> str:
    spec = DATASETS.get(name)
    return (spec.title or spec.name) if spec else name


def _kind_of_path(source: str) -> str:
    """A path-free label for an ImageSet made by hand (`source` may be anything)."""
    if not source:
        return "unknown source"
    if os.sep in source or (os.altsep and os.altsep in source):
        return "files on this machine"  # the path itself stays in .source
    return source


def _images(n: int, split: str = "") -> str:
    return f"{n:,} {split}{' ' if split else ''}image{'' if n == 1 else 's'}"


@dataclass
class ImageSet:
    """A dataset's training and test images as `uint8` tensors of shape `(N, 1, H, W)`, with `int64` labels.

    Attributes:
        name: `"mnist"`, `"fashion_mnist"` or `"svhn"`.
        x_train: training images.
        y_train: training labels, shape `(N,)`.
        x_test: test images.
        y_test: test labels.
        classes: the class names, in label order.
        source: where the data came from on this machine (a full path, for results files).
        notes: sentences a page should show: padding, subsets, a fallback to another dataset.
        origin: `source` without paths, for pages, e.g. "cache of Debian package
            dataset-fashion-mnist, MD5-checked".
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    source: str = ""
    notes: list[str] = field(default_factory=list)
    origin: str = ""

    @property
    def source_kind(self) -> str:
        """Where the data came from, without machine paths."""
        return self.origin or _kind_of_path(self.source)

    def _sizes(self) -> str:
        shape = "×".join(str(d) for d in self.x_train.shape[1:])
        return (f"{len(self.x_train):,} training and {len(self.x_test):,} test images "
                f"({shape}, {str(self.x_train.dtype).removeprefix('torch.')}), {len(self.classes)} classes")

    @property
    def title(self) -> str:
        """The dataset's name as prose spells it ("Fashion-MNIST"), for pages."""
        return _title(self.name)

    def describe(self) -> str:
        """One paragraph for a page: name, sizes, kind of source and notes, no machine paths."""
        text = f"{_title(self.name)}: {self._sizes()}. Source: {self.source_kind}."
        if self.notes:
            text += " " + " ".join(n if n.endswith(".") else f"{n}." for n in self.notes)
        return text

    def __repr__(self) -> str:
        return (f"ImageSet({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"origin={self.source_kind!r})")

    def _repr_markdown_(self) -> str:
        lines = [f"**{_title(self.name)}**: {self._sizes()}.  ", f"Source: {self.source_kind}."]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)

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
        """Zero-pad each image symmetrically to `size` x `size` (the notebook pads MNIST 28 -> 32)."""
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
        """The first `n_train` / `n_test` images (`None` keeps the split whole).

        Asking for more images than a split has keeps the split whole, and a note says so.
        """
        notes = []
        for label, n, have, split in (("n_train", n_train, len(self.x_train), "training"),
                                      ("n_test", n_test, len(self.x_test), "test")):
            if n is not None:
                check_positive(label, n, whole=True)
                if n > have:
                    notes.append(f"{label}={n:,} asked for more than the {_images(have, split)} there are, "
                                 f"so all {have:,} are used")
        if n_train is None and n_test is None:
            return self
        x_train, x_test = self.x_train[:n_train], self.x_test[:n_test]
        return replace(self, x_train=x_train, y_train=self.y_train[:n_train], x_test=x_test,
                       y_test=self.y_test[:n_test],
                       notes=[*self.notes, f"subset: {len(x_train)} train / {len(x_test)} test images", *notes])


def rgb_to_gray(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of `uint8 [..., 3]` pixels, bit-identical to PIL's `convert('L')`.

    PIL rounds $(19595 R + 38470 G + 7471 B) / 2^{16}$ to nearest; so do we, in int32.
    """
    t = torch.as_tensor(np.asarray(rgb)).to(torch.int32)
    luma = (t[..., 0] * 19595 + t[..., 1] * 38470 + t[..., 2] * 7471 + 0x8000) >> 16
    return luma.to(torch.uint8)


# ----------------------------------------------------------------------------- parsers

def _check_md5(spec: DatasetSpec, fname: str, got: str, path: Path, verify: bool) -> bool:
    """True when `got` is the canonical MD5 of `fname`; with `verify`, a mismatch is a `DataError`."""
    want = spec.md5.get(fname)
    if verify and want and got != want:
        raise DataError(f"{path} is not the canonical {spec.name} file {fname}: its MD5 is {got}, "
                        f"expected {want}. The file may be truncated or a different release; "
                        "replace it, or pass verify=False to use it anyway.",
                        brief=f"{path.name} has MD5 {got}, not the canonical {want}")
    return bool(want) and got == want


def _unreadable(path: Path, e: OSError) -> DataError:
    return DataError(f"{path} could not be read: {e}", brief=f"{path.name} could not be read ({e.strerror})")


def _parse_idx(raw: bytes, ndim: int) -> torch.Tensor:
    """An IDX array of unsigned bytes: magic `0x0800 + ndim`, `ndim` big-endian sizes, then the data.

    Parsed in memory (torchvision's reader wants a file, which for a `.gz` means an
    unpacked copy on disk, and a file-size limit can forbid that).
    """
    header = 4 + 4 * ndim
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != 0x0800 + ndim:
        raise ValueError(f"it does not start like an IDX file of {ndim}-d unsigned bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(shape):
        raise ValueError(f"its header promises {math.prod(shape):,} bytes of data, it holds {len(raw) - header:,}")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header).view(shape)


def _read_idx(folder: Path, spec: DatasetSpec, verify: bool) -> tuple[dict[str, torch.Tensor], bool]:
    """The four IDX files as tensors, and whether every file had its canonical MD5."""
    out, canonical = {}, True
    for fname, key in zip(IDX_FILES, TENSOR_KEYS):
        path = _file(folder, fname, spec)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise _unreadable(path, e) from e
        try:
            raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
            canonical &= _check_md5(spec, fname, hashlib.md5(raw).hexdigest(), path, verify)
            t = _parse_idx(raw, 3 if key.startswith("x") else 1)
        except (OSError, EOFError, zlib.error, ValueError) as e:  # not gzip, cut short, or not IDX
            raise DataError(f"{path} could not be read as an IDX file: {e}",
                            brief=f"{path.name} could not be read as an IDX file ({e})") from e
        out[key] = t.unsqueeze(1) if t.ndim == 3 else t.long()
    _check_pairs(out, folder)
    return out, canonical


def _read_svhn(folder: Path, spec: DatasetSpec, verify: bool) -> tuple[dict[str, torch.Tensor], bool]:
    """SVHN's `.mat` files: `X` is `[32, 32, 3, N]` (made gray as PIL would), label 10 means digit 0."""
    from scipy.io import loadmat

    out, canonical = {}, True
    for fname, split in zip(SVHN_FILES, ("train", "test")):
        path = folder / fname
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "md5").hexdigest()
        except OSError as e:
            raise _unreadable(path, e) from e
        canonical &= _check_md5(spec, fname, digest, path, verify)
        try:
            mat = loadmat(path)
            x, y = mat["X"], mat["y"]
        except Exception as e:  # noqa: BLE001  scipy raises many types for a file that is not .mat
            raise DataError(f"{path} could not be read as an SVHN .mat file: {e}",
                            brief=f"{fname} could not be read as an SVHN .mat file ({e})") from e
        if x.ndim != 4 or x.shape[2] != 3:
            raise DataError(f"{path}: expected X of shape [32, 32, 3, N], got {list(x.shape)}",
                            brief=f"{fname}: expected X of shape [32, 32, 3, N], got {list(x.shape)}")
        out[f"x_{split}"] = rgb_to_gray(np.moveaxis(x, 3, 0)).unsqueeze(1).contiguous()
        labels = torch.as_tensor(y.reshape(-1).astype(np.int64))
        out[f"y_{split}"] = torch.where(labels == 10, 0, labels)
    _check_pairs(out, folder)
    return out, canonical


def from_hub_dataset(dsd, gray: bool = True) -> dict[str, torch.Tensor]:
    """Convert a `datasets.DatasetDict` with `image` and `label` columns into tensors.

    Colour images go through `rgb_to_gray`, the same luma as the `.mat` path.
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
            raise DataError(f"{where}: {len(x)} {split} images but {len(y)} labels",
                            brief=f"{len(x)} {split} images but {len(y)} labels")


# ----------------------------------------------------------------------------- sources

def _env_roots() -> list[Path]:
    env = os.environ.get("LSUV_DATA_DIR", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p]


def data_dir_problems() -> list[str]:
    """One sentence for each `$LSUV_DATA_DIR` entry that cannot be what the user meant."""
    problems = []
    subfolders = {sub for spec in DATASETS.values() for sub in spec.folders}
    for root in _env_roots():
        if not root.exists():
            problems.append(f"LSUV_DATA_DIR lists {root}, which does not exist (a typo?); it was skipped. "
                            f"Entries are folders holding mnist/, fashion-mnist/ or svhn/, separated by "
                            f"'{os.pathsep}'.")
        elif not root.is_dir():
            problems.append(f"LSUV_DATA_DIR lists {root}, which is a file, not a folder; it was skipped. "
                            "Entries are folders holding mnist/, fashion-mnist/ or svhn/.")
        elif not any((root / sub).is_dir() for sub in subfolders) and any(
                (root / f).exists() or (root / f"{f}.gz").exists() for f in (*IDX_FILES, *SVHN_FILES)):
            problems.append(f"LSUV_DATA_DIR lists {root}, which holds dataset files itself; list its parent "
                            f"folder instead and name this folder after its dataset (mnist, fashion-mnist or "
                            f"svhn), so the files can be told apart.")
    return problems


def _warn_data_dir() -> None:
    for problem in data_dir_problems():
        warnings.warn(problem, DataWarning, stacklevel=3)


def cache_dir() -> Path:
    """`$LSUV_CACHE_DIR` (default `data/cache`); a `DataConfigError` if it cannot be a folder."""
    env = os.environ.get("LSUV_CACHE_DIR")
    if not env:
        return PROJECT_DATA / "cache"
    path = Path(env).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"is inside {p}, which is a file"
                raise DataConfigError(
                    f"LSUV_CACHE_DIR={env} {where}, not a folder. Point LSUV_CACHE_DIR at a folder "
                    f"(it is created if missing), or unset it to cache in {PROJECT_DATA / 'cache'}.")
            break
    return path


def _file(folder: Path, fname: str, spec: DatasetSpec) -> Path | None:
    """The file read for canonical name `fname` (an IDX file may be gzipped: the `.gz` wins), or None."""
    names = (f"{fname}.gz", fname) if spec.files == IDX_FILES else (fname,)
    return next((folder / n for n in names if (folder / n).exists()), None)


def _local_candidates(spec: DatasetSpec) -> list[tuple[Path, str]]:
    """Each folder that may hold `spec`, in order, with a path-free label of what it is."""
    roots = [(root, "local mirror in LSUV_DATA_DIR") for root in _env_roots()] + [(PROJECT_DATA, "project data/ folder")]
    return [(root / sub, label) for root, label in roots for sub in spec.folders] + [
        (Path(d), label) for d, label in zip(spec.system_dirs, spec.system_labels)]


def _fingerprint(folder: Path, spec: DatasetSpec) -> list:
    """What a folder's copy is, cheaply: resolved path and each file's size and timestamps.

    `ctime` changes whenever a file is replaced or rewritten, even by tools that restore
    `mtime` (`cp -p`, `tar`), so unchanged stats mean unchanged bytes in practice.
    """
    files = []
    for p in (_file(folder, f, spec) for f in spec.files):
        st = p.stat()
        files.append([p.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return [str(folder.resolve()), files]


def _cache_key(spec: DatasetSpec, verify: bool, inputs: list) -> str:
    """The identity of a cache's inputs: every source tried up to the one used, and the checks applied."""
    blob = json.dumps([CACHE_VERSION, spec.name, bool(verify), sorted(spec.md5.items()), inputs])
    return hashlib.sha256(blob.encode()).hexdigest()


def _md5_label(verify: bool, canonical: bool) -> str:
    if canonical:
        return "MD5-checked"
    return "MD5 differs from the canonical files (loaded with verify=False)" if not verify else "MD5 not checked"


def _md5_id(spec: DatasetSpec) -> str:
    """Which expected MD5s a checked copy matched: a cache is canonical only for the same ones."""
    return "md5:" + hashlib.sha256(json.dumps(sorted(spec.md5.items())).encode()).hexdigest()[:16]


def _hub_allowed(hub: bool) -> bool:
    return hub and os.environ.get("HF_HUB_OFFLINE", "") not in ("1", "true", "True", "TRUE", "yes")


# ----------------------------------------------------------------------------- cache

def _digest(t: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' bytes (hardware-accelerated: about 3x faster than BLAKE2 here)."""
    h = hashlib.sha256()
    for k in sorted(t):
        h.update(k.encode())
        h.update(memoryview(t[k].contiguous().numpy()).cast("B"))
    return h.hexdigest()


def _save_cache(path: Path, tensors: dict[str, torch.Tensor], source: str, *, key: str = "",
                origin: str = "", trusted: str = "", skipped: list[str] | None = None) -> None:
    """Write atomically: a crash mid-write leaves the old cache (or none), never half a file.

    `trusted` is `"hub"` or the `_md5_id` the files matched, so the cache may stand in
    for its source once the source is gone; `""` for anything else.
    """
    payload = {**tensors, "digest": _digest(tensors), "source": source, "version": CACHE_VERSION,
               "key": key, "origin": origin, "trusted": str(trusted), "skipped": list(skipped or [])}
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def _try_save_cache(path: Path, tensors, source: str, **meta) -> None:
    try:
        _save_cache(path, tensors, source, **meta)
    except (OSError, RuntimeError) as e:  # a read-only folder, a full disk or a file-size limit costs speed, not data
        # torch's zip writer re-reports a failed write as a RuntimeError: name the OSError behind it.
        os_error = next((x for x in (e, e.__context__) if isinstance(x, OSError)), None)
        why = (os_error.strerror or str(os_error)) if os_error else str(e)
        warnings.warn(f"Could not write the cache {path} ({why}); the data were loaded but not "
                      "cached. Set LSUV_CACHE_DIR to a writable folder with room for them to cache them.",
                      DataWarning, stacklevel=5)


def _load_cache(path: Path) -> dict | None:
    """The cache's payload, or `None` (with a warning) when the file is missing, stale or damaged."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001  torch's own text would advise weights_only=False: wrong for a damaged cache
        payload = None
    version = payload.get("version") if isinstance(payload, dict) else None
    if isinstance(version, int) and version < CACHE_VERSION:
        return None  # written by an older release: simply out of date, rebuilt without a warning
    if not isinstance(payload, dict):
        problem = "it could not be read as a cache file"
    elif missing := [k for k in CACHE_FIELDS if k not in payload]:
        problem = f"it lacks {', '.join(missing)}"
    elif version != CACHE_VERSION:
        problem = f"it is format version {version}, this library writes {CACHE_VERSION}"
    elif payload["digest"] != _digest({k: payload[k] for k in TENSOR_KEYS}):
        problem = "its checksum does not match its contents"
    else:
        return payload
    warnings.warn(f"Ignoring the cache {path}: {problem}. It is rebuilt from the source files.", DataWarning,
                  stacklevel=4)
    return None


def _canonical_cache(spec: DatasetSpec, payload: dict | None) -> bool:
    return payload is not None and payload["trusted"] in ("hub", _md5_id(spec))


# ----------------------------------------------------------------------------- loading

def _spec(name: str) -> DatasetSpec:
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}.")
    return DATASETS[key]


@dataclass
class _Copy:
    """A place that may hold a dataset: where, a path-free label, and what became of it."""

    where: Path | str
    kind: str
    fingerprint: list | None = None  # its files' sizes and timestamps, when every file is there
    outcome: str = ""                # why it was not used, for the error that lists every place


def _copies(spec: DatasetSpec) -> list[_Copy]:
    """Every candidate folder in order: the complete ones get a fingerprint, the others a reason."""
    copies = []
    for folder, kind in _local_candidates(spec):
        c = _Copy(folder, kind)
        if not folder.is_dir():
            c.outcome = "no such folder"
        elif missing := [f for f in spec.files if _file(folder, f, spec) is None]:
            c.outcome = f"missing {', '.join(missing)}"
        else:
            try:
                c.fingerprint = _fingerprint(folder, spec)
            except OSError as e:
                c.outcome = f"could not be read ({e.strerror})"
        copies.append(c)
    return copies


def _sentence(text: str) -> str:
    text = str(text).rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


def _skip_message(spec: DatasetSpec, c: _Copy, err: DataError, used: str) -> str:
    return (f"Skipped a broken copy of {_title(spec.name)} ({c.kind}, {c.where}): {_sentence(err)} "
            f"Loaded {_title(spec.name)} from the next source instead: {used}.")


def _image_set(spec: DatasetSpec, tensors: dict, source: str, origin: str, skipped: list[str]) -> ImageSet:
    """The loaded data, after a warning for each broken copy passed over on the way."""
    for message in skipped:
        warnings.warn(message, DataWarning, stacklevel=4)
    return ImageSet(spec.name, *(tensors[k] for k in TENSOR_KEYS), spec.classes, source, origin=origin)


def _from_cache(spec: DatasetSpec, payload: dict, path: Path, skipped: list[str]) -> ImageSet:
    return _image_set(spec, payload, f"{payload['source']} (cached in {path})", f"cache of {payload['origin']}",
                      skipped)


def _loaded(spec: DatasetSpec, tensors: dict, source: str, origin: str, broken: list, cache: Path | None,
            key: str, trusted: str) -> ImageSet:
    """Data read from a source: cached (if `cache`) under `key`, with the copies passed over on the way."""
    skipped = [_skip_message(spec, c, e, origin) for c, e in broken]
    if cache is not None:
        _try_save_cache(cache, tensors, source, key=key, origin=origin, trusted=trusted, skipped=skipped)
    return _image_set(spec, tensors, source, origin, skipped)


def _load(spec: DatasetSpec, verify: bool, cache: bool, hub: bool) -> ImageSet:
    path = cache_dir() / f"{spec.name}.pt" if cache else None
    cached = _load_cache(path) if cache else None
    copies = _copies(spec)
    found = [c for c in copies if c.fingerprint is not None]
    # A cache serves only the inputs it was built from: the copies tried before the one it holds
    # (broken then and, unchanged, broken now), that copy, and the checks applied.
    keys = [_cache_key(spec, verify, [c.fingerprint for c in found[:k + 1]]) for k in range(len(found))]
    hub_key = _cache_key(spec, verify, [c.fingerprint for c in found] + [["hub", *spec.hub]])
    if cached is not None and cached["key"] in (*keys, hub_key):
        return _from_cache(spec, cached, path, cached["skipped"])

    broken: list[tuple[_Copy, DataError]] = []
    read = _read_svhn if spec.name == "svhn" else _read_idx
    for c, key in zip(found, keys):
        try:
            tensors, canonical = read(c.where, spec, verify)
        except DataError as e:
            c.outcome = f"FAILED: {e}"
            broken.append((c, e))
            continue
        return _loaded(spec, tensors, str(c.where), f"{c.kind}, {_md5_label(verify, canonical)}", broken, path,
                       key, _md5_id(spec) if canonical else "")

    if _canonical_cache(spec, cached):  # no local copy works, but checked (or Hub) data are the dataset itself
        used = f"cache of {cached['origin']}"
        return _from_cache(spec, cached, path, [_skip_message(spec, c, e, used) for c, e in broken])

    repo, config = spec.hub
    hub_id = repo + (f"/{config}" if config else "")
    hub_copy = _Copy(f"Hugging Face Hub {repo}", f"Hugging Face Hub {hub_id}",
                     outcome="skipped (offline: HF_HUB_OFFLINE is set or hub=False)")
    if _hub_allowed(hub):
        try:
            import datasets

            tensors = from_hub_dataset(datasets.load_dataset(repo, config))
        except DataError as e:
            hub_copy.outcome = f"FAILED: {e}"
            broken.append((hub_copy, e))
        except Exception as e:  # noqa: BLE001  offline, missing package, or the Hub said no
            hub_copy.outcome = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            return _loaded(spec, tensors, f"huggingface:{hub_id}", hub_copy.kind, broken, path, hub_key, "hub")
    raise _not_loaded(spec, [*copies, hub_copy], broken)


def _not_loaded(spec: DatasetSpec, places: list[_Copy], broken: list[tuple[_Copy, DataError]]) -> DataError:
    """Everything that was tried, and how to provide the files."""
    looked = "\n".join(f"  - {c.where}: {c.outcome}" for c in places)
    names = ", ".join(spec.files) + (" (each may be .gz)" if spec.files == IDX_FILES else "")
    advice = (f"\nTo provide it, put {names} in a folder named '{spec.folders[0]}' inside "
              f"{PROJECT_DATA} or inside a folder listed in $LSUV_DATA_DIR, or run online so the Hub copy can be fetched.")
    if not broken:
        return DataError(f"Dataset '{spec.name}' was not found. Looked in:\n{looked}{advice}",
                         brief="not found on this machine", missing=True)
    n = len(broken)
    return DataError(f"Dataset '{spec.name}' could not be loaded: {n} cop{'y' if n == 1 else 'ies'} found failed "
                     f"{'its' if n == 1 else 'their'} checks, and no other source has it. Looked in:\n{looked}{advice}",
                     brief="; ".join(f"{c.kind}: {e.brief}" for c, e in broken), failures=[str(e) for _, e in broken])


def load_images(name: str, *, verify: bool = True, cache: bool = True, hub: bool = True) -> ImageSet:
    """Load a dataset by name as an `ImageSet`, from the first source that works.

    The sources, in order: each folder of `$LSUV_DATA_DIR`, the project's `data/`, system
    folders, the Hugging Face Hub. SVHN is converted to grayscale with PIL's luma formula,
    as the blog did. A copy that fails its checks is reported (`DataWarning`) and the next
    source tried; if none works, a `DataError` lists every place looked and why.

    Args:
        name: `"mnist"`, `"fashion_mnist"` or `"svhn"`.
        verify: check canonical files against their known MD5.
        cache: read and write the converted tensors under `$LSUV_CACHE_DIR`.
        hub: allow the Hugging Face Hub (never when `$HF_HUB_OFFLINE` is set).
    """
    spec = _spec(name)
    _warn_data_dir()
    return _load(spec, verify, cache, hub)


def available(name: str) -> bool:
    """True when `name` can be loaded without the network (cache or a local copy)."""
    return (cache_dir() / f"{name}.pt").exists() or any(c.fingerprint for c in _copies(DATASETS[name]))


def best_available(preferred: tuple[str, ...] = AUTO_ORDER) -> str:
    """The first dataset in `preferred` that is on this machine without the network, else the first named."""
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


def _fallback_note(passed: list[tuple[DatasetSpec, DataError]], used: str, order: tuple[str, ...]) -> str:
    reasons = [f"{_title(spec.name)} was not found" if e.missing else
               f"{_title(spec.name)} was found but failed its checks ({e.brief})" for spec, e in passed]
    joined = reasons[0] if len(reasons) == 1 else ", ".join(reasons[:-1]) + " and " + reasons[-1]
    return (f"{joined[:1].upper()}{joined[1:]}, so this run uses {_title(used)}, the next dataset in the "
            f"book's order ({', '.join(_title(n) for n in order)}).")


def _load_first(names: tuple[str, ...]) -> ImageSet:
    """The first of `names` that loads from anywhere (cache, mirror, system folder or Hub).

    A dataset passed over is named in the result's `notes`; one passed over because its
    copies were broken (not merely absent) is also a `DataWarning`.
    """
    _warn_data_dir()
    passed: list[tuple[DatasetSpec, DataError]] = []
    for name in names:
        spec = _spec(name)
        try:
            ds = _load(spec, verify=True, cache=True, hub=True)
        except DataConfigError:
            raise
        except DataError as e:
            passed.append((spec, e))
            continue
        if passed:
            note = _fallback_note(passed, ds.name, names)
            broken = [(s, e) for s, e in passed if not e.missing]
            if broken:
                details = " ".join(_sentence(f) for _, e in broken for f in e.failures)
                warnings.warn(f"dataset='auto': {note} What failed: {details} Fix or remove the broken files "
                              f"to run on {_title(broken[0][0].name)}.", DataWarning, stacklevel=3)
            ds = replace(ds, notes=[*ds.notes, note])
        return ds
    raise DataError("None of the datasets " + ", ".join(names) + " could be loaded:\n\n" +
                    "\n\n".join(str(e) for _, e in passed),
                    brief="; ".join(f"{_title(s.name)}: {e.brief}" for s, e in passed),
                    missing=all(e.missing for _, e in passed),
                    failures=[f for _, e in passed for f in e.failures])


def prepare(dataset: str = "auto", size: int | None = 32, n_train: int | None = None,
            n_test: int | None = None) -> ImageSet:
    """A chapter's dataset: loaded (`load_images`), padded and cut to size.

    A split with fewer than `MIN_PER_CLASS` (5) images per class is a `DataWarning`: its
    accuracies mean nothing.

    Args:
        dataset: a name as in `load_images`, or `"auto"`: the first of SVHN, Fashion-MNIST and
            MNIST that loads (the book's stand-in rule); a dataset passed over is named in
            `notes`, and in a warning when its copies were broken rather than absent.
        size: pad the images to `size` x `size` (the blog's CNN expects SVHN's 32x32);
            `None`: as they are.
        n_train: keep the first this many training images (`None`: all).
        n_test: keep the first this many test images (`None`: all).
    """
    ds = _load_first(AUTO_ORDER) if dataset == "auto" else load_images(dataset)
    if size is not None:
        ds = ds.padded(size)
    ds = ds.subset(n_train, n_test)
    small = [(_images(len(x), split), arg) for x, split, arg in
             ((ds.x_train, "training", "n_train"), (ds.x_test, "test", "n_test"))
             if len(x) < MIN_PER_CLASS * len(ds.classes)]
    if small:
        warnings.warn(f"Only {' and '.join(n for n, _ in small)} for {len(ds.classes)} classes (fewer than "
                      f"{MIN_PER_CLASS} per class): this run's accuracies mean nothing. Use a larger "
                      f"{' and '.join(arg for _, arg in small)}, or None for the whole split.", DataWarning,
                      stacklevel=2)
    return ds
