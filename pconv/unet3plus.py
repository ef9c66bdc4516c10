"""UNet3+ (Huang et al. 2020, arXiv 2004.08790) with Monte Carlo dropout, for inpainting.

The model scientists use to fill an instrument's blind zone (e.g. the lowest radar rows) with a
per-pixel uncertainty: dropout after every pooling and upsampling stays on when sampling
(Gal and Ghahramani 2016), and every decoder level has a deep-supervision head.

Each decoder level gathers *every* encoder level (max-pooled down or upsampled up to its
scale) and every deeper decoder level, passes each through one conv block to ``filters``
channels, concatenates them and fuses them with one more conv block. Convolutions are either
:class:`~pconv.PartialConv2d` (mask-aware, masks one channel wide as in :class:`~pconv.PConvUNet`)
or plain ``nn.Conv2d`` with the mask as an extra input channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pconv.configs import UNet3PlusConfig
from pconv.network import InpaintingNet, prepare_inputs
from pconv.partialconv import PartialConv2d

__all__ = ["UNet3Plus", "UNet3PlusConfig"]


class _ConvBlock(nn.Module):
    """3x3 convolution, BatchNorm, ReLU; partial convolutions re-zero the holes after BatchNorm."""

    def __init__(self, cin: int, cout: int, partial: bool) -> None:
        super().__init__()
        conv = PartialConv2d if partial else nn.Conv2d
        self.conv = conv(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.partial = partial

    def forward(self, x: Tensor, coverage: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if not self.partial:
            return F.relu(self.bn(self.conv(x))), None
        h, mask = self.conv.masked_forward(x, coverage)
        return F.relu(self.bn(h).mul_(mask)), mask


class _Level(nn.Module):
    """An encoder level: two conv blocks."""

    def __init__(self, cin: int, cout: int, partial: bool) -> None:
        super().__init__()
        self.first = _ConvBlock(cin, cout, partial)
        self.second = _ConvBlock(cout, cout, partial)

    def forward(self, x: Tensor, coverage: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return self.second(*self.first(x, coverage))


class UNet3Plus(InpaintingNet):
    """UNet3+ that predicts the image inside the holes; any image size.

    Args:
        config: the architecture; keyword arguments build one if ``config`` is ``None``.

    ``forward(image, mask)`` returns the full-resolution prediction; ``forward(image, mask,
    deep=True)`` returns the list of every deep-supervision output (full resolution first, then
    each coarser decoder level upsampled to full size), which the training loss weights in.
    """

    config_class = UNet3PlusConfig

    def __init__(self, config: UNet3PlusConfig | None = None, **kwargs: object) -> None:
        super().__init__(config, **kwargs)
        config = self.config
        partial = config.conv == "partial"
        cin = config.in_channels + (0 if partial else 1)
        cout = config.out_channels or config.in_channels
        widths, depth = config.widths, config.depth
        filters = config.filters or config.base_width
        fused = filters * depth
        self.encoder = nn.ModuleList()
        for w in widths:
            self.encoder.append(_Level(cin, w, partial))
            cin = w
        # branches[d][s]: source level s (encoder for s <= d and the bottom, decoder otherwise) -> level d
        self.branches = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for d in range(depth - 1):
            sources = [widths[s] if s <= d or s == depth - 1 else fused for s in range(depth)]
            self.branches.append(nn.ModuleList(_ConvBlock(c, filters, partial) for c in sources))
            self.fuse.append(_ConvBlock(fused, fused, partial))
        self.heads = nn.ModuleList(
            nn.Conv2d(fused if d < depth - 1 else widths[-1], cout, 3, padding=1) for d in range(depth)
        )

    @property
    def multiple(self) -> int:
        """Input sizes are padded internally to a multiple of this."""
        return self.config.multiple

    def forward(self, image: Tensor, mask: Tensor, sample: bool = False, deep: bool = False) -> Tensor | list[Tensor]:
        """Predict the image.

        Args:
            image: ``(N, C_in, H, W)``; values in the holes are ignored.
            mask: ``(N|1, 1, H, W)`` float or bool, 1 = known, 0 = hole.
            sample: keep dropout on in eval mode (one Monte Carlo dropout draw).
            deep: return every deep-supervision output instead of the final one.
        """
        cfg = self.config
        height, width = image.shape[-2:]
        image, mask = prepare_inputs(image, mask, cfg.in_channels, self.multiple)
        partial = cfg.conv == "partial"
        x = image.masked_fill(mask == 0, 0)  # select: NaN or Inf in a hole stays out
        h, m = (x, mask) if partial else (torch.cat([x, mask], 1), None)

        enc: list[tuple[Tensor, Tensor | None]] = []
        for i, level in enumerate(self.encoder):
            if i > 0:
                h = self.dropout(F.max_pool2d(h, 2), sample)
                m = None if m is None else F.max_pool2d(m, 2)
            h, m = level(h, m)  # (N, widths[i], H/2^i, W/2^i)
            enc.append((h, m))

        depth = cfg.depth
        dec: dict[int, tuple[Tensor, Tensor | None]] = {depth - 1: enc[-1]}
        for d in reversed(range(depth - 1)):
            parts, masks = [], []
            for s, branch in enumerate(self.branches[d]):
                src_h, src_m = enc[s] if s <= d else dec[s]
                if s < d:
                    src_h = self.dropout(F.max_pool2d(src_h, 2 ** (d - s)), sample)
                    src_m = None if src_m is None else F.max_pool2d(src_m, 2 ** (d - s))
                elif s > d:
                    scale = 2 ** (s - d)
                    src_h = F.interpolate(src_h, scale_factor=scale, mode="bilinear", align_corners=False)
                    if src_m is not None:
                        src_m = F.interpolate(src_m, scale_factor=scale, mode="nearest")
                        src_h = src_h * src_m  # bilinear blurs values into the holes
                    src_h = self.dropout(src_h, sample)
                out_h, out_m = branch(src_h, src_m)
                parts.append(out_h)
                masks.append(out_m)
            coverage = None if masks[0] is None else torch.stack(masks).mean(0)  # equal widths per branch
            dec[d] = self.fuse[d](torch.cat(parts, 1), coverage)

        final = self.heads[0](dec[0][0])[..., :height, :width]
        if not deep:
            return final
        outputs = [final]
        for d in range(1, depth):
            coarse = self.heads[d](dec[d][0])
            outputs.append(
                F.interpolate(coarse, scale_factor=2**d, mode="bilinear", align_corners=False)[..., :height, :width]
            )
        return outputs
