"""Mini-batches sliced from tensors that already sit on the device.

A whole dataset of small images fits in memory as uint8, so an epoch is a
permutation and a loop of index-selects: no per-item Python, no worker processes.
Pixels become floats one batch at a time, which keeps the resident copy 4x smaller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import torch

from .runtime import check_positive, default_device

if TYPE_CHECKING:
    from .data import ImageSet


class Batches:
    r"""`(x, y)` mini-batches of uint8 images held on the device, each pixel scaled to $(x/255 - \text{mean}) / \text{std}$.

    With `shuffle=True` each pass draws a fresh permutation from a generator seeded with
    `seed`, so the sequence of epochs is the same on every run. `len()` is the number of batches.

    Args:
        x_u8: images, `uint8` of shape `(N, C, H, W)`.
        y: labels, shape `(N,)`.
        batch_size: images per batch (the last batch may be smaller).
        shuffle: a new order every pass, else the stored order.
        seed: seeds the shuffling generator.
        mean: subtracted from the scaled pixels.
        std: what the centred pixels are divided by, positive.
        device: where the tensors live: `"auto"` (CUDA when there is one), `"cpu"`, `"cuda"`.
    """

    def __init__(self, x_u8: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, mean: float = 0.0, std: float = 1.0, device: str | torch.device | None = "auto"):
        check_positive("batch_size", batch_size, whole=True)
        if x_u8.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {x_u8.dtype}")
        if len(x_u8) != len(y):
            raise ValueError(f"{len(x_u8)} images but {len(y)} labels")
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        self.device = default_device(device)
        self.x, self.y = x_u8.to(self.device), y.to(self.device)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)
        # One multiply-add per batch does both the /255 and the standardisation.
        self.scale, self.shift = 1.0 / (255.0 * std), -mean / std

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def order(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample indices for a pass (advances the generator when shuffling)."""
        if self.shuffle:
            return torch.randperm(len(self.x), generator=generator or self.generator).to(self.device)
        return torch.arange(len(self.x), device=self.device)

    def batch(self, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # index_select is several times faster than x[j] for uint8 rows on the CPU.
        x = self.x.index_select(0, j).float().mul_(self.scale)
        if self.shift:
            x.add_(self.shift)
        return x, self.y.index_select(0, j)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_with(self.generator)

    def iter_with(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass whose shuffle draws from `generator` (the loader's own is left as it is)."""
        idx = self.order(generator)
        for i in range(0, len(idx), self.batch_size):
            yield self.batch(idx[i:i + self.batch_size])

    def fork_generator(self) -> torch.Generator:
        """A new generator in the loader's current state: its passes are the ones training would see next."""
        return torch.Generator().set_state(self.generator.get_state())

    def one_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch the next pass will start with, drawn without advancing the shuffle."""
        return self.batch(self.order(self.fork_generator())[:self.batch_size])


@dataclass
class DataLoaders:
    """The training batches and the test (`valid`) batches of one dataset, as `Learner` takes them."""

    train: Batches
    valid: Batches


def dataloaders(ds: ImageSet, batch_size: int, *, normalise: bool = False, seed: int = 0,
                device: str | torch.device | None = "auto") -> DataLoaders:
    """Shuffled training batches and ordered test batches (twice the size) of `ds`.

    Args:
        ds: the dataset (`ImageSet`).
        batch_size: training images per batch.
        normalise: standardise with the training split's own mean and std; otherwise pixels are
            only scaled to $[0, 1]$, as the blog's baseline did.
        seed: seeds the training shuffle.
        device: as in `Batches`.
    """
    mean, std = ds.stats() if normalise else (0.0, 1.0)
    kw = dict(mean=mean, std=std, device=device)
    return DataLoaders(Batches(ds.x_train, ds.y_train, batch_size, shuffle=True, seed=seed, **kw),
                       Batches(ds.x_test, ds.y_test, 2 * batch_size, **kw))


def batch_moments(batches: Batches) -> tuple[list[float], list[float]]:
    """Mean and std of each batch's inputs over one pass, as the model would see them."""
    means, stds = [], []
    for xb, _ in batches:
        means.append(xb.mean())
        stds.append(xb.std())
    return torch.stack(means).tolist(), torch.stack(stds).tolist()
