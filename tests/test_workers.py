"""lsuvlib.workers and over_seeds(workers=...): runs in forked workers equal runs in this process."""
from __future__ import annotations

import math
import multiprocessing
import sys
import warnings

import pytest
import torch

from conftest import default_sigint, toy_imageset, toy_model
from lsuvlib import workers
from lsuvlib.experiment import over_seeds
from lsuvlib.models import lenet

BS = 32
CPU = torch.device("cpu")
needs_fork = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker processes need fork (Linux)")


@pytest.fixture(scope="module")
def digits32():
    return toy_imageset(n_train=192, n_test=64, n_classes=10, size=32, seed=3)


def no_live_workers(before=()) -> bool:
    """Every worker process started since ``before`` has ended (a just-terminated one may need a moment)."""
    new = [p for p in multiprocessing.active_children() if p not in before]
    for p in new:
        p.join(timeout=5)
    return not [p for p in new if p.is_alive()]


def nan_safe(v):
    return "nan" if isinstance(v, float) and math.isnan(v) else v  # NaN != NaN, but two NaNs agree here


def plain(history):
    return [{k: nan_safe(v) for k, v in row.items() if k != "seconds"} for row in history]


def assert_identical(a_runs, b_runs):
    """Same thread count (1, conftest) on both paths: not close, equal."""
    assert [r.seed for r in a_runs] == [r.seed for r in b_runs]
    for a, b in zip(a_runs, b_runs):
        assert a.stopped == b.stopped
        assert plain(a.history) == plain(b.history)
        assert [nan_safe(x) for x in a.batch_losses] == [nan_safe(x) for x in b.batch_losses]
        assert plain(a.after_training) == plain(b.after_training)
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert all(torch.equal(sa[k].nan_to_num(), sb[k].nan_to_num()) for k in sa)
        assert (a.lsuv_report is None) == (b.lsuv_report is None)
        if a.lsuv_report is not None:
            assert a.lsuv_report.to_records() == b.lsuv_report.to_records()
        assert (a.stats is None) == (b.stats is None)
        if a.stats is not None:
            assert torch.equal(a.stats.means, b.stats.means) and torch.equal(a.stats.hists, b.stats.hists)


@needs_fork
@pytest.mark.parametrize("lsuv", [None, "loop"])
def test_runs_in_workers_equal_runs_in_this_process(digits32, lsuv):
    kw = dict(make_model=lambda: lenet(size=32), ds=digits32, epochs=2, lr=0.05, lrs=[0.05, 0.02], batch_size=BS,
              normalise=True, lsuv=lsuv, device="cpu", progress=False, together=False)
    before = multiprocessing.active_children()
    here = over_seeds([0, 1, 2], workers=1, record_stats=True, **kw)  # a chapter-local lambda: never pickled
    there = over_seeds([0, 1, 2], workers=2, record_stats=True, **kw)
    assert_identical(here, there)
    assert there[0].stats is not None and there[1].stats is None and there[2].stats is None
    assert no_live_workers(before)


def blows_up_for_seed_1():
    model = lenet(size=32)
    if torch.initial_seed() == 1:  # set_seed(1) ran just before make_model
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1e4)
    return model


@needs_fork
def test_a_diverged_seed_stops_alone_and_its_warning_reaches_the_caller(digits32):
    kw = dict(make_model=blows_up_for_seed_1, ds=digits32, epochs=2, lr=0.05, batch_size=BS, device="cpu",
              progress=False, together=False)
    with pytest.warns(UserWarning, match="Training stopped") as caught:
        runs = over_seeds([0, 1, 2], workers=3, **kw)
    assert [r.stopped is not None for r in runs] == [False, True, False]
    assert len([w for w in caught if "Training stopped" in str(w.message)]) == 1
    with pytest.warns(UserWarning, match="Training stopped"):
        assert_identical(runs, over_seeds([0, 1, 2], workers=1, **kw))


class Boom(RuntimeError):
    pass


def exploding_model():
    if torch.initial_seed() == 2:  # set_seed(2) ran just before make_model
        raise Boom("make_model failed for seed 2")
    return toy_model()


@needs_fork
def test_an_error_in_one_seed_is_raised_here_and_no_worker_is_left(digits32):
    kw = dict(ds=toy_imageset(), epochs=1, lr=0.3, batch_size=BS, device="cpu", progress=False, together=False)
    before = multiprocessing.active_children()  # other tests' processes are not ours to judge
    with pytest.raises(Boom, match="seed 2"):
        over_seeds([0, 1, 2, 3], workers=2, make_model=exploding_model, **kw)
    assert no_live_workers(before), [p for p in multiprocessing.active_children() if p not in before]
    assert workers._JOB is None  # the next call starts clean
    assert len(over_seeds([0, 1], workers=2, make_model=toy_model, **kw)) == 2


@needs_fork
def test_ctrl_c_in_a_run_stops_every_worker():
    def interrupted():
        raise KeyboardInterrupt

    before = multiprocessing.active_children()
    with pytest.raises(KeyboardInterrupt):
        list(workers.imap(lambda i: interrupted() if i == 0 else sum(range(10**7)), range(4), 2))
    assert no_live_workers(before)


@needs_fork
def test_progress_lines_count_runs_as_workers_finish_them(monkeypatch, tmp_path):
    path = tmp_path / "progress.txt"
    monkeypatch.setenv("LSUV_PROGRESS_FILE", str(path))
    over_seeds([0, 1, 2], workers=2, make_model=toy_model, ds=toy_imageset(), epochs=1, lr=0.3, batch_size=BS,
               device="cpu", progress=False, together=False, label="variant std")
    lines = path.read_text().splitlines()
    assert [ln.split(" runs done")[0] for ln in lines] == ["variant std: 1/3", "variant std: 2/3", "variant std: 3/3"]


def test_auto_trains_in_this_process_unless_the_environment_asks_for_workers(monkeypatch):
    monkeypatch.delenv(workers.ENV, raising=False)
    monkeypatch.setattr(workers.sys, "platform", "linux")
    assert [workers.plan(n, CPU) for n in (1, 2, 10)] == [1, 1, 1]  # measured: no faster here, so not the default
    monkeypatch.setenv(workers.ENV, "1")
    assert workers.plan(10, CPU) == 1
    monkeypatch.setenv(workers.ENV, "3")
    assert workers.plan(10, CPU) == 3 and workers.plan(2, CPU) == 2
    assert workers.plan(10, torch.device("cuda")) == 1  # CUDA: the stacked path's job, never forked
    for bad in ("0", "two", "-3"):
        monkeypatch.setenv(workers.ENV, bad)
        with pytest.raises(ValueError, match="LSUV_WORKERS.*positive whole number"):
            workers.plan(10, CPU)
    monkeypatch.delenv(workers.ENV)
    assert workers.plan(3, CPU, workers=1) == 1 and workers.plan(3, CPU, workers=8) == 3


def test_balanced_adds_a_worker_when_runs_split_unevenly():
    assert [workers.balanced(n, 2) for n in (1, 2, 3, 4, 5, 10)] == [1, 2, 3, 2, 3, 2]
    assert workers.balanced(10, 1) == 1


@needs_fork
def test_the_environment_sends_a_chapters_seeds_to_workers(monkeypatch):
    monkeypatch.setenv(workers.ENV, "2")
    seen = []
    real = workers.imap

    def spy(job, items, n_workers):
        seen.append(n_workers)
        return real(job, items, n_workers)

    monkeypatch.setattr("lsuvlib.experiment.imap", spy)
    runs = over_seeds([0, 1, 2], make_model=toy_model, ds=toy_imageset(), epochs=1, lr=0.3, batch_size=BS,
                      device="cpu", progress=False)
    assert seen == [2] and [r.seed for r in runs] == [0, 1, 2]


def test_bad_worker_requests_are_refused(monkeypatch):
    for bad in (0, -1, True, "many", 1.5):
        with pytest.raises(ValueError, match="workers must be 'auto' or a positive int"):
            workers.plan(4, CPU, workers=bad)
    monkeypatch.setattr(workers.sys, "platform", "darwin")
    assert workers.plan(4, CPU) == 1  # auto falls back quietly
    with pytest.raises(ValueError, match="needs the CPU on Linux"):
        workers.plan(4, CPU, workers=2)
    with pytest.raises(ValueError, match="workers must be"):
        over_seeds([0, 1], workers="lots", make_model=toy_model, ds=toy_imageset(), epochs=1, lr=0.3, batch_size=BS,
                   device="cpu", progress=False)


def test_threads_share_out_the_cores(monkeypatch):
    monkeypatch.setattr(workers, "cores", lambda: 8)
    assert [workers.threads_per_worker(n) for n in (1, 2, 3, 8, 9)] == [8, 4, 2, 1, 1]


SCRIPT = """
import os, sys, time
from lsuvlib import workers

def job(i):
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(60)

for _ in workers.imap(job, range(4), 2):
    pass
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)  # a zombie is done
    except FileNotFoundError:
        return True


@needs_fork
@pytest.mark.parametrize("how", ["interrupt", "kill"])
def test_workers_end_when_the_parent_is_interrupted_or_killed(tmp_path, how):
    import signal
    import subprocess
    import time

    pids = tmp_path / "pids.txt"
    script = tmp_path / "parent.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(pids)], stderr=subprocess.PIPE,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        assert proc.poll() is None, f"the parent script died before starting its workers: {proc.stderr.read()!r}"
        time.sleep(0.1)
    children = [int(x) for x in pids.read_text().split()]
    assert len(children) == 2
    proc.send_signal(signal.SIGINT if how == "interrupt" else signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(_gone(p) for p in children):
        time.sleep(0.1)
    assert all(_gone(p) for p in children), "a worker outlived its parent"
    if how == "interrupt":
        assert b"KeyboardInterrupt" in proc.stderr.read()


@needs_fork
def test_the_interrupt_tests_pass_when_the_suite_was_started_with_sigint_ignored():
    """nohup and many CI runners start the suite with SIGINT ignored, which children inherit."""
    import signal
    import subprocess

    code = ("import signal, subprocess, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "sys.exit(subprocess.call([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', "
            f"{__file__!r} + '::test_workers_end_when_the_parent_is_interrupted_or_killed[interrupt]']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
