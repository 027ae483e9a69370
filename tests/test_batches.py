"""lsuvlib.batches: coverage of each epoch, seeded shuffling, one_batch, normalisation and bad input."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lsuvlib.batches import Batches, dataloaders
from lsuvlib.learner import Callback
from lsuvlib.data import ImageSet


def numbered(n: int, side: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel is their own index (mod 256), and labels equal to the index."""
    x = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, side, side).contiguous()
    return x, torch.arange(n)


def epoch_labels(b: Batches) -> list[list[int]]:
    return [yb.tolist() for _, yb in b]


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(n=st.integers(1, 60), bs=st.integers(1, 70), shuffle=st.booleans(), seed=st.integers(0, 2**31))
def test_every_sample_exactly_once_per_epoch(n, bs, shuffle, seed):
    x, y = numbered(n)
    b = Batches(x, y, bs, shuffle=shuffle, seed=seed, device="cpu")
    for _ in range(2):
        batches = list(b)
        assert len(batches) == len(b) == -(-n // bs)
        assert all(len(yb) == bs for _, yb in batches[:-1]) and 1 <= len(batches[-1][1]) <= bs
        seen = torch.cat([yb for _, yb in batches])
        assert sorted(seen.tolist()) == list(range(n))
        for xb, yb in batches:  # images stay paired with their labels
            assert torch.allclose(xb[:, 0, 0, 0], (yb % 256).float() / 255, atol=1e-6, rtol=0)


def test_unshuffled_order_is_the_stored_order():
    x, y = numbered(10)
    b = Batches(x, y, 4, device="cpu")
    assert epoch_labels(b) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert epoch_labels(b) == epoch_labels(b)


def test_shuffle_differs_between_epochs_and_repeats_across_identical_loaders():
    x, y = numbered(50)
    a = Batches(x, y, 8, shuffle=True, seed=7, device="cpu")
    b = Batches(x, y, 8, shuffle=True, seed=7, device="cpu")
    epochs_a = [epoch_labels(a) for _ in range(3)]
    epochs_b = [epoch_labels(b) for _ in range(3)]
    assert epochs_a == epochs_b
    assert epochs_a[0] != epochs_a[1] != epochs_a[2] and epochs_a[0] != epochs_a[2]
    assert epochs_a[0] != [list(range(i, min(i + 8, 50))) for i in range(0, 50, 8)]  # really shuffled
    other = Batches(x, y, 8, shuffle=True, seed=8, device="cpu")
    assert epoch_labels(other) != epochs_a[0]


def test_shuffle_is_independent_of_the_global_rng():
    x, y = numbered(40)
    torch.manual_seed(0)
    first = epoch_labels(Batches(x, y, 8, shuffle=True, seed=3, device="cpu"))
    torch.manual_seed(12345)
    torch.rand(100)
    assert epoch_labels(Batches(x, y, 8, shuffle=True, seed=3, device="cpu")) == first


def test_one_batch_does_not_advance_the_shuffle():
    x, y = numbered(40)
    b = Batches(x, y, 8, shuffle=True, seed=1, device="cpu")
    ref = Batches(x, y, 8, shuffle=True, seed=1, device="cpu")
    for _ in range(3):
        xb, yb = b.one_batch()
        xb2, yb2 = b.one_batch()
        assert torch.equal(yb, yb2) and torch.equal(xb, xb2)  # peeking twice gives the same batch
        first_x, first_y = next(iter(b))  # the next pass starts with it...
        assert torch.equal(first_y, yb) and torch.equal(first_x, xb)
        list(b)  # (that pass, abandoned, consumed one permutation; finish another)
        list(ref), list(ref)
    # ...and peeking never changed the sequence of epochs compared with a loader that never peeked.
    assert epoch_labels(b) == epoch_labels(ref)


def test_one_batch_unshuffled_is_the_first_batch():
    x, y = numbered(10)
    b = Batches(x, y, 4, device="cpu")
    assert b.one_batch()[1].tolist() == [0, 1, 2, 3]


def test_normalisation_maths():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (37, 1, 5, 5), dtype=torch.uint8, generator=g)
    y = torch.zeros(37, dtype=torch.long)
    mean, std = 0.3, 0.25
    b = Batches(x, y, 10, mean=mean, std=std, device="cpu")
    got = torch.cat([xb for xb, _ in b])
    want = ((x.double() / 255) - mean) / std
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), want, atol=1e-5, rtol=0)
    plain = torch.cat([xb for xb, _ in Batches(x, y, 10, device="cpu")])
    assert torch.allclose(plain.double(), x.double() / 255, atol=1e-6, rtol=0)
    assert plain.min() >= 0 and plain.max() <= 1
    assert b.x.dtype == torch.uint8  # the resident copy stays uint8


def test_dataloaders_normalise_with_training_stats():
    g = torch.Generator().manual_seed(0)
    x_train = torch.randint(20, 120, (64, 1, 4, 4), dtype=torch.uint8, generator=g)
    x_test = torch.full((10, 1, 4, 4), 250, dtype=torch.uint8)
    ds = ImageSet("t", x_train, torch.arange(64) % 3, x_test, torch.arange(10) % 3, ("a", "b", "c"))
    dls = dataloaders(ds, 16, normalise=True, seed=0, device="cpu")
    train = torch.cat([xb for xb, _ in dls.train]).double()
    assert train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert train.std().item() == pytest.approx(1.0, abs=1e-5)
    mean, std = ds.stats()
    valid = torch.cat([xb for xb, _ in dls.valid]).double()
    assert torch.allclose(valid, torch.full_like(valid, (250 / 255 - mean) / std), atol=1e-4)
    # The test split is ordered, in batches twice as large; the training split is shuffled.
    assert dls.valid.batch_size == 32 and not dls.valid.shuffle and dls.train.shuffle
    assert [yb.tolist() for _, yb in dls.valid] == [ds.y_test.tolist()]
    raw = dataloaders(ds, 16, seed=0, device="cpu")
    assert torch.allclose(next(iter(raw.valid))[0], torch.full((10, 1, 4, 4), 250 / 255))


def test_dataloaders_seed_fixes_the_training_order():
    x, y = numbered(30)
    ds = ImageSet("t", x, y, x[:5], y[:5], tuple("0123456789"))
    a = dataloaders(ds, 4, seed=5, device="cpu")
    b = dataloaders(ds, 4, seed=5, device="cpu")
    assert epoch_labels(a.train) == epoch_labels(b.train)
    assert epoch_labels(dataloaders(ds, 4, seed=6, device="cpu").train) != epoch_labels(b.train)


@pytest.mark.parametrize("bs", [0, -1])
def test_batch_size_must_be_positive(bs):
    x, y = numbered(4)
    with pytest.raises(ValueError, match="batch_size"):
        Batches(x, y, bs, device="cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.int8])
def test_images_must_be_uint8(dtype):
    x, y = numbered(4)
    with pytest.raises(TypeError, match="uint8"):
        Batches(x.to(dtype), y, 2, device="cpu")


def test_images_and_labels_must_have_the_same_length():
    x, y = numbered(4)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        Batches(x, y[:3], 2, device="cpu")


@pytest.mark.parametrize("std", [0.0, -1.0, float("nan")])
def test_std_must_be_positive(std):
    x, y = numbered(4)
    with pytest.raises(ValueError, match="std must be positive"):
        Batches(x, y, 2, std=std, device="cpu")


def test_iter_with_a_fork_sees_the_next_passes_and_leaves_the_loader_alone():
    x, y = numbered(40)
    b = Batches(x, y, 8, shuffle=True, seed=2, device="cpu")
    ref = Batches(x, y, 8, shuffle=True, seed=2, device="cpu")
    fork = b.fork_generator()
    forked = [[yb.tolist() for _, yb in b.iter_with(fork)] for _ in range(3)]
    assert torch.equal(b.generator.get_state(), ref.generator.get_state())  # the loader's shuffle did not move
    assert forked == [epoch_labels(ref) for _ in range(3)]  # the fork's passes are the loader's next passes
    assert [epoch_labels(b) for _ in range(3)] == forked


class TrainingLabels(Callback):
    """Records the labels of every training batch a fit sees, in order."""

    order = 50

    def __init__(self):
        self.labels = []

    def before_batch(self, learn):
        if learn.training:
            self.labels.append(learn.yb.tolist())


def test_lsuv_callback_leaves_every_batch_of_the_fit_in_the_same_order():
    """Stronger than comparing the first batch: all training batches of a two-epoch fit, with and without LSUV."""
    from functools import partial

    import lsuvlib as L

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(200, 1, 32, 32, generator=g) * 255).to(torch.uint8)
    y = torch.arange(200)  # every label distinct: the order of labels is the order of images
    ds = ImageSet("toy", x, y, x[:20], y[:20] % 10, tuple("0123456789"))
    orders = {}
    for lsuv in (None, "loop"):
        L.set_seed(0)
        model = L.get_model(act=partial(L.GeneralRelu, leak=0.1, sub=0.4), n_classes=200)
        dls = L.dataloaders(ds, 64, seed=3, device="cpu")
        rec = TrainingLabels()
        cbs = [rec] + ([L.LSUVCallback(lsuv, warn=False)] if lsuv else [])
        L.Learner(model, dls, lr=1e-3, cbs=cbs, progress=False).fit(2)
        orders[lsuv] = rec.labels
    assert len(orders[None]) == 2 * 4
    assert orders["loop"] == orders[None]
    assert sorted(sum(orders[None][:4], [])) == list(range(200))  # one epoch covers every image once
    assert orders[None][:4] != orders[None][4:]  # shuffled differently in each epoch
