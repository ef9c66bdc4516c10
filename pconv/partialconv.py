"""Partial convolution (Liu et al. 2018, "Image Inpainting for Irregular Holes Using
Partial Convolutions", arXiv 1804.07723), eq. (1) and (2).

For a window with weights ``W``, features ``X``, binary mask ``M`` (1 = known, 0 = hole)::

    x' = W^T (X * M) * sum(1) / sum(M) + b    if sum(M) > 0
    x' = 0                                     otherwise
    m' = 1 if sum(M) > 0 else 0

``sum(1)`` counts the window's elements over all input channels (of the group). The
normalisation depends only on *how many* known values fall in a window, so a mask of any
width collapses to a one-channel *coverage* map (the fraction of input channels known at each
pixel) before a single one-channel counting convolution. No mask convolution is ever as wide
as the layer, unlike the reference implementation's multi-channel path.

The layers are stateless: nothing computed from an input is stored on the module, so they are
safe under threads, ``DataParallel`` and ``torch.compile``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pconv.tracing import tracing

__all__ = ["PartialConv2d", "PartialConv3d"]

_CONV = {2: F.conv2d, 3: F.conv3d}
_SUM_POOL = {2: F.avg_pool2d, 3: F.avg_pool3d}


class _PartialConvMixin:
    """The partial-convolution forward pass shared by the 2-D and 3-D layers.

    Mixed into a subclass of ``nn.Conv2d``/``nn.Conv3d``, so the constructor, parameters,
    ``state_dict`` keys and device/dtype handling are exactly those of the plain convolution.
    """

    _spatial_dims: int
    # Attributes provided by nn.ConvNd:
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: str | tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str
    weight: Tensor
    bias: Tensor | None
    _reversed_padding_repeated_twice: list[int]

    def _init_partial(self, multi_channel: bool, return_mask: bool) -> None:
        self.multi_channel = multi_channel
        self.return_mask = return_mask
        # Ones kernel of the counting convolution; a constant, so not part of the state_dict.
        ones = torch.ones((1, 1, *self.kernel_size), device=self.weight.device)
        self.register_buffer("count_kernel", ones, persistent=False)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ public API
    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Partial convolution of ``input`` where ``mask`` is 1 (known) and 0 (hole).

        Args:
            input: ``(N, C_in, *S)`` features.
            mask: ``(N|1, 1, *S)`` or ``(N|1, C_in, *S)`` float or bool mask, 1 = known.
                ``None`` means every pixel is known; the zero padding still counts as
                unknown, which gives partial-convolution padding.

        Returns:
            The output ``(N, C_out, *S')``; with ``return_mask=True`` also the updated mask,
            1 where the window held at least one known value. The updated mask has one
            channel, or ``C_out`` channels when ``multi_channel=True`` (a broadcast view, as
            the reference implementation returns) or when a per-channel mask meets
            ``groups > 1``.
        """
        if mask is None:
            out, new_mask = self._partial(input, None, None)
        else:
            self._check_mask(input, mask)
            mask = mask.detach()
            out, new_mask = self._partial(input, mask, self._coverage(mask))
        if not self.return_mask:
            return out
        if self.multi_channel and new_mask.shape[1] != self.out_channels:
            new_mask = new_mask.expand(-1, self.out_channels, *new_mask.shape[2:])
        return out, new_mask

    def masked_forward(self, x: Tensor, coverage: Tensor | None) -> tuple[Tensor, Tensor]:
        """Partial convolution of already-masked features; the building block of models.

        Args:
            x: ``(N, C_in, *S)`` features that are already zero wherever they are unknown.
            coverage: ``(N|1, 1, *S)`` fraction of the input channels known at each pixel
                (for a one-channel binary mask: the mask itself), or ``(N|1, groups, *S)``
                per group; ``None`` if every pixel is known.

        Returns:
            ``(output, new_mask)``: output ``(N, C_out, *S')``, and the updated one-channel
            (or per-group, expanded to ``C_out``) mask ``(N, 1|C_out, *S')`` in the output dtype.
        """
        return self._partial(x, None, coverage)

    # ------------------------------------------------------------------ internals
    def _partial(self, x: Tensor, mask: Tensor | None, coverage: Tensor | None) -> tuple[Tensor, Tensor]:
        """``x`` is multiplied by ``mask`` (when given); ``coverage`` drives the normalisation."""
        count_dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for float64
        if coverage is None:  # only the padding is unknown: count at batch size 1
            coverage = x.new_ones((1, 1, *x.shape[2:]), dtype=count_dtype)
        coverage = coverage.to(count_dtype)
        padding = self.padding
        if isinstance(padding, str) or self.padding_mode != "zeros":
            # Pad explicitly ('same', reflect, ...): padded pixels are known where their source is.
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            pads = self._reversed_padding_repeated_twice
            x = F.pad(x, pads, mode=mode)
            coverage = F.pad(coverage, pads, mode=mode)
            mask = None if mask is None else F.pad(mask.to(coverage.dtype), pads, mode=mode)
            padding = (0,) * self._spatial_dims
        ratio, new_mask = self._ratio(coverage, padding)  # (N|1, 1|G, *S')

        weight, bias = self.weight, self.bias
        device = x.device.type
        if torch.is_autocast_enabled(device):  # convolutions run in the autocast dtype
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        else:
            weight = weight.to(x.dtype)
            bias = None if bias is None else bias.to(x.dtype)
        if ratio.shape[1] > 1:  # per-group ratios: one per block of output channels
            reps = self.out_channels // ratio.shape[1]
            ratio = ratio.repeat_interleave(reps, dim=1)
            new_mask = new_mask.repeat_interleave(reps, dim=1)
        ratio, new_mask = ratio.to(x.dtype), new_mask.to(x.dtype)
        mask = None if mask is None else mask.to(x.dtype)
        geometry = (self.stride, padding, self.dilation, self.groups)
        with torch.autocast(device, enabled=False):
            out = _PartialConvFunction.apply(x, mask, weight, bias, ratio, new_mask, geometry)
        return out, new_mask.expand(out.shape[0], *new_mask.shape[1:])

    def _check_mask(self, input: Tensor, mask: Tensor) -> None:
        nd = self._spatial_dims + 2
        if input.dim() != nd:
            raise ValueError(f"{type(self).__name__} expects a {nd}-D input, got shape {tuple(input.shape)}")
        ok = (
            mask.dim() == nd
            and mask.shape[0] in (1, input.shape[0])
            and mask.shape[1] in (1, self.in_channels)
            and mask.shape[2:] == input.shape[2:]
        )
        if not ok:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not fit input of shape {tuple(input.shape)}: "
                f"expected (N or 1, 1 or {self.in_channels}, {', '.join(map(str, input.shape[2:]))})"
            )

    def _coverage(self, mask: Tensor) -> Tensor:
        """Fraction of input channels known at each pixel, ``(N, 1|groups, *S)``, float32 or wider."""
        mask = mask.to(torch.promote_types(mask.dtype, torch.float32))
        if mask.shape[1] == 1:
            return mask
        if self.groups == 1:
            return mask.mean(dim=1, keepdim=True)
        return mask.unflatten(1, (self.groups, -1)).mean(dim=2)

    def _ratio(self, coverage: Tensor, padding: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """Scaling ``sum(1)/sum(M)`` (0 where no value is known) and the updated mask.

        Computed in ``coverage.dtype`` (at least float32) with autocast off: counts stay
        exact, and the ratio is formed before any cast to half precision.
        """
        with torch.autocast(device_type=coverage.device.type, enabled=False):
            poolable = all(d == 1 for d in self.dilation) and all(2 * p <= k for p, k in zip(padding, self.kernel_size))
            if poolable and not tracing():
                # window sums by sum-pooling (per channel, as the grouped ones-convolution would):
                # the same sums, 2-4x faster than a one-channel convolution on a CPU; not in a
                # traced graph, where ONNX's AveragePool has no divisor_override and would average
                known = _SUM_POOL[self._spatial_dims](
                    coverage, self.kernel_size, self.stride, padding, count_include_pad=True, divisor_override=1
                )
            else:
                g = coverage.shape[1]
                kernel = self.count_kernel.to(coverage.dtype).expand(g, *self.count_kernel.shape[1:])
                known = _CONV[self._spatial_dims](coverage, kernel, None, self.stride, padding, self.dilation, g)
            # Each known value adds at least 1/C_in (per group) to the sum.
            threshold = 0.5 / (self.in_channels // self.groups)
            new_mask = (known > threshold).to(coverage.dtype)
            window = float(torch.Size(self.kernel_size).numel())
            ratio = window / known.clamp(min=threshold) * new_mask
        return ratio, new_mask


def _masked(x: Tensor, mask: Tensor | None, clean: bool | None = None) -> tuple[Tensor, bool]:
    """``x * mask``, but exactly 0 where the mask is 0 even when ``x`` holds NaN or Inf there
    (a hole's content must never reach the output); and whether the plain product was clean.

    On a CPU the select costs about five times the product (``torch.where`` and ``masked_fill``
    with a broadcast mask are slow kernels there), so the product is checked first by one sum:
    a finite sum means every element is finite, and the select is needed only when it is not.
    ``clean`` is that check's answer when already known (the backward pass recomputing the
    forward's product). On a GPU the select is cheap and a check would wait for the device, so
    it always runs there, as it does while ``torch.compile`` or an export traces the layer.
    """
    if mask is None:
        return x, True
    xm = x * mask
    if clean is None:
        # a data-dependent branch cannot be traced: torch.compile and export take the select
        clean = xm.device.type == "cpu" and not tracing() and bool(torch.isfinite(xm.sum()))
    return (xm, True) if clean else (torch.where(mask != 0, xm, 0), False)


class _PartialConvFunction(torch.autograd.Function):
    """``conv(x * mask) * ratio + bias * new_mask`` with a lean backward.

    Autograd through the plain expression would keep ``x * mask`` alive for the backward
    pass and build full-size temporaries for the bias gradient. Here ``x * mask`` is
    recomputed in backward (``x`` is alive anyway in a network), ``g * ratio`` is formed
    once, and the bias gradient is a reduction without temporaries: activation memory and
    time stay close to a plain convolution.
    """

    @staticmethod
    def forward(ctx, x, mask, weight, bias, ratio, new_mask, geometry):  # type: ignore[override]
        stride, padding, dilation, groups = geometry
        xm, ctx.clean = _masked(x, mask)
        out = _CONV[x.dim() - 2](xm, weight, None, stride, padding, dilation, groups)
        out.mul_(ratio)
        if bias is not None:
            out.addcmul_(bias.view(1, -1, *([1] * (x.dim() - 2))), new_mask)
        ctx.geometry = geometry
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, mask, weight, ratio, new_mask)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        x, mask, weight, ratio, new_mask = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        need_x, _, need_w, need_b = ctx.needs_input_grad[:4]
        grad_x = grad_w = grad_b = None
        if need_x or need_w:
            xm, _ = _masked(x, mask, ctx.clean)
            grad_raw = grad * ratio
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_raw,
                xm,
                weight,
                None,
                list(stride),
                list(padding),
                list(dilation),
                False,
                [0] * len(stride),
                groups,
                [need_x, need_w, False],
            )
            if grad_x is not None and mask is not None:
                grad_x = grad_x.mul_(mask)
        if need_b and ctx.has_bias:
            # sum over batch and space of grad * new_mask, as a batched matrix product
            g = grad.flatten(2)  # (N, C_out, P)
            m = new_mask.expand(grad.shape[0], -1, *grad.shape[2:]).flatten(2)  # (N, 1|C_out, P)
            if m.shape[1] == 1:
                grad_b = torch.bmm(g, m.transpose(1, 2)).sum(dim=(0, 2))
            else:
                grad_b = (g * m).sum(dim=(0, 2))
        return grad_x, None, grad_w, grad_b, None, None, None


class PartialConv2d(_PartialConvMixin, nn.Conv2d):
    """2-D partial convolution; a drop-in ``nn.Conv2d`` with a mask.

    Takes every ``nn.Conv2d`` argument, has the same ``state_dict`` keys, and also accepts the
    reference implementation's keyword options.

    Args:
        *args, **kwargs: as for ``nn.Conv2d``.
        multi_channel: return the updated mask ``C_out`` channels wide (as the reference
            implementation does). Input masks of one or ``C_in`` channels are accepted either way.
        return_mask: ``forward`` returns ``(output, mask)`` instead of ``output``.

    Example:
        >>> import torch
        >>> conv = PartialConv2d(3, 16, 3, padding=1, return_mask=True)
        >>> image, mask = torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32)
        >>> mask[..., 8:16, 8:16] = 0  # (N, 1, H, W): 1 = known, 0 = hole
        >>> out, new_mask = conv(image, mask)
        >>> out.shape, new_mask.shape
        (torch.Size([1, 16, 32, 32]), torch.Size([1, 1, 32, 32]))
        >>> new_mask[0, 0, 8, 8].item(), new_mask[0, 0, 12, 12].item()  # the hole shrinks by a pixel
        (1.0, 0.0)
    """

    _spatial_dims = 2

    def __init__(self, *args: Any, multi_channel: bool = False, return_mask: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_partial(multi_channel, return_mask)


class PartialConv3d(_PartialConvMixin, nn.Conv3d):
    """3-D partial convolution for volumes (radar, medical); see :class:`PartialConv2d`."""

    _spatial_dims = 3

    def __init__(self, *args: Any, multi_channel: bool = False, return_mask: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_partial(multi_channel, return_mask)
