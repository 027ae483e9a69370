"""lsuvlib.models: GeneralRelu's formula and the blog CNN's architecture, kernel by kernel, against the blog."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lsuvlib import sources
from lsuvlib.models import GeneralRelu, conv, get_model


def by_hand(x: torch.Tensor, leak, sub, maxv) -> torch.Tensor:
    """The blog's definition, element by element: slope ``leak`` below 0 (or 0), minus ``sub``, capped at ``maxv``."""
    slope = leak if leak is not None else 0.0
    out = torch.where(x >= 0, x, slope * x)
    if sub is not None:
        out = out - sub
    if maxv is not None:
        out = torch.minimum(out, torch.full_like(out, maxv))
    return out


@pytest.mark.parametrize("leak", [None, 0.0, 0.1, 0.3])
@pytest.mark.parametrize("sub", [None, 0.0, 0.4, -0.2])
@pytest.mark.parametrize("maxv", [None, 1.5, 6.0])
def test_general_relu_is_the_blogs_formula(leak, sub, maxv):
    x = torch.linspace(-8, 8, 321, dtype=torch.float64)
    act = GeneralRelu(leak=leak, sub=sub, maxv=maxv)
    assert (act.leak, act.sub, act.maxv) == (leak, sub, maxv)
    assert torch.allclose(act(x), by_hand(x, leak, sub, maxv), atol=1e-12, rtol=0)


def test_general_relu_leaves_its_input_alone_and_passes_gradients():
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    out = GeneralRelu(leak=0.1, sub=0.4, maxv=3.0)(x)
    assert torch.equal(x.detach(), before)  # not modified in place
    out.sum().backward()
    want = torch.where(x.detach() >= 0, 1.0, 0.1).double()
    want[(by_hand(x.detach(), 0.1, 0.4, 3.0) >= 3.0)] = 0.0  # capped outputs have no gradient
    assert torch.allclose(x.grad, want)


def test_general_relu_sub_is_a_plain_attribute_not_a_parameter():
    act = GeneralRelu(sub=0.4)
    assert list(act.parameters()) == [] and "sub" not in act.state_dict()
    act.sub = 0.1  # what LSUV's mean variants do
    assert act(torch.tensor([1.0])).item() == pytest.approx(0.9)
    assert repr(act) == "GeneralRelu(leak=None, sub=0.1, maxv=None)"


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_builds_every_conv_3x3_as_the_blogs_batchnorm_and_lsuv_sections():
    model = get_model()
    cs = convs(model)
    assert [(c.in_channels, c.out_channels) for c in cs] == [(1, 8), (8, 16), (16, 32), (32, 64), (64, 10)]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) and c.padding == (1, 1) for c in cs)
    assert all(c.bias is not None for c in cs)
    # 1*9*8+8 + 8*9*16+16 + 16*9*32+32 + 32*9*64+64 + 64*9*10+10, counted by hand
    assert n_params(model) == 80 + 1168 + 4640 + 18496 + 5770 == 30154
    assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 10)


def test_first_kernel_5_is_the_blogs_baseline_stack():
    model = get_model(first_kernel=5)
    cs = convs(model)
    assert cs[0].kernel_size == (5, 5) and cs[0].padding == (2, 2) and cs[0].stride == (2, 2)
    assert all(c.kernel_size == (3, 3) for c in cs[1:])
    assert n_params(model) == 208 + 1168 + 4640 + 18496 + 5770 == 30282  # first conv 1*25*8+8
    # 28x28 (the blog's comment) and 32x32 inputs both end with one value per class.
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_sources_record_the_kernel_of_every_blog_section():
    assert sources.BLOG["first_kernel"] == {"lr_finder": 5, "baseline": 5, "input_normalisation": 5,
                                            "batchnorm_kaiming": 3, "lsuv_callback": 3}
    for section, k in sources.BLOG["first_kernel"].items():
        assert convs(get_model(first_kernel=k))[0].kernel_size == (k, k), section


def test_norm_and_activation_go_in_every_block_but_not_the_head():
    model = get_model(act=lambda: GeneralRelu(leak=0.1, sub=0.4), norm=nn.BatchNorm2d)
    blocks, head = list(model)[:4], model[4]
    for block in blocks:
        c, bn, act = block
        assert isinstance(c, nn.Conv2d) and c.bias is None  # BatchNorm's shift replaces the bias
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == c.out_channels
        assert isinstance(act, GeneralRelu) and (act.leak, act.sub) == (0.1, 0.4)
    assert len(head) == 1 and head[0].bias is not None and head[0].out_channels == 10
    assert isinstance(model[5], nn.Flatten)
    assert len({id(b[2]) for b in blocks}) == 4  # one activation instance per block


def test_widths_and_classes_are_configurable():
    model = get_model(nfs=(3, 4, 6), n_classes=7, first_kernel=7)
    cs = convs(model)
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in cs] == [(3, 4, (7, 7)), (4, 6, (3, 3)),
                                                                             (6, 7, (3, 3))]
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 7)


@pytest.mark.parametrize("kwargs, match", [
    (dict(first_kernel=4), "first_kernel must be a positive odd number"),
    (dict(first_kernel=0), "first_kernel must be a positive odd number"),
    (dict(nfs=(1,)), "nfs needs an input width"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_model(**kwargs)


def test_conv_block_bias_follows_the_norm():
    assert conv(2, 3)[0].bias is not None
    assert conv(2, 3, norm=nn.BatchNorm2d)[0].bias is None
    assert conv(2, 3, norm=nn.BatchNorm2d, bias=True)[0].bias is not None
    assert len(conv(2, 3, act=None)) == 1


def test_package_exports_are_true():
    import lsuvlib as L

    assert [n for n in L.__all__ if not hasattr(L, n)] == []
    assert len(set(L.__all__)) == len(L.__all__)
    assert L.is_activation(GeneralRelu()) and not L.is_activation(nn.Linear(2, 2))
    assert hasattr(L.charts, "dead_chart") and hasattr(L.page, "setup")  # submodules chapters call
