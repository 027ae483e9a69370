"""lsuvlib: the small library behind the LSUV book.

One concept per module: `data` (datasets as uint8 tensors), `atomic` (all-or-nothing file
writes), `batches` (in-memory mini-batches), `learner` (the training loop), `hooks`,
`nonlinear` (which modules count as activations), `activations` (statistics), `charts`,
`lr_finder`, `models`, `init`, `probe` (layer/activation pairs and their statistics on one batch), `lsuv`,
`lsuv_report` (what LSUV did to each module), `together` (seeds trained as one stacked model),
`workers` (seeds in worker processes), `experiment` (seeded runs), `stats` (summaries over
seeds), `results` (chapter results as data), `page` (what a chapter shows on its page),
`narrate` (what the runs of chapters 3 to 5 show, as the pages state it),
`depth` (chapter 8's deep networks), `sources` (the seed documents' numbers) and `runtime`
(device, seeds, versions). The public names, `lsuvlib.__all__`, are importable from the
package itself: `import lsuvlib as L; L.lsuv_init(...)`.
"""
__version__ = "0.1.0"

from . import charts  # noqa: F401  (chapters call L.charts.*)
from . import narrate, page, results  # noqa: F401  (chapters call L.narrate.*, L.page.*, L.results.*)
from .activations import ActivationStats
from .batches import Batches, DataLoaders, batch_moments, dataloaders
from .data import DataConfigError, DataError, DataWarning, ImageSet, best_available, load_images, prepare
from .experiment import Run, over_seeds, seeds_from, summarise_final, train
from .hooks import Hooks, hook_count
from .init import init_kaiming, init_normal
from .learner import Callback, EpochLR, Learner, final
from .lr_finder import LRFindResult, lr_find
from .lsuv import VARIANT_INFO, VARIANTS, LSUVCallback, lsuv_init
from .lsuv_report import LayerReport, LSUVReport
from .models import GeneralRelu, conv, get_model, lenet, mlp
from .nonlinear import activation_types, is_activation, is_bounded, register_activation
from .probe import Pair, find_pairs, measure_activations
from .runtime import default_device, progress_line, set_seed, versions
from .stats import (Paired, aggregate, check_verdict, fmt_ci, fmt_mean_sd, min_detectable_effect, paired,
                    paired_runs, pairs_needed, prediction_interval, summarise, verdict_for, verdicts, versus_source)

__all__ = [
    "ActivationStats", "activation_types", "aggregate", "batch_moments", "Batches", "best_available", "Callback", "check_verdict", "conv",
    "DataConfigError", "DataError", "DataLoaders", "DataWarning", "dataloaders", "default_device", "EpochLR", "final", "find_pairs", "fmt_ci",
    "fmt_mean_sd", "GeneralRelu", "get_model", "hook_count", "Hooks", "ImageSet", "init_kaiming",
    "init_normal", "is_activation", "is_bounded", "LayerReport", "Learner", "lenet", "load_images", "lr_find",
    "LRFindResult", "lsuv_init", "LSUVCallback", "LSUVReport", "measure_activations", "min_detectable_effect", "mlp", "over_seeds",
    "Pair", "Paired", "paired", "paired_runs", "pairs_needed", "progress_line", "prediction_interval", "prepare", "register_activation", "Run", "seeds_from", "set_seed",
    "summarise", "summarise_final", "train", "verdict_for", "verdicts", "VARIANT_INFO", "VARIANTS", "versions", "versus_source",
]
