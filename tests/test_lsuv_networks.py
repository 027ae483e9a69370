"""LSUV on networks readers use: torchvision models, BatchNorm, residual blocks, grouped convolutions,
attention and transformer blocks; and the report's account of every module with weights (`coverage`).

Images are 32x32 (batch 32) so the three torchvision models stay quick on 2 CPU cores; the
behaviour under test (pairing, BatchNorm stats, modes, reporting) does not depend on size.
"""
import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import lsuvlib as L
from lsuvlib.probe import find_pairs

torchvision = pytest.importorskip("torchvision")

MODELS = ["resnet18", "vgg11_bn", "mobilenet_v3_small"]


def images(n=32, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def build(name):
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None)


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


# vgg11_bn's "paper" run is left out: orthonormalising its 4096x25088 classifier (a QR) alone takes minutes here.
@pytest.mark.parametrize("name,variant", [(m, "loop") for m in MODELS] + [(m, "paper") for m in MODELS if m != "vgg11_bn"])
def test_torchvision_model_completes_and_leaves_bn_and_modes_alone(name, variant):
    model = build(name)
    model.train()
    model.features[0].eval() if hasattr(model, "features") else model.layer1.eval()  # a mixed state to keep
    modes = {n: m.training for n, m in model.named_modules()}
    stats = bn_state(model)
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # residual pairs may end "not converged": checked below
        report = L.lsuv_init(model, images(), variant, max_iters=20)
    assert {n: m.training for n, m in model.named_modules()} == modes
    after_stats = bn_state(model)
    assert all(torch.equal(stats[k], after_stats[k]) for k in stats)
    assert L.hook_count(model) == 0
    # every layer whose weights changed has a row; every row's weights are finite
    changed = {k.rsplit(".", 1)[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    rows = {r.layer for r in report}
    assert changed <= rows, changed - rows
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(report) >= 8
    for r in report:
        assert r.converged or r.status.startswith(("not converged: ", "dead: ")), r
    # every module with weights is accounted for, and plain conv nets hold nothing LSUV cannot reach
    assert set(report.coverage) == {n for n, m in model.named_modules() if list(m.parameters(recurse=False))}
    assert not [n for n, w in report.coverage.items() if w.startswith(("never reached", "not used"))]
    if variant == "paper":
        n_weight = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
        assert len(report) == n_weight and all(r.measured == "layer" for r in report)


def test_resnet_reused_relu_is_paired_by_call():
    model = build("resnet18")
    pairs = find_pairs(model, images(4))
    block = model.layer1[0]
    calls = [p.act_call for p in pairs if p.act is block.relu]
    assert calls == [0, 1]  # BasicBlock calls self.relu twice: two pairs
    assert [p.layer for p in pairs if p.act is block.relu] == [block.conv1, block.conv2]


def test_batchnorm_between_conv_and_activation_keeps_stats_and_scales_through_eval_bn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU())
    stats = bn_state(model)
    xb = images(16, 8)
    report = L.lsuv_init(model, xb, "loop")
    assert report.all_converged
    assert report[0].mean_via == "-" and report[0].status.startswith("ok: mean not moved")
    assert report[1].mean_via == "pre_bias"
    assert all(torch.equal(v, bn_state(model)[k]) for k, v in stats.items())


def test_grouped_and_depthwise_convolutions_are_scaled_as_one_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.ReLU(),  # depthwise
                          nn.Conv2d(12, 12, 1, groups=3), nn.SiLU())
    xb = images(16, 8)
    for variant in ("std", "loop", "paper"):
        report = L.lsuv_init(model, xb, variant)
        assert report.all_converged, (variant, report)
        assert len(report.coverage) == 3 and all(w.startswith("initialised: std ") for w in report.coverage.values())


def test_layer_with_no_activation_is_listed_not_touched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4))
    head = model[2].weight.clone()
    report = L.lsuv_init(model, torch.randn(64, 12), "std")
    assert [r.layer for r in report] == ["0"] and report.unpaired == [("2", report.unpaired[0][1])]
    assert torch.equal(model[2].weight, head)


def test_layernorm_undoes_the_scale_and_the_pair_says_so():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.LayerNorm(16), nn.ReLU())
    with pytest.warns(UserWarning, match="not converged"):
        report = L.lsuv_init(model, torch.randn(64, 12) * 2, "std", max_iters=30)
    assert report[0].status.startswith("not converged: ") and report[0].iterations < 30
    assert torch.isfinite(model[0].weight).all()


# ----------------------------------------------------------------------------- coverage: every weight accounted for

def output_std(model, xb, module):
    """The std of `module`'s output (an attention's first output) on one eval pass, measured here."""
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append((o[0] if isinstance(o, tuple) else o).std()))
    try:
        model.eval()
        with torch.no_grad():
            model(xb)
    finally:
        handle.remove()
    return seen[0].item()


def sequences(n=16, length=10, features=16, seed=0):
    return torch.randn(n, length, features, generator=torch.Generator().manual_seed(seed))


def with_warnings(fn):
    """What `fn()` returns and the text of every warning it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in caught]


class AttentionBetweenLinears(nn.Module):
    """The issue's model: Linear -> ReLU -> nn.MultiheadAttention -> Linear."""

    def __init__(self):
        super().__init__()
        self.inp, self.act = nn.Linear(16, 32), nn.ReLU()
        self.att, self.out = nn.MultiheadAttention(32, 4, batch_first=True), nn.Linear(32, 8)

    def forward(self, x):
        h = self.act(self.inp(x))
        return self.out(self.att(h, h, h)[0])


def test_attention_output_is_set_through_out_proj_and_every_weight_is_accounted_for():
    torch.manual_seed(0)
    model, xb = AttentionBetweenLinears(), sequences()
    report, warned = with_warnings(lambda: L.lsuv_init(model, xb))
    assert warned == []
    assert [(r.layer, r.measured, r.mean_via) for r in report] == [("inp", "activation", "pre_bias"),
                                                                     ("att", "layer", "bias")]
    assert report.all_converged and abs(output_std(model, xb, model.att) - 1) <= 1e-3
    assert report.coverage == {"inp": "initialised: std 1.000 at act (ReLU)",
                               "att": "initialised: std 1.000 at att's output",
                               "att.out_proj": "initialised: std 1.000 at att's output",
                               "out": "left alone: no activation follows it before the next weight layer"}
    assert str(report).splitlines()[-2:] == ["att.out_proj: initialised: std 1.000 at att's output",
                                             "out: left alone: no activation follows it before the next weight layer"]


def test_transformer_encoder_layer_without_activation_modules_sets_each_layer_output():
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)  # its ReLU is a function, not a module
    model, xb = nn.Sequential(nn.Linear(16, 32), block, nn.Linear(32, 4)), sequences()
    report, warned = with_warnings(lambda: L.lsuv_init(model, xb))
    assert len(warned) == 1 and "no activation module follows a weight layer" in warned[0]
    assert [r.layer for r in report] == ["0", "1.self_attn", "1.linear1", "1.linear2", "2"]
    assert report.all_converged and all(r.measured == "layer" for r in report)
    modules = dict(model.named_modules())
    for r in report:
        assert abs(output_std(model, xb, modules[r.layer]) - 1) <= 1e-3, r.layer
    with_weights = {n for n, m in model.named_modules() if list(m.parameters(recurse=False))}
    assert set(report.coverage) == with_weights
    assert report.coverage["1.norm1"] == report.coverage["1.norm2"] == \
        "left alone: a normalisation layer keeps its scale 1 and shift 0"


class BareWeight(nn.Module):
    """A layer written as `x @ w` with its own nn.Parameter: no Conv/Linear call for LSUV to measure."""

    def __init__(self, n):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n, n) / n ** 0.5)

    def forward(self, x):
        return x @ self.w


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.act = nn.Linear(12, 16), nn.ReLU()
        self.bare, self.gru = BareWeight(16), nn.GRU(16, 16, batch_first=True)
        self.spare = nn.Linear(16, 16)  # built, never called

    def forward(self, x):
        return self.gru(self.bare(self.act(self.inp(x))).unsqueeze(1))[0]


def test_weights_the_pass_used_but_lsuv_never_reached_get_one_warning_each():
    torch.manual_seed(0)
    model = Mixed()
    report, warned = with_warnings(lambda: L.lsuv_init(model, torch.randn(64, 12)))
    never = [w for w in warned if "never reached" in w]
    assert len(never) == 2 == len(warned)
    assert never[0].startswith("LSUV never reached bare (BareWeight): the forward pass used its weights, but not in "
                               "a call LSUV measures")
    assert never[1].startswith("LSUV never reached gru (GRU):")
    assert [r.layer for r in report] == ["inp"] and report.all_converged
    assert report.coverage["spare"] == "not used by the forward pass on this batch"
    assert report.coverage["bare"].startswith("never reached") and report.coverage["gru"].startswith("never reached")


@pytest.mark.parametrize("conv, shape", [(nn.Conv1d, (32, 3, 24)), (nn.Conv3d, (8, 3, 6, 6, 6))])
def test_conv1d_and_conv3d_with_grouped_and_depthwise_layers(conv, shape):
    torch.manual_seed(0)
    model = nn.Sequential(conv(3, 12, 3, padding=1), nn.ReLU(), conv(12, 12, 3, padding=1, groups=12), nn.GELU(),
                          conv(12, 12, 1, groups=3), nn.SiLU())
    xb = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for variant in ("std", "loop", "paper"):
        report = L.lsuv_init(model, xb, variant)
        assert report.all_converged and len(report) == 3, (variant, report)
        assert all(w.startswith("initialised: std ") for w in report.coverage.values())
    report = L.lsuv_init(model, xb, "std")
    assert all(abs(output_std(model, xb, model[i]) - 1) <= 1e-3 for i in (1, 3, 5))


def test_prelu_slopes_are_left_alone_and_the_report_says_so():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.PReLU(), nn.Linear(32, 32), nn.PReLU(32), nn.Linear(32, 4))
    slopes = [model[1].weight.clone(), model[3].weight.clone()]
    xb = torch.randn(128, 12, generator=torch.Generator().manual_seed(0))
    report, warned = with_warnings(lambda: L.lsuv_init(model, xb))
    assert warned == [] and report.all_converged and [r.layer for r in report] == ["0", "2"]
    assert report.coverage["1"] == report.coverage["3"] == "left alone: an activation's own parameters"
    assert torch.equal(model[1].weight, slopes[0]) and torch.equal(model[3].weight, slopes[1])
    assert all(abs(output_std(model, xb, model[i]) - 1) <= 1e-3 for i in (1, 3))


def test_embedding_takes_token_ids_as_they_are_and_is_left_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32))
    ids = torch.randint(0, 50, (32, 10), generator=torch.Generator().manual_seed(0))
    report, warned = with_warnings(lambda: L.lsuv_init(model, ids))
    assert warned == [] and report.all_converged and [r.layer for r in report] == ["1"]
    assert report.coverage["0"] == "left alone: an embedding is a lookup table, with no input to scale it by"
    assert report.coverage["3"].startswith("left alone: a normalisation layer")


def test_readme_transformer_block_report_is_what_lsuv_init_prints():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "block = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)" in readme
    printed = readme.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    with pytest.warns(UserWarning, match="no activation module"):
        report = L.lsuv_init(block, torch.randn(16, 10, 32))
    lines = str(report).splitlines()
    assert len(lines) == len(printed) and lines[0] == printed[0]
    assert [(r.split()[0], r.split()[-1]) for r in lines[1:4]] == [(r.split()[0], r.split()[-1]) for r in printed[1:4]]
    assert lines[4].startswith("self_attn.out_proj: initialised: std ") and lines[5:] == printed[5:]


class GradSpy(nn.Module):
    """Passes its input through, noting whether autograd records the pass (a graph costs a backward)."""

    def __init__(self):
        super().__init__()
        self.graph = []

    def forward(self, x):
        self.graph.append(torch.is_grad_enabled())
        return x


def test_only_lsuv_init_runs_the_coverage_pass_with_a_graph():
    torch.manual_seed(0)
    spy = GradSpy()
    model, xb = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), spy, nn.Linear(16, 4), nn.Tanh()), torch.randn(64, 12)
    find_pairs(model, xb)
    L.measure_activations(model, xb)  # what experiment.train calls after training
    assert spy.graph == [False, False, False]  # find_pairs: one pass; measure_activations: pair, then measure
    report = L.lsuv_init(model, xb, "std")
    assert spy.graph[3:].count(True) == 1 and spy.graph[3] is True  # the survey, before any measurement
    assert report.coverage["3"].startswith("initialised") and report.coverage["0"].startswith("initialised")
