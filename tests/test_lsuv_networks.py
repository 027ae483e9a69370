"""LSUV on networks readers use: torchvision models, BatchNorm, residual blocks, grouped convolutions.

Images are 32x32 (batch 32) so the three torchvision models stay quick on 2 CPU cores; the
behaviour under test (pairing, BatchNorm stats, modes, reporting) does not depend on size.
"""
import copy
import warnings

import pytest
import torch
from torch import nn

import lsuvlib as L
from lsuvlib.lsuv import find_pairs

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
