"""lsuvlib: the small library behind the LSUV book.

One concept per module: ``data`` (datasets as uint8 tensors), ``atomic`` (all-or-nothing
file writes), ``batches`` (in-memory mini-batches), ``learner`` (the training loop),
``hooks``, ``activations`` (statistics), ``charts``, ``lr_finder``, ``models``, ``init``,
``lsuv``, ``experiment`` (seeded runs), ``stats`` (summaries over seeds), ``results``
(chapter results as data), ``sources`` (the seed documents' numbers) and ``runtime``
(device, seeds, versions).
"""
__version__ = "0.1.0"

from . import charts  # noqa: F401  (chapters call L.charts.*)
from .activations import ActivationStats
from .batches import Batches, DataLoaders, batch_moments, dataloaders
from .data import DataError, ImageSet, best_available, load_images, prepare
from .experiment import Run, over_seeds, seeds_from, summarise_final, train
from .hooks import Hooks, hook_count
from .init import init_kaiming, init_normal
from .learner import Callback, EpochLR, Learner, final
from .lr_finder import LRFindResult, lr_find
from .lsuv import LSUVCallback, LSUVReport, find_pairs, lsuv_init, measure_activations
from .models import GeneralRelu, conv, get_model, lenet, mlp
from .runtime import default_device, set_seed, versions
from .stats import aggregate, fmt_ci, fmt_mean_sd, intervals_overlap, summarise

__all__ = [
    "ActivationStats", "Batches", "batch_moments", "Callback", "DataError", "DataLoaders", "EpochLR", "GeneralRelu", "Hooks",
    "ImageSet", "LRFindResult", "LSUVCallback", "LSUVReport", "Learner", "Run", "aggregate", "best_available",
    "conv", "dataloaders", "default_device", "final", "find_pairs", "fmt_ci", "fmt_mean_sd",
    "get_model", "hook_count", "init_kaiming", "init_normal", "intervals_overlap", "lenet", "load_images",
    "lr_find", "lsuv_init", "measure_activations", "mlp", "over_seeds", "prepare", "seeds_from", "set_seed", "summarise",
    "summarise_final", "train", "versions",
]
