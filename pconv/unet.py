"""The PConv U-Net of Liu et al. 2018 (arXiv 1804.07723), section 3.3 and appendix.

Masks stay one channel wide through the whole network. Each block re-zeroes its features
where its updated mask is 0, so every next layer receives already-masked input (the paper's
``X * M``) without an extra full-size product. The decoder's concatenated mask is never
materialised: the fraction of known channels, ``(C1 * m_up + C2 * m_skip) / (C1 + C2)``, is
all a partial convolution needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pconv.configs import FILL_SMOOTH, GATE_GAIN, PConvUNetConfig
from pconv.fill import push_pull
from pconv.network import InpaintingNet, prepare_inputs
from pconv.partialconv import PartialConv2d

__all__ = ["PConvUNet", "PConvUNetConfig", "zero_fill_correction"]


class _Block(nn.Module):
    """Partial convolution, optional BatchNorm, re-zeroing of holes, activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bn: bool, act: nn.Module | None) -> None:
        super().__init__()
        self.conv = PartialConv2d(cin, cout, kernel, stride, kernel // 2, bias=not bn)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.act = act

    def forward(self, x: Tensor, coverage: Tensor | None) -> tuple[Tensor, Tensor]:
        h, mask = self.conv.masked_forward(x, coverage)  # (N, C, H', W'), (N, 1, H', W')
        if self.bn is not None:
            # BatchNorm moves hole values away from 0; zero them again in place (BN's
            # backward needs its input, not its output) so the next layer sees masked input.
            h = self.bn(h).mul_(mask)
        if self.act is not None:
            h = self.act(h)
        return h, mask


class PConvUNet(InpaintingNet):
    """U-Net of partial convolutions that predicts the image inside the holes.

    With ``base_fill="pushpull"`` (the gated model) the network predicts the image and a per-pixel
    weight ``g``, and returns ``fill + g * (image - fill)`` over the push-pull fill of its input
    (:func:`pconv.fill.push_pull`, computed inside ``forward``, so every tool and export gets it);
    ``g`` starts at zero, so an untrained gated model is that fill.

    Args:
        config: the architecture; keyword arguments build one if ``config`` is ``None``.

    Example:
        >>> import torch
        >>> model = PConvUNet(depth=7).eval()
        >>> image, mask = torch.rand(1, 3, 256, 256), torch.ones(1, 1, 256, 256)
        >>> mask[..., 96:160, 96:160] = 0  # (N, 1, H, W): 1 = known, 0 = hole
        >>> with torch.no_grad():
        ...     pred = model(image, mask)
        >>> filled = mask * image + (1 - mask) * pred
        >>> filled.shape
        torch.Size([1, 3, 256, 256])
    """

    config_class = PConvUNetConfig

    def __init__(self, config: PConvUNetConfig | None = None, **kwargs: object) -> None:
        super().__init__(config, **kwargs)
        config = self.config
        cin = config.in_channels
        cout = config.out_channels or cin
        widths, kernels = config.widths, config.kernels
        gated = config.base_fill != "none"
        self.encoder = nn.ModuleList()
        prev = cin
        for i, (w, k) in enumerate(zip(widths, kernels)):
            self.encoder.append(_Block(prev, w, k, 2, bn=i > 0, act=nn.ReLU()))
            prev = w
        # Decoder level i joins the upsampled deeper features with the skip of encoder level i-1
        # (level 0 is the input image), from the deepest level up.
        skips = [cin, *widths[:-1]]
        self.decoder = nn.ModuleList()
        for i in reversed(range(config.depth)):
            last = i == 0
            target = cout + int(gated) if last else skips[i]  # + the gate's channel
            act = None if last else nn.LeakyReLU(0.2)
            self.decoder.append(_Block(prev + skips[i], target, 3, 1, bn=not last, act=act))
            prev = target
        self.gate_head: nn.Sequential | None = None
        if config.gate_head:
            # reads the last layer's input, the mask, the fill, the difference and its magnitude
            head_in = self.decoder[-1].conv.in_channels + 1 + 3 * cout
            width = config.gate_head
            self.gate_head = nn.Sequential(
                nn.Conv2d(head_in, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1)
            )
        if gated:
            zero_fill_correction(self)  # an untrained gated model is exactly its base fill

    @property
    def multiple(self) -> int:
        """Input sizes are padded internally to a multiple of this: ``2**min(depth, PAD_LEVELS)``
        (:data:`pconv.configs.PAD_LEVELS`, :attr:`PConvUNetConfig.multiple`).

        The levels below see odd sizes: a stride-2 layer rounds up, and the decoder crops its
        upsampled features to the skip's size. Padding to ``2**depth`` (128 for the release) made
        a 100-px crop around a small hole cost a 128-px one, and crops were sized in steps of 128:
        photos with many small holes now send 0.47x the pixels through the model for the same fills
        (-0.002 dB per case), thin strokes 0.79x for -0.024 dB (their crops see a little less
        context): ``benchmarks/bench_crops.py --blobs --upscale 2 --pad-levels 7`` and ``--sparse``.
        """
        return self.config.multiple

    @property
    def graph_multiple(self) -> int:
        """``2**depth``: an exported graph's sizes halve exactly at every level."""
        return 2**self.config.depth

    def forward(self, image: Tensor, mask: Tensor, sample: bool = False) -> Tensor:
        """Predict the image; any height and width.

        Args:
            image: ``(N, C_in, H, W)``, in the range the caller normalises to (the command-line
                tools use RGB in [0, 1]); values in the holes are ignored.
            mask: ``(N|1, 1, H, W)`` float or bool, 1 = known, 0 = hole.
            sample: keep dropout on in eval mode (one Monte Carlo dropout draw).

        Returns:
            The raw prediction ``(N, C_out, H, W)`` for every pixel (of a gated model: the
            fill moved by ``g`` toward the network's prediction); composite it with the known
            pixels for the final result.
        """
        height, width = image.shape[-2:]
        image, mask = prepare_inputs(image, mask, self.config.in_channels, self.multiple)
        h, x = self._network(image, mask, sample)
        if self.config.base_fill == "none":
            return h[..., :height, :width]
        fill = self._fill(image, mask)
        pred, g = self._gated(h, x, mask, fill)
        return (fill + g * (pred - fill))[..., :height, :width]

    def predict_holes(self, image: Tensor, mask: Tensor, sample: bool = False) -> Tensor:
        """:meth:`forward` where inpainting reads it: its values at every hole pixel, for less.

        The encoder runs over the whole input (its context), the decoder and the gate head only
        over the bounding box of the batch's holes and the few pixels their 3x3 windows reach at
        each level: around small holes in a large crop that is most of the decoder's work. The
        values equal ``forward``'s up to float rounding (smaller tensors may be summed in another
        order; in float64 they agree to 1e-13); with ``sample=True`` the dropout draws are of
        the same distribution, not the same numbers for the same seed. Known pixels hold the input
        (or the prediction, inside the box): composite them with the known pixels.

        ``forward`` runs instead in training mode (BatchNorm would take its statistics from the
        box), with hooks on the model, for a subclass that overrides ``forward``, and for models
        whose decoder upsamples other than ``"nearest"`` or predicts other channels than it reads.
        """
        if (
            self.training
            or self._forward_hooks
            or self._forward_pre_hooks
            or type(self).forward is not PConvUNet.forward
            or self.config.upsample_mode != "nearest"
            or (self.config.out_channels or 0) not in (0, self.in_channels)
        ):
            return self(image, mask, sample=sample)
        height, width = image.shape[-2:]
        image, mask = prepare_inputs(image, mask, self.config.in_channels, self.multiple)
        result = image.masked_fill(mask == 0, 0)
        holes = (mask[..., :height, :width] == 0).flatten(0, 1).any(0)  # (H, W): a hole in any item
        hole_rows, hole_cols = holes.any(1).nonzero()[:, 0], holes.any(0).nonzero()[:, 0]
        if hole_rows.numel() == 0:
            return result[..., :height, :width]
        y0, y1, x0, x1 = torch.stack([hole_rows[0], hole_rows[-1], hole_cols[0], hole_cols[-1]]).tolist()
        box = (y0, y1 + 1, x0, x1 + 1)
        # the gate head's two 3x3 convolutions read its inputs 2 pixels around the box
        reach = _grow(box, 2 if self.gate_head is not None else 0, image.shape[-2:])
        h, x = self._network(image, mask, sample, reach)
        if self.config.base_fill != "none":
            fill = _cut(self._fill(image, mask), reach)
            pred, g = self._gated(h, x, _cut(mask, reach), fill)
            h = fill + g * (pred - fill)
        _cut(result, box).copy_(_cut(h, _within(box, reach)))
        return result[..., :height, :width]

    def gate(self, image: Tensor, mask: Tensor) -> Tensor:
        """``g`` of a gated model, ``(N, 1, H, W)``: how far each pixel's output moves from the
        push-pull fill (0) toward the network's prediction (1); only hole pixels matter."""
        if self.config.base_fill == "none":
            raise ValueError("gate needs a gated model (a base fill)")
        height, width = image.shape[-2:]
        image, mask = prepare_inputs(image, mask, self.config.in_channels, self.multiple)
        h, x = self._network(image, mask, False)
        _, g = self._gated(h, x, mask, self._fill(image, mask))
        return g[..., :height, :width]

    def _fill(self, image: Tensor, mask: Tensor) -> Tensor:
        """The base fill, of the padded input (padding is unknown, so it adds no context): the
        same fill as an exported graph computes, whose input is padded before it runs."""
        return push_pull(image, mask, smooth=FILL_SMOOTH)

    def _gated(self, h: Tensor, x: Tensor, mask: Tensor, fill: Tensor) -> tuple[Tensor, Tensor]:
        """The prediction and ``g`` from the last layer's output ``h`` (image channels, then the
        gate's) and input ``x`` (which the gate head reads)."""
        pred, gate = h[:, :-1], h[:, -1:]
        if self.gate_head is not None:
            diff = pred - fill
            gate = gate + self.gate_head(torch.cat([x, mask, fill, diff, diff.abs()], dim=1))
        return pred, GATE_GAIN * gate

    def _network(self, image: Tensor, mask: Tensor, sample: bool, box: _Box | None = None) -> tuple[Tensor, Tensor]:
        """The U-Net on a padded input: the last layer's output and its input, over the whole
        input, or (nearest upsampling only) over ``box``, the decoder run only where it reaches
        ``box``. The whole input takes no box arithmetic (an export traces symbolic sizes)."""
        h, m = image.masked_fill(mask == 0, 0), mask  # select: NaN or Inf in a hole stays out
        skips: list[tuple[Tensor, Tensor]] = []
        for block in self.encoder:
            skips.append((h, m))
            h, m = block(h, m)  # (N, C_i, H/2^i, W/2^i), (N, 1, ...)
            h = self.dropout(h, sample)
        reads = _decoder_reads(box, [s.shape[-2:] for s, _ in skips]) if box is not None else None
        if reads is not None:
            out = _halve(reads[-1])
            h, m = _cut(h, out), _cut(m, out)
        last = len(self.decoder) - 1
        for j, block in enumerate(self.decoder):
            skip_h, skip_m = skips[-1 - j]
            if reads is None:  # the whole level: odd below the padding's levels, crop the upsampling
                rows, cols = slice(0, skip_h.shape[-2]), slice(0, skip_h.shape[-1])
            else:  # the upsampled deeper box starts at twice its origin: keep the part read here
                read = reads[-1 - j]
                rows = slice(read[0] - 2 * out[0], read[1] - 2 * out[0])
                cols = slice(read[2] - 2 * out[2], read[3] - 2 * out[2])
                skip_h, skip_m = _cut(skip_h, read), _cut(skip_m, read)
            up_h = F.interpolate(h, scale_factor=2, mode=self.config.upsample_mode)[..., rows, cols]
            up_m = F.interpolate(m, scale_factor=2, mode="nearest")[..., rows, cols]
            if self.config.upsample_mode != "nearest":
                up_h = up_h * up_m
            c1, c2 = up_h.shape[1], skip_h.shape[1]
            coverage = (c1 * up_m + c2 * skip_m) / (c1 + c2)  # fraction of known channels
            x = torch.cat([up_h, skip_h], dim=1)
            h, m = block(x, coverage)
            if j < last:
                h = self.dropout(h, sample)
            if reads is not None:  # exact where the 3x3 windows stay inside what was read
                out = _halve(reads[-2 - j]) if j < last else box
                h, m = _cut(h, _within(out, read)), _cut(m, _within(out, read))
                if j == last:
                    x = _cut(x, _within(out, read))
        return h, x


_Box = tuple[int, int, int, int]  # rows y0:y1, columns x0:x1


def _cut(t: Tensor, box: _Box) -> Tensor:
    return t[..., box[0] : box[1], box[2] : box[3]]


def _within(box: _Box, outer: _Box) -> _Box:
    """``box`` in the coordinates of a tensor that covers ``outer``."""
    return box[0] - outer[0], box[1] - outer[0], box[2] - outer[2], box[3] - outer[2]


def _grow(box: _Box, by: int, size: tuple[int, int] | torch.Size) -> _Box:
    """``box`` widened by ``by`` pixels on every side, within ``size``."""
    y0, y1, x0, x1 = box
    return max(y0 - by, 0), min(y1 + by, size[0]), max(x0 - by, 0), min(x1 + by, size[1])


def _decoder_reads(box: _Box, sizes: list[torch.Size]) -> list[_Box]:
    """The box each decoder block reads, level 0 (the input's size) first; ``sizes`` are the
    levels' sizes. A block's output must be right over the box the block above reads from it (at
    level 0: ``box``), so it reads that box widened by its 3x3 window, cut at the level's border
    (where a window sees zero padding either way); the deeper box is what upsamples onto it."""
    reads = []
    for size in sizes:
        reads.append(_grow(box, 1, size))
        box = _halve(reads[-1])
    return reads


def _halve(box: _Box) -> _Box:
    """The box one level deeper whose nearest 2x upsampling covers ``box``."""
    y0, y1, x0, x1 = box
    return y0 // 2, (y1 + 1) // 2, x0 // 2, (x1 + 1) // 2


@torch.no_grad()
def zero_fill_correction(model: PConvUNet) -> PConvUNet:
    """Zero the gate of a gated model (the last layer's gate channel and the gate head's last
    layer), so the model returns exactly its fill. How a gated model is built, and how
    :mod:`pconv.training.surgery` starts one from the weights of a model that predicted the image."""
    if model.config.base_fill == "none":
        raise ValueError("a model without a base fill has no gate to zero")
    last = model.decoder[-1].conv
    last.weight[-1:].zero_()
    last.bias[-1:].zero_()
    if model.gate_head is not None:
        model.gate_head[-1].weight.zero_()
        model.gate_head[-1].bias.zero_()
    return model
