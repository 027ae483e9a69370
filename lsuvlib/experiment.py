"""One training run from a seed, and the same run over several seeds."""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import torch
from torch import nn

from .activations import ActivationStats
from .batches import dataloaders
from .learner import EpochLR, Learner, final, warn_stopped
from .lsuv import LSUVCallback
from .lsuv_report import LSUVReport
from .probe import measure_activations
from .runtime import bars_shown, check_positive, default_device, progress_line, set_seed
from .stats import summarise
from .workers import imap, plan

if TYPE_CHECKING:
    from .data import ImageSet

# "auto" stacks the seeds on CUDA only: on the 2-core CPU measured (benchmarks/seeds_speed.py),
# grouped convolutions were slower than one model at a time (see lsuvlib.workers for processes).
AUTO_TOGETHER_ON = ("cuda",)


@dataclass
class Run:
    """Everything one seeded run produced, as `train` returns it.

    Attributes:
        seed: the seed of its weights and batch order.
        history: `Learner.history`: one dict per epoch and phase.
        batch_losses: the training loss of every batch.
        seconds: training time.
        stopped: why the run stopped early (it diverged), else `None`.
        stats: the `ActivationStats` recorded, if asked for.
        lsuv_report: what LSUV did (`LSUVReport`), if it ran.
        after_training: mean and std at every activation after training, one dict per layer.
        model: the trained network.
        threads: torch's intra-op threads while training (float rounding depends on them).
    """

    seed: int
    history: list[dict]
    batch_losses: list[float]
    seconds: float
    stopped: str | None = None
    stats: "ActivationStats | None" = None
    lsuv_report: LSUVReport | None = None
    after_training: list[dict] = field(default_factory=list)
    model: nn.Module | None = None
    threads: int = 0  # torch's intra-op threads during training: float rounding depends on it

    @property
    def diverged(self) -> bool:
        """True when training stopped early because the run diverged (the rule is in `lsuvlib.learner`)."""
        return self.stopped is not None

    def to_dict(self) -> dict:
        """The plain-data part, for a results file: no model, no tensors."""
        return dict(seed=self.seed, history=self.history, seconds=self.seconds, threads=self.threads,
                    stopped=self.stopped,
                    lsuv_report=self.lsuv_report.to_records() if self.lsuv_report is not None else None,
                    activations_after_training=self.after_training)


def train(make_model: Callable[[], nn.Module], ds: "ImageSet", *, seed: int, epochs: int, lr: float,
          batch_size: int, momentum: float = 0.0, normalise: bool = False, lsuv: str | dict | None = None,
          lrs: Sequence[float] | None = None, record_stats: bool = False, device: str = "auto",
          progress: bool = True) -> Run:
    """One seeded run: seed everything, build the model, optionally LSUV-initialise it, and train.

    `seed` fixes both the initial weights and the order of the training batches, so two calls
    with the same arguments give identical histories on the CPU. A run that diverges stops
    early and is still returned: `Run.stopped` says why.

    Args:
        make_model: builds the untrained network, e.g. `lambda: get_model(norm=nn.BatchNorm2d)`.
        ds: the dataset (`ImageSet`).
        seed: a whole number.
        epochs: passes over the training data.
        lr: the learning rate.
        batch_size: training images per batch.
        momentum: SGD momentum.
        normalise: standardise the inputs (see `dataloaders`).
        lsuv: a variant name (one of `VARIANTS`) or a dict of `lsuv_init` arguments; `None`: no LSUV.
        lrs: a learning rate per epoch instead of the constant `lr`.
        record_stats: record `ActivationStats` while training.
        device: `"auto"`, `"cpu"` or `"cuda"`.
        progress: draw progress bars.

    Returns:
        A `Run`.
    """
    _check_numbers(epochs=epochs, lr=lr, batch_size=batch_size)
    model, dls = _model_and_data(make_model, ds, seed, batch_size=batch_size, normalise=normalise, device=device)
    cbs: list = []
    lsuv_cb = stats = None
    if lsuv is not None:
        lsuv_cb = _lsuv_callback(lsuv)
        cbs.append(lsuv_cb)
    if record_stats:
        stats = ActivationStats()
        cbs.append(stats)
    if lrs is not None:
        cbs.append(EpochLR(lrs))
    start = time.perf_counter()
    learn = Learner(model, dls, lr=lr, momentum=momentum, cbs=cbs, progress=progress).fit(epochs)
    seconds = time.perf_counter() - start
    after = measure_activations(model, dls.train.one_batch()[0])
    return Run(seed, learn.history, learn.batch_losses, seconds, learn.stopped, stats,
               lsuv_cb.report if lsuv_cb else None, after, model, torch.get_num_threads())


def _check_numbers(*, epochs, lr, batch_size) -> None:
    check_positive("epochs", epochs, whole=True)
    check_positive("lr", lr)
    check_positive("batch_size", batch_size, whole=True)


def _lsuv_callback(lsuv: str | dict) -> LSUVCallback:
    return LSUVCallback(**({"variant": lsuv} if isinstance(lsuv, str) else dict(lsuv)))


def _model_and_data(make_model, ds, seed, *, batch_size, normalise, device):
    """Seed, then build the model and its seeded loaders: the same RNG use on every path."""
    set_seed(seed)
    # channels_last lets the CPU conv kernels skip layout copies: 15-20% faster epochs here.
    model = make_model().to(memory_format=torch.channels_last)
    return model, dataloaders(ds, batch_size, normalise=normalise, seed=seed, device=device)


def _prepared(make_model, ds, seed, *, batch_size, normalise, lsuv, device):
    """What `train` does before its first training batch, without training: same RNG use."""
    model, dls = _model_and_data(make_model, ds, seed, batch_size=batch_size, normalise=normalise, device=device)
    model.to(dls.train.device)
    report = None
    if lsuv is not None:
        cb = _lsuv_callback(lsuv)
        cb.before_fit(SimpleNamespace(model=model, dls=dls))  # exactly what Learner's before_fit does
        report = cb.report
    return model, dls, report


def _use_together(together: bool | str, n: int, device: str) -> bool:
    if together == "auto":
        return default_device(device).type in AUTO_TOGETHER_ON and n > 1
    if not isinstance(together, bool):
        raise ValueError(f"together must be True, False or 'auto', got {together!r}")
    return together


def over_seeds(seeds: Sequence[int], *, together: bool | str = "auto", workers: int | str = "auto",
               record_stats: bool = False, group_size: int = 10, label: str = "", **kwargs) -> list[Run]:
    """The same `train` run once per seed, the runs returned in seed order.

    Each seed's run is the run `train` gives for it, wherever it trains: stacked with the
    others (`lsuvlib.together`: each copy keeps its own weights, LSUV, batch order and momentum,
    equal to float rounding), one after another in this process, or in forked one-thread worker
    processes (`lsuvlib.workers`, Linux CPU only; on the 2-core CPU measured they did not make
    the book's build faster). Only the first seed records activation statistics (for charts).
    Progress ("k/N runs done, about M min left") goes to `progress_line`. The other keyword
    arguments are `train`'s (`make_model`, `ds`, `epochs`, `lr`, ...).

    Args:
        seeds: whole numbers, e.g. `seeds_from(0, 5)`.
        together: train the seeds as one stacked model; `"auto"`: on CUDA only, where it pays.
        workers: when not stacked, the worker processes: 1 trains in this process; `"auto"`
            reads `$LSUV_WORKERS` and is 1 without it.
        record_stats: record `ActivationStats` for the first seed.
        group_size: the most seeds stacked at once (bounds memory).
        label: names the runs in progress lines.

    Returns:
        A `Run` per seed.
    """
    given = seeds
    seeds = list(seeds) if isinstance(seeds, Iterable) and not isinstance(seeds, (str, bytes)) else []
    if not seeds or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
        raise TypeError(f"seeds must be a non-empty list of whole numbers such as [0, 1, 2] or seeds_from(0, 5), "
                        f"got {given!r} ({type(given).__name__})")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    check_positive("group_size", group_size, whole=True)
    if "seed" in kwargs:
        raise TypeError("over_seeds takes seeds=[...], not seed=")
    missing = [k for k in ("make_model", "ds", "epochs", "lr", "batch_size") if k not in kwargs]
    if missing:
        raise TypeError(f"over_seeds needs {', '.join(missing)} (the arguments of train)")
    _check_numbers(epochs=kwargs["epochs"], lr=kwargs["lr"], batch_size=kwargs["batch_size"])
    stack = _use_together(together, len(seeds), kwargs.get("device", "auto"))
    if stack:
        from .together import NotStackable, check_stackable

        try:
            check_stackable(kwargs["make_model"]())
        except NotStackable:
            if together is True:
                raise
            stack = False  # "auto": a model the stack cannot copy trains one at a time
    runs: list[Run] = []
    start = time.perf_counter()

    def report_progress():
        done = len(runs)
        prefix = f"{label}: " if label else ""
        if done == len(seeds):
            progress_line(f"{prefix}{done}/{len(seeds)} runs done in {_minutes(time.perf_counter() - start)}")
            return
        left = (time.perf_counter() - start) / done * (len(seeds) - done)
        progress_line(f"{prefix}{done}/{len(seeds)} runs done, about {_minutes(left)} left")

    n_workers = 1 if stack else plan(len(seeds), default_device(kwargs.get("device", "auto")), workers)
    if n_workers > 1:
        return _in_workers(seeds, n_workers, record_stats, report_progress, runs, kwargs)
    todo = seeds
    if record_stats or not stack:
        first = todo if not stack else todo[:1]
        for i, s in enumerate(first):
            runs.append(train(seed=s, record_stats=record_stats and i == 0, **kwargs))
            report_progress()
        todo = todo[len(first):]
    for g in range(0, len(todo), group_size):
        runs += _train_together(todo[g:g + group_size], **kwargs)
        report_progress()
    return runs


def _in_workers(seeds, n_workers, record_stats, report_progress, runs, kwargs) -> list[Run]:
    """`train` once per seed in `n_workers` forked processes; `runs` fills as they finish."""
    show_bar = kwargs.pop("progress", True)
    first = seeds[0]
    job = lambda s: train(seed=s, record_stats=record_stats and s == first, progress=False, **kwargs)  # noqa: E731
    done = imap(job, seeds, n_workers)
    if bars_shown(show_bar):  # one bar over the seeds: per-epoch bars from several processes would interleave
        from fastprogress.fastprogress import progress_bar

        done = progress_bar(done, total=len(seeds), leave=False)
        done.comment = f"{n_workers} workers"
    by_index: dict[int, Run] = {}
    for i, run in done:
        by_index[i] = run
        runs.append(run)
        report_progress()
    return [by_index[i] for i in range(len(seeds))]


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else "under a second"
    return f"{seconds / 60:.0f} min"


def _train_together(seeds: Sequence[int], *, make_model, ds, epochs, lr, batch_size, momentum=0.0, normalise=False,
                    lsuv=None, lrs=None, device="auto", progress=True) -> list[Run]:
    """Several seeds through `lsuvlib.together.fit_together`; Runs shaped like `train`'s."""
    from .together import fit_together

    prepared = [_prepared(make_model, ds, s, batch_size=batch_size, normalise=normalise, lsuv=lsuv, device=device)
                for s in seeds]
    models = [p[0] for p in prepared]
    dls = [p[1] for p in prepared]
    res = fit_together(models, dls, epochs=epochs, lr=lr, momentum=momentum, lrs=lrs)
    runs = []
    for i, (s, (model, d, report)) in enumerate(zip(seeds, prepared)):
        if res.stopped[i]:
            warn_stopped(res.stopped[i], f"seed {s}: ")
        after = measure_activations(model, d.train.one_batch()[0])
        # seconds: the group's wall time shared equally, i.e. what this seed cost.
        runs.append(Run(s, res.history[i], res.batch_losses[i], res.seconds / len(seeds), res.stopped[i], None,
                        report, after, model, torch.get_num_threads()))
    return runs


def seeds_from(base: int, n: int) -> list[int]:
    """`n` consecutive seeds from `base`, `[base, ..., base + n - 1]`: the book's convention for multi-seed runs."""
    check_positive("n_seeds", n, whole=True)
    return list(range(base, base + n))


def summarise_final(runs: Sequence[Run], chance: float, phase: str = "eval", metric: str = "accuracy") -> dict:
    """`summarise` of the last epoch's `metric` over every run, a diverged run counted at `chance`.

    With `chance` = 1 / the number of classes, a mean over N seeds is over N seeds and says how
    many diverged. `phase` and `metric` are as in `final`.
    """
    return summarise([None if run.stopped else final(run.history, phase, metric) for run in runs], chance=chance)



def values_at(runs: Sequence[Run], epoch: int | None = None, phase: str = "eval", metric: str = "accuracy") -> dict:
    """`{seed: metric}` after `epoch` (0-based; None: the last any run reached), None for a run that diverged
    before finishing it: the per-seed values a chart draws and `stats.paired` compares."""
    from .stats import _value_at

    if epoch is None:
        epoch = max((r["epoch"] for run in runs for r in run.history if r["phase"] == phase), default=0)

    def value(run):
        stopped_in = max((r["epoch"] for r in run.history), default=-1) if run.stopped else None
        return None if stopped_in is not None and epoch >= stopped_in else _value_at(run.history, epoch, phase, metric)

    return {run.seed: value(run) for run in runs}
