"""Seeded runs in parallel worker processes, one CPU thread each (opt-in).

Workers are forked, so they inherit the dataset and the chapter's own `make_model`
without pickling either; only seeds go out and finished runs come back. Every run in a
worker uses `threads` intra-op threads whichever worker takes it, so a run repeats
exactly from build to build. Fork is Linux's default and the only start method used.

Not the default: on the 2-core CPU measured, torch's second thread already speeds the
book's full-size epochs almost twofold, so two one-thread workers gained 1.1-1.2x on short
LeNet runs (benchmarks/seeds_speed.py) and nothing on the whole build (689 s one at a time,
748 s in workers). Ask for them with `over_seeds(workers=N)` or `$LSUV_WORKERS=N`;
`workers="auto"` reads that variable and is 1 (this process) without it.
"""
from __future__ import annotations

import os
import signal
import sys
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_all_start_methods, get_context
from typing import Callable, Iterator, Sequence

import torch

ENV = "LSUV_WORKERS"  # workers for over_seeds(workers="auto"); unset or "1": one seed at a time


def cores() -> int:
    """CPU cores this process may use (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan(n_runs: int, device: torch.device, workers: int | str = "auto") -> int:
    """How many worker processes to use for `n_runs` runs; 1 means "in this process".

    `"auto"`: `$LSUV_WORKERS` if it is set, else 1 (see the module docstring for why).
    An int asks for that many (at most `n_runs`). More than 1 needs the CPU on Linux:
    asked for explicitly elsewhere it is an error, through the environment it is ignored.
    """
    if isinstance(workers, bool) or not (workers == "auto" or isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be 'auto' or a positive int, got {workers!r}")
    possible = device.type == "cpu" and sys.platform.startswith("linux") and "fork" in get_all_start_methods()
    if workers == "auto":
        return min(_env_workers() or 1, n_runs) if possible else 1
    if workers > 1 and not possible:
        raise ValueError(f"workers={workers} needs the CPU on Linux (fork); this run is on {device.type} on "
                         f"{sys.platform}: use workers=1 or 'auto'")
    return min(workers, n_runs)


def balanced(n_runs: int, n_cores: int | None = None) -> int:
    """A worker count for `n_runs` one-thread runs: the cores, plus one when the runs split unevenly.

    5 runs on 2 cores: 3 workers finish in about 2.5 run-times instead of 3.
    """
    c = n_cores or cores()
    return max(1, min(n_runs, c if n_runs % c == 0 else c + 1))


def _env_workers() -> int | None:
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${ENV}={raw!r}: set it to a positive whole number of worker processes (1 trains "
                         "one seed at a time), or unset it")
    return value


def threads_per_worker(n_workers: int) -> int:
    """Intra-op threads per worker: the cores shared out, at least one."""
    return max(1, cores() // max(n_workers, 1))


_JOB: Callable | None = None  # set just before the fork: the workers inherit it, nothing is pickled


def _init(threads: int) -> None:
    torch.set_num_threads(threads)
    # The parent's stdout may be a notebook's stream, bound to sockets this child must not touch.
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    if sys.platform.startswith("linux"):
        try:  # die with the parent (a killed kernel must not leave workers training)
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _call(item):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _JOB(item)
    return result, [(w.category, str(w.message)) for w in caught]


def imap(job: Callable, items: Sequence, n_workers: int) -> Iterator[tuple[int, object]]:
    """Yield `(index, job(items[index]))` as each finishes, from `n_workers` forked processes.

    Warnings a job raised are re-issued here, in the parent. An error in a job is raised
    here once the others stopped; Ctrl-C stops every worker at once.
    """
    global _JOB
    if _JOB is not None:
        raise RuntimeError("workers.imap is already running in this process (nested parallel runs are not supported)")
    _JOB = job
    ex = ProcessPoolExecutor(n_workers, mp_context=get_context("fork"), initializer=_init,
                             initargs=(threads_per_worker(n_workers),))
    try:
        futures = {ex.submit(_call, item): i for i, item in enumerate(items)}
        _JOB = None  # the workers already hold their copy
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=futures.get):
                result, caught = f.result()
                for category, message in caught:
                    warnings.warn(message, category, stacklevel=2)
                yield futures[f], result
    except BaseException:
        _stop(ex)
        raise
    finally:
        _JOB = None
        ex.shutdown(wait=True, cancel_futures=True)


def _stop(ex: ProcessPoolExecutor) -> None:
    """End the workers now (the executor would let running jobs finish) and reap them before returning."""
    # Python 3.14 has ex.terminate_workers(); before it, the process table is the only handle.
    for p in list((getattr(ex, "_processes", None) or {}).values()):
        p.terminate()
    # The executor's own thread reaps the workers; waiting for it (not joining them here as well,
    # which races that thread's waitpid) means no worker is left unreaped or half-reaped on return.
    ex.shutdown(wait=True, cancel_futures=True)
