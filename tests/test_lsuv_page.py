"""lsuvlib.lsuv_page: the LSUV-callback chapter's tables and sentences, checked against values computed by hand."""
from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch

import lsuvlib as L
from lsuvlib import lsuv_page as P
from lsuvlib.lsuv import LayerReport, LSUVReport
from lsuvlib.page import sci


def cnn():
    torch.manual_seed(0)
    return L.get_model(act=partial(L.GeneralRelu, leak=0.1, sub=0.4), nfs=(1, 4, 8))


@pytest.fixture(scope="module")
def traced():
    """The blog's rule and the library's variant on one small CNN and batch, every pass recorded."""
    xb = torch.rand(32, 1, 8, 8)
    model = cnn()
    blog = L.lsuv_init(model, xb, "blog", trace=True, warn=False)
    sub = L.lsuv_init(cnn(), xb, "loop", mean_via="sub", trace=True, warn=False)
    return SimpleNamespace(model=model, blog=blog, sub=sub, names=P.path_names(model))


def run(seed, acc=None, losses=(2.3, 1.5, 1.0), report=None):
    """A finished run ending at test accuracy `acc`, or a diverged one (`acc=None`)."""
    history = [dict(epoch=0, phase="train", loss=1.0, accuracy=0.5, seconds=1.0),
               dict(epoch=0, phase="eval", loss=1.0 if acc is not None else math.nan, accuracy=acc or 0.0, seconds=1.0)]
    return SimpleNamespace(seed=seed, history=history, batch_losses=list(losses), diverged=acc is None,
                           stopped=None if acc is not None else "training loss became NaN in epoch 1",
                           lsuv_report=report)


def fake_passes(stds_by_pass, targets):
    """A report with `passes` as `trace=True` records them: each pass, the std of layers 'a' and 'b'."""
    stats = [[dict(layer=k, activation="ReLU", mean=0.0, std=s) for k, s in stds.items()] for stds in stds_by_pass]
    return SimpleNamespace(passes=[dict(index=i, target=t, iteration=0, stats=st)
                                   for i, (t, st) in enumerate(zip(targets, stats))])


def test_path_names_gives_the_reader_names_of_every_report_path():
    names = P.path_names(cnn())
    assert names["0.0"] == names["0.1"] == "conv 1 (4 ch)"  # a GeneralRelu takes its conv's name
    assert names["1.0"] == "conv 2 (8 ch)" and names["2.0"] == "conv 3 (10 ch)"


def test_report_table_names_layers_as_a_reader_knows_them(traced):
    table = P.report_table(traced.blog, traced.names)
    lines = table.splitlines()
    assert lines[0] == "| layer | steps | mean before | std before | mean after | std after |"
    for line, r in zip(lines[2:4], traced.blog):
        assert line == (f"| {traced.names[r.layer]} | {r.iterations} | {r.mean_before:.3f} | {r.std_before:.3f} | "
                        f"{sci(r.mean_after, '.2g')} | {r.std_after:.3f} |")
    assert "| 0.0 |" not in table and "| conv 1 (4 ch) |" in table
    assert table.endswith("LSUV left conv 3 (10 ch) alone: no activation follows it before the next weight layer.")


def test_report_table_says_why_a_layer_did_not_converge():
    report = LSUVReport([LayerReport("0.0", "0.1 (GeneralRelu)", 1, -0.0001, 0.2, -0.0004, 0.7, False,
                                     "not converged: 1 steps (max_iters) were not enough; std 0.7, mean 0", "bias")])
    table = P.report_table(report, {"0.0": "conv 1 (8 ch)"})
    assert "| conv 1 (8 ch) | 1 | 0.000 | 0.200 | −0.0004 | 0.700 |" in table  # -0.0001 shows as 0.000, not -0.000
    tiny = LSUVReport([LayerReport("0.0", "-", 3, 0.1, 0.2, 8.7e-07, 1.0, True, "ok", "sub")])
    assert "| 8.7e" not in P.report_table(tiny, {}) and "$8.7 \\times 10^{-7}$" in P.report_table(tiny, {})
    assert table.endswith("conv 1 (8 ch) did not converge: 1 steps (max_iters) were not enough; std 0.7, mean 0.")


def test_convergence_text_counts_steps_and_layers_left_short():
    ok = LayerReport("0.0", "-", 12, 0.0, 0.3, 0.0, 1.0, True, "ok", "bias")
    short = LayerReport("1.0", "-", 50, 0.0, 0.3, 0.0, 0.9, False, "not converged", "bias")
    text = P.convergence_text({"the blog's rule": [LSUVReport([ok, short])]}, max_iters=50)
    assert text == ("With the blog's rule, over 1 seed and 2 layers, LSUV took 12 to 50 steps a layer (at most 50 "
                    "allowed) and 1 of 2 layers did not converge, 1 of them stopped at the bound of 50 steps, where "
                    "the blog's loop would have gone on.")
    assert P.convergence_text({"x": [LSUVReport([ok]), LSUVReport([ok])]}, 50).endswith(
        "over 2 seeds and 1 layer, LSUV took 12 steps a layer (at most 50 allowed) and every layer converged.")


def test_staircase_finds_where_each_layer_reaches_one_and_whether_it_stays():
    report = fake_passes([{"a": 0.3, "b": 0.1}, {"a": 1.0, "b": 0.4}, {"a": 1.0, "b": 0.5}, {"a": 1.0, "b": 1.0}],
                         ["a", "a", "b", "b"])
    steps = P.staircase(report)
    assert steps == [dict(layer="a", passes=2, first=0, last=1, jump=1, stays=True),
                     dict(layer="b", passes=2, first=2, last=3, jump=3, stays=True)]
    assert P.is_clean(steps)
    report.passes[3]["stats"][0]["std"] = 1.3  # layer a leaves 1 while b is set: no clean staircase
    assert P.staircase(report)[0]["stays"] is False and not P.is_clean(P.staircase(report))


def test_staircase_text_counts_the_passes_of_each_rule(traced):
    text = P.staircase_text(traced.blog, traced.sub, traced.names, "Toy")
    total = len(traced.blog.passes)
    assert f"the blog's rule ran **{total} forward passes**" in text
    counts = [s["passes"] for s in P.staircase(traced.blog)]
    assert f"conv 1 (4 ch) took {counts[0]} (passes 0 to {counts[0] - 1})" in text
    assert f"{total / len(counts):.1f} a layer here on Toy" in text
    assert f"the library's variant ran {len(traced.sub.passes)} passes" in text
    # conv 2's std overshoots 1 and falls back below 0.95 after reaching it: no clean staircase to claim
    assert not P.is_clean(P.staircase(traced.blog)) and "this run draws no clean staircase" in text


def test_staircase_and_scale_need_a_traced_report():
    untraced = L.lsuv_init(cnn(), torch.rand(8, 1, 8, 8), "blog", warn=False)
    for read in (P.staircase, P.scale_text, lambda r: P.staircase_text(r, r, {}, "Toy")):
        with pytest.raises(ValueError, match=r"no recorded passes: run lsuv_init\(\.\.\., trace=True\)"):
            read(untraced)


def test_staircase_text_calls_a_clean_staircase_one():
    report = fake_passes([{"a": 0.3, "b": 0.1}, {"a": 1.0, "b": 0.4}, {"a": 1.0, "b": 1.0}], ["a", "a", "b"])
    text = P.staircase_text(report, report, {"a": "conv 1 (8 ch)", "b": "conv 2 (16 ch)"}, "Toy")
    assert "at pass 1 and 2, and stays there" in text and "training starts at batch 3" in text


def test_outcome_table_counts_a_diverged_run_at_chance_over_every_seed():
    runs = [run(1, 0.8), run(2, None), run(3, 0.9)]
    table = P.outcome_table([("the blog's rule", 0.2, runs)], chance=0.1)
    s = L.summarise([0.8, 0.1, 0.9])
    assert table.splitlines()[2] == (f"| the blog's rule | 0.2 | {s['mean']:.3f} ± {s['sd']:.3f} (1 of 3 runs "
                                     "diverged, counted at chance) | 0.800 to 0.900 |")
    assert "none trained" in P.outcome_table([("x", 0.2, [run(1), run(2)])], chance=0.1)


def test_divergence_text_counts_each_rule_and_names_shared_seeds():
    blog = {"the blog's rule": [run(1, 0.8), run(2, None, losses=[2.3] * 16)],
            "the library's variant": [run(1, 0.8), run(2, None, losses=[2.3] * 8)]}
    stable = {"the blog's rule": [run(1, 0.8), run(2, 0.8)], "the library's variant": [run(1, 0.8), run(2, 0.8)]}
    text = P.divergence_text(blog, stable, 0.2, 0.1)
    assert text == ("At the blog's rate, lr 0.2, 1 of 2 runs diverged with the blog's rule and 1 of 2 with the "
                    "library's variant; at lr 0.1, no run diverged with either rule. At the blog's rate every "
                    "diverged run was stopped within its first 16 batches, and both rules lost the same seeds (2).")
    assert P.shared_divergence_text(blog, 0.2) == (
        "At lr 0.2, in 1 of the 2 pairs both runs diverged, which count at chance on both sides: a difference of "
        "exactly 0. Neither rule kept a seed the other lost, so only the 1 seed that trained under both rules gives a "
        "difference other than 0.")
    tie = dict(verdict="tie")
    assert P.shared_divergence_text(blog, 0.2, tie) == (
        "The tie at lr 0.2 is mostly a tie of two failures: in 1 of the 2 pairs both runs diverged, and each such "
        "pair, counted at chance on both sides, is a difference of exactly 0. Neither rule kept a seed the other "
        "lost, so only the 1 seed that trained under both rules gives a difference other than 0; the tie says that "
        "the two rules fail on the same seeds, not that they train equally well.")
    assert P.shared_divergence_text(stable, 0.1) == ""
    blog["the library's variant"] = [run(1, None), run(2, 0.8)]
    stable["the blog's rule"][0] = run(1, None)
    text = P.divergence_text(blog, stable, 0.2, 0.1)
    assert "the rules on different seeds (the blog's rule: 2; the library's variant: 1)" in text
    assert P.shared_divergence_text(blog, 0.2) == ""
    assert text.endswith("Runs diverged at lr 0.1 too, so it is not a stable rate on this data: lower `stable_lr`.")


def test_why_text_reads_the_first_batches_and_the_momentum_build_up():
    report = SimpleNamespace(to_records=lambda: [dict(layer="0.0", std_after=1.0)])
    blog = {"rule": [run(1, None, losses=[2.3, 1.2, 1.1, 2.5, math.nan], report=report),
                     run(2, 0.8, losses=[2.2, 1.5, 1.0], report=report)]}
    stable = {"rule": [run(1, 0.8, losses=[2.3, 1.9, 1.5], report=report),
                       run(2, 0.8, losses=[2.4, 2.0, 1.7], report=report)]}
    text = P.why_text(blog, stable, lr=0.2, stable_lr=0.1, momentum=0.85, n_classes=10)
    assert "ln 10 = 2.30 (first batch: 2.20 to 2.40)" in text
    assert "In the 1 runs that diverged at lr 0.2, with either rule, the loss first fell, to 1.10, then climbed " \
           "back above its starting value at batch 4." in text
    # the step before batch 4 carries 1 + 0.85 + 0.85^2 = 2.5725 gradient steps
    assert "built each step up to 2.6 times one gradient step, on its way to 6.7 times: an effective rate of " \
           "1.33 at lr 0.2, against 0.67 at lr 0.1." in text
    assert "Of the 3 runs that trained, at either rate, none ever had a training loss above its first batch's." in text
    assert "start from the same LSUV-initialised weights" in text
    stable["rule"][0].lsuv_report = SimpleNamespace(to_records=lambda: [dict(layer="0.0", std_after=0.9)])
    assert "same LSUV-initialised weights" not in P.why_text(blog, stable, 0.2, 0.1, 0.85, 10)
    calm = {"rule": [run(1, 0.8, report=report)]}
    assert P.why_text(calm, calm, 0.2, 0.1, 0.85, 10).endswith("so there is no divergence to explain.")


def test_scale_text_compares_the_first_and_last_pass():
    report = fake_passes([{"a": 0.25, "b": 0.5}, {"a": 1.0, "b": 1.0}], ["a", "b"])
    text = P.scale_text(report)
    assert "0.25 and 0.50 layer by layer at LSUV's first pass (the default draw in every layer)" in text
    assert "are 1.00 at the last, 2.0 to 4.0 times larger" in text


def test_after_training_text_reads_the_last_batches():
    rows = [dict(layer="conv 1", mean=-0.001, std=0.9), dict(layer="conv 2", mean=0.3, std=1.4)]
    stats = SimpleNamespace(means=torch.zeros(2, 6), summary=lambda last: rows if last == 6 else None)
    assert P.after_training_text(stats).startswith(
        "Over the last 6 training batches of this run the layers' standard deviations average 0.90 to 1.40 and "
        "their means 0.00 to 0.30")  # never "-0.00"


def test_seeds_text_states_the_pairs_the_larger_spread_needs():
    a = {s: 0.80 + 0.002 * s for s in range(5)}
    b = {s: 0.80 + 0.001 * (s % 2) for s in range(5)}
    rows = L.verdicts([dict(claim="x > y, lr 0.2", a=a, b=b), dict(claim="x > y, lr 0.1", a=b, b=b)])
    text = P.seeds_text(rows, effect=1.0)
    sd = rows[0]["sd"]
    assert f"standard deviation of {sd:.2f} points (lr 0.2) and 0.00 points (lr 0.1)" in text
    assert text.endswith(f"{L.pairs_needed(1.0, sd, 2)} pairs resolve 1 point across the family of 2 claims, "
                         "and this build has 5.")


def test_answer_reads_counts_verdicts_and_passes():
    runs_a = [run(s, 0.80 + 0.001 * s) for s in range(3)]
    runs_b = [run(s, 0.80 + 0.001 * s + 0.002) for s in range(3)]
    rows = L.verdicts([dict(claim="library > blog, lr 0.2", paired=L.paired_runs(runs_b, runs_a, chance=0.1)),
                       dict(claim="library > blog, lr 0.1", paired=L.paired_runs(runs_a, runs_a, chance=0.1))])
    rules = {"the blog's rule": runs_a, "the library's variant": runs_b}
    text = P.answer(rules, rules, 0.2, 0.1, rows, 0.1, "Toy", 57)
    assert text.startswith("On Toy, at the blog's lr 0.2, no run diverged with either rule; at lr 0.1, no run "
                           "diverged with either rule, and the blog's rule ended at ")
    assert "+0.20 points at lr 0.2, " in text and "0.00 points at lr 0.1, " in text
    assert text.endswith("The blog's \"staircase\" is LSUV's own 57 forward passes, before training starts.")


def test_answer_says_when_both_rules_lost_the_same_seeds():
    blog_rule = [run(0, None), run(1, 0.80), run(2, 0.81), run(3, None)]
    library = [run(0, None), run(1, 0.81), run(2, 0.81), run(3, None)]
    stable = [run(s, 0.8) for s in range(4)]
    at_blog = {"the blog's rule": blog_rule, "the library's variant": library}
    at_stable = {"the blog's rule": stable, "the library's variant": stable}
    rows = L.verdicts([dict(claim="library > blog, lr 0.2", paired=L.paired_runs(library, blog_rule, chance=0.1)),
                       dict(claim="library > blog, lr 0.1", paired=L.paired_runs(stable, stable, chance=0.1))])
    text = P.answer(at_blog, at_stable, 0.2, 0.1, rows, 0.1, "Toy", 57)
    assert f"points at lr 0.2, {P._verdict_words(rows[0])} (both rules diverged on 2 of the 4 seeds); " in text
    assert "0.00 points at lr 0.1, a tie within 1 point. The blog's" in text  # no shared loss, no remark
