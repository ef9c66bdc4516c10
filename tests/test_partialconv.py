"""PartialConv2d/3d against a brute-force float64 reference of eq. (1)-(2) of the paper."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from pconv import PartialConv2d, PartialConv3d


def reference_partial_conv(x, mask, weight, bias, stride, padding, dilation, groups):
    """Loop over every output position and window; zero padding counts as unknown."""
    x = x.double().numpy()
    mask = np.broadcast_to(mask.double().numpy(), x.shape)
    weight = weight.double().numpy()
    n, cin, *size = x.shape
    cout, cg, *k = weight.shape
    nd = len(size)
    out_size = [(size[d] + 2 * padding[d] - dilation[d] * (k[d] - 1) - 1) // stride[d] + 1 for d in range(nd)]
    out = np.zeros((n, cout, *out_size))
    new_mask = np.zeros((n, cout, *out_size))
    for b, o, *pos in itertools.product(range(n), range(cout), *map(range, out_size)):
        g = o // (cout // groups)
        acc, count = 0.0, 0.0
        for kpos in itertools.product(*map(range, k)):
            src = [pos[d] * stride[d] - padding[d] + kpos[d] * dilation[d] for d in range(nd)]
            if any(s < 0 or s >= size[d] for d, s in enumerate(src)):
                continue
            xs = x[(b, slice(g * cg, (g + 1) * cg), *src)]
            ms = mask[(b, slice(g * cg, (g + 1) * cg), *src)]
            acc += float((weight[(o, slice(None), *kpos)] * xs * ms).sum())
            count += float(ms.sum())
        if count > 0:
            total = cg * np.prod(k)
            out[(b, o, *pos)] = acc * total / count + (0.0 if bias is None else float(bias[o]))
            new_mask[(b, o, *pos)] = 1.0
    return torch.from_numpy(out), torch.from_numpy(new_mask)


CASES_2D = [
    # kernel, stride, padding, dilation, groups, mask channels ("1" or "C"), bias
    (3, 1, 1, 1, 1, "1", True),
    (3, 2, 1, 1, 1, "C", True),
    (5, 2, 2, 1, 1, "1", False),
    (3, 1, 2, 2, 1, "C", True),
    (3, 1, 1, 1, 2, "1", True),
    (3, 1, 1, 1, 2, "C", True),
    ((3, 2), (2, 1), (1, 0), (1, 2), 1, "C", True),
    (7, 2, 3, 1, 1, "1", True),
    (1, 1, 0, 1, 4, "C", True),
]


@pytest.mark.parametrize("kernel,stride,padding,dilation,groups,mask_ch,bias", CASES_2D)
def test_matches_brute_force_reference_2d(kernel, stride, padding, dilation, groups, mask_ch, bias):
    torch.manual_seed(0)
    cin, cout = 4, 4
    conv = PartialConv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=bias, return_mask=True).double()
    x = torch.randn(2, cin, 9, 8, dtype=torch.float64)
    mask = (torch.rand(2, 1 if mask_ch == "1" else cin, 9, 8) > 0.6).double()
    mask[0, :, :5, :5] = 0  # a large hole: some windows see nothing
    out, new_mask = conv(x, mask)
    ref_out, ref_mask = reference_partial_conv(
        x,
        mask,
        conv.weight.detach(),
        None if conv.bias is None else conv.bias.detach(),
        conv.stride,
        conv.padding,
        conv.dilation,
        groups,
    )
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(new_mask.expand_as(ref_mask), ref_mask)
    assert (ref_mask == 0).any(), "the case should contain windows with no known value"


def test_matches_brute_force_reference_3d():
    torch.manual_seed(1)
    conv = PartialConv3d(2, 3, 3, stride=(1, 2, 1), padding=1, return_mask=True).double()
    x = torch.randn(1, 2, 5, 6, 4, dtype=torch.float64)
    mask = (torch.rand(1, 2, 5, 6, 4) > 0.5).double()
    out, new_mask = conv(x, mask)
    ref_out, ref_mask = reference_partial_conv(
        x, mask, conv.weight.detach(), conv.bias.detach(), conv.stride, conv.padding, conv.dilation, 1
    )
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(new_mask.expand_as(ref_mask), ref_mask)


def test_all_known_without_padding_equals_conv2d():
    torch.manual_seed(0)
    pconv = PartialConv2d(5, 7, 3, stride=2, dilation=2)
    conv = nn.Conv2d(5, 7, 3, stride=2, dilation=2)
    conv.load_state_dict(pconv.state_dict())
    x = torch.randn(2, 5, 16, 16)
    torch.testing.assert_close(pconv(x, torch.ones(2, 1, 16, 16)), conv(x))
    torch.testing.assert_close(pconv(x), conv(x))


def test_no_mask_is_partial_padding():
    """mask=None is an all-ones mask: borders are re-weighted, the interior is a plain conv."""
    torch.manual_seed(0)
    pconv = PartialConv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(pconv(x), pconv(x, torch.ones(1, 1, 6, 6)))
    corner = pconv(x)[0, :, 0, 0]
    raw = nn.functional.conv2d(x, pconv.weight, None, padding=1)[0, :, 0, 0]
    torch.testing.assert_close(corner, raw * 9 / 4 + pconv.bias)
    plain = nn.functional.conv2d(x, pconv.weight, pconv.bias, padding=1)
    torch.testing.assert_close(pconv(x)[..., 1:-1, 1:-1], plain[..., 1:-1, 1:-1])


def test_window_without_known_value_gives_exact_zero():
    conv = PartialConv2d(2, 3, 3, padding=1, return_mask=True)
    nn.init.constant_(conv.bias, 5.0)
    x = torch.randn(1, 2, 8, 8)
    mask = torch.ones(1, 1, 8, 8)
    mask[..., 2:7, 2:7] = 0
    out, new_mask = conv(x, mask)
    assert (out[..., 4, 4] == 0).all() and new_mask[0, 0, 4, 4] == 0
    assert new_mask[0, 0, 2, 2] == 1 and (out[..., 2, 2] != 0).all()
    assert new_mask.sum() == 64 - 9


def test_bool_mask_and_channel_mask_equal_float_mask():
    torch.manual_seed(0)
    conv = PartialConv2d(3, 4, 3, padding=1, return_mask=True)
    x = torch.randn(2, 3, 7, 7)
    mask = torch.rand(2, 1, 7, 7) > 0.4
    out_f, m_f = conv(x, mask.float())
    out_b, m_b = conv(x, mask)
    out_c, m_c = conv(x, mask.expand(-1, 3, -1, -1).float())
    torch.testing.assert_close(out_b, out_f)
    torch.testing.assert_close(out_c, out_f)
    torch.testing.assert_close(m_b, m_f)
    torch.testing.assert_close(m_c, m_f)


def test_batch_one_mask_broadcasts():
    torch.manual_seed(0)
    conv = PartialConv2d(2, 2, 3, padding=1)
    x = torch.randn(3, 2, 5, 5)
    mask = (torch.rand(1, 1, 5, 5) > 0.5).float()
    torch.testing.assert_close(conv(x, mask), conv(x, mask.expand(3, -1, -1, -1)))


@pytest.mark.parametrize(
    "groups,mask_ch,padding_mode", [(1, 4, "zeros"), (2, 1, "zeros"), (2, 4, "zeros"), (1, 1, "reflect")]
)
def test_gradcheck(groups, mask_ch, padding_mode):
    torch.manual_seed(0)
    conv = PartialConv2d(4, 4, 3, stride=2, padding=1, groups=groups, padding_mode=padding_mode).double()
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(2, mask_ch, 6, 5) > 0.5).double()

    def f(x, w, b):
        return torch.func.functional_call(conv, {"weight": w, "bias": b}, (x, mask))

    w = conv.weight.detach().clone().requires_grad_()
    b = conv.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (x, w, b))


def test_gradcheck_3d_without_mask():
    conv = PartialConv3d(2, 2, 3, padding=1).double()
    x = torch.randn(1, 2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    w = conv.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: torch.func.functional_call(conv, {"weight": w}, (x,)), (x, w))


def test_gradient_is_zero_at_holes():
    conv = PartialConv2d(1, 1, 3, padding=1)
    x = torch.randn(1, 1, 6, 6, requires_grad=True)
    mask = torch.ones(1, 1, 6, 6)
    mask[..., 2, 3] = 0
    conv(x, mask).sum().backward()
    assert x.grad[0, 0, 2, 3] == 0 and (x.grad[0, 0, 2, 2] != 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_finite_and_close(dtype):
    torch.manual_seed(0)
    conv = PartialConv2d(64, 8, 3, padding=1, return_mask=True)
    x = torch.randn(1, 64, 12, 12)
    mask = torch.zeros(1, 64, 12, 12)
    mask[0, 0, 5, 5] = 1  # one known value among 576 per window: the largest ratio
    mask[..., :3, :] = 1
    out32, _ = conv(x, mask)
    out_h, m_h = conv.to(dtype)(x.to(dtype), mask.to(dtype))
    assert out_h.dtype == dtype and m_h.dtype == dtype
    assert torch.isfinite(out_h).all()
    torch.testing.assert_close(out_h.float(), out32, rtol=0.05, atol=0.5)


def test_autocast_cpu_bfloat16():
    torch.manual_seed(0)
    conv = PartialConv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 10, 10)
    mask = (torch.rand(2, 1, 10, 10) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x, mask)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), conv(x, mask), rtol=0.05, atol=0.1)


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    conv = PartialConv2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 10, 10)
    mask = (torch.rand(2, 1, 10, 10) > 0.5).float()
    ref = conv(x, mask)
    conv_cl = conv.to(memory_format=torch.channels_last)
    out = conv_cl(x.to(memory_format=torch.channels_last), mask)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_padding_modes_and_same_padding():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 7, 7)
    mask = (torch.rand(1, 1, 7, 7) > 0.3).float()
    same = PartialConv2d(2, 3, 3, padding="same")
    explicit = PartialConv2d(2, 3, 3, padding=1)
    explicit.load_state_dict(same.state_dict())
    torch.testing.assert_close(same(x, mask), explicit(x, mask))
    # Reflect padding: padded pixels are copies, known exactly when their source is known.
    reflect = PartialConv2d(2, 3, 3, padding=1, padding_mode="reflect", return_mask=True)
    valid = PartialConv2d(2, 3, 3, padding=0, return_mask=True)
    valid.load_state_dict(reflect.state_dict())
    pad = nn.functional.pad
    expected = valid(pad(x, (1, 1, 1, 1), mode="reflect"), pad(mask, (1, 1, 1, 1), mode="reflect"))
    for a, b in zip(reflect(x, mask), expected):
        torch.testing.assert_close(a, b)


def test_state_dict_round_trip_with_conv2d():
    conv = nn.Conv2d(3, 6, 5, stride=2, padding=2, bias=True)
    pconv = PartialConv2d(3, 6, 5, stride=2, padding=2, bias=True)
    pconv.load_state_dict(conv.state_dict())  # strict: same keys
    assert set(pconv.state_dict()) == set(conv.state_dict()) == {"weight", "bias"}
    back = nn.Conv2d(3, 6, 5, stride=2, padding=2)
    back.load_state_dict(pconv.state_dict())
    torch.testing.assert_close(back.weight, conv.weight)
    assert isinstance(pconv, nn.Conv2d)


def test_forward_is_stateless():
    """Nothing computed from an input stays on the module: attributes, buffers and parameters
    keep their values, and an output does not depend on what ran before it."""
    torch.manual_seed(0)
    conv = PartialConv2d(2, 2, 3, padding=1, return_mask=True)
    x, m = torch.randn(1, 2, 5, 5), (torch.rand(1, 1, 5, 5) > 0.4).float()
    first = conv(x, m)
    before = (
        {k: v for k, v in vars(conv).items() if not k.startswith("_")},
        {k: v.clone() for k, v in conv.state_dict().items()},
        {k: v.clone() for k, v in conv.named_buffers()},
    )
    conv(torch.randn(2, 2, 7, 7))  # another size, no mask
    conv(torch.randn(1, 2, 5, 5), torch.zeros(1, 1, 5, 5))  # all holes
    after = (
        {k: v for k, v in vars(conv).items() if not k.startswith("_")},
        conv.state_dict(),
        dict(conv.named_buffers()),
    )
    assert after[0] == before[0]
    for saved, now in zip(before[1:], after[1:]):
        assert saved.keys() == now.keys() and all(torch.equal(saved[k], now[k]) for k in saved)
    again = conv(x, m)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


def test_reference_options():
    """The reference implementation's multi_channel/return_mask: values against the brute-force
    formula, including a concatenated multi-channel mask fed to the next layer."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    mask = (torch.rand(2, 3, 6, 6) > 0.5).double()
    plain = PartialConv2d(3, 5, 3, padding=1).double()
    ref, _ = reference_partial_conv(x, mask, plain.weight.detach(), plain.bias.detach(), (1, 1), (1, 1), (1, 1), 1)
    torch.testing.assert_close(plain(x, mask), ref)
    multi = PartialConv2d(3, 5, 3, padding=1, multi_channel=True, return_mask=True).double()
    out, new_mask = (t.detach() for t in multi(x, mask))
    ref, ref_mask = reference_partial_conv(
        x, mask, multi.weight.detach(), multi.bias.detach(), (1, 1), (1, 1), (1, 1), 1
    )
    torch.testing.assert_close(out, ref)
    assert new_mask.shape == (2, 5, 6, 6)
    torch.testing.assert_close(new_mask, ref_mask)
    nxt = PartialConv2d(8, 2, 3, padding=1, multi_channel=True, return_mask=True).double()
    cat_x, cat_m = torch.cat([out, x], 1), torch.cat([new_mask, mask], 1)
    out2, mask2 = nxt(cat_x, cat_m)
    ref2, ref_mask2 = reference_partial_conv(
        cat_x, cat_m, nxt.weight.detach(), nxt.bias.detach(), (1, 1), (1, 1), (1, 1), 1
    )
    torch.testing.assert_close(out2, ref2)
    torch.testing.assert_close(mask2, ref_mask2)


@pytest.mark.parametrize("mask_shape", [(2, 2, 6, 6), (2, 1, 5, 6), (3, 1, 6, 6), (2, 1, 6)])
def test_bad_mask_shape_is_a_clear_error(mask_shape):
    conv = PartialConv2d(3, 4, 3)
    with pytest.raises(ValueError, match="mask of shape"):
        conv(torch.randn(2, 3, 6, 6), torch.ones(mask_shape))


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile's default backend (inductor) needs a C++ compiler on CPU",
)
def test_torch_compile_inductor_matches_eager_forward_and_backward():
    torch.manual_seed(0)
    conv = PartialConv2d(3, 4, 3, stride=2, padding=1, return_mask=True)
    mask = (torch.rand(2, 1, 10, 10) > 0.5).float()
    x = torch.randn(2, 3, 10, 10)
    results = []
    for module in (torch.compile(conv, fullgraph=True), conv):  # inductor, the default backend
        xi = x.clone().requires_grad_(True)
        out, new_mask = module(xi, mask)
        out.square().sum().backward()
        results.append((out.detach(), new_mask, xi.grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
        conv.zero_grad(set_to_none=True)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "cin, cout, kernel, stride, dilation",
    [
        (3, 4, 3, 1, 1),  # output wider than the input
        (8, 2, 3, 1, 1),  # narrower
        (8, 2, 1, 2, 1),  # stride 2 skips pixels
        (8, 2, 3, 1, 2),  # dilation
    ],
)
def test_nan_and_inf_in_holes_never_reach_the_output(cin, cout, kernel, stride, dilation):
    torch.manual_seed(0)
    conv = PartialConv2d(cin, cout, kernel, stride=stride, dilation=dilation, padding=dilation * (kernel // 2))
    conv.return_mask = True
    x = torch.rand(2, cin, 8, 8)
    mask = torch.ones(1, 1, 8, 8)
    mask[..., 2:5, 3:6] = 0
    results = []
    for poison in (False, True):
        xi = x.clone()
        if poison:
            xi[..., 2:5, 3:6] = float("nan")
            xi[0, 0, 2, 3] = float("inf")
            xi[1, -1, 4, 5] = float("-inf")
        xi.requires_grad_(True)
        out, _ = conv(xi, mask)
        out.square().sum().backward()
        results.append((out.detach(), xi.grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
        conv.zero_grad(set_to_none=True)
    for clean, dirty in zip(*results):
        torch.testing.assert_close(dirty, clean)
    assert (results[1][1][..., 2:5, 3:6] == 0).all()


@pytest.mark.parametrize("arch", ["pconv", "unet3plus-partial", "unet3plus-plain"])
def test_networks_ignore_non_finite_values_in_holes(arch):
    from pconv import PConvUNet, UNet3Plus

    torch.manual_seed(0)
    model = (
        PConvUNet(depth=3, base_width=4)
        if arch == "pconv"
        else UNet3Plus(depth=3, base_width=4, conv=arch.split("-")[1])
    ).eval()
    x = torch.rand(1, 3, 32, 32)
    mask = torch.ones(1, 1, 32, 32)
    mask[..., 8:20, 10:22] = 0
    dirty = x.clone()
    dirty[..., 8:20, 10:22] = float("nan")
    dirty[..., 9, 11] = float("-inf")
    with torch.no_grad():
        torch.testing.assert_close(model(dirty, mask), model(x, mask))
