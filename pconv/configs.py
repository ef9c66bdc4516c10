"""Hyper-parameters of the networks and of the loss, as plain dataclasses.

They import no torch, so a command line can parse its options (and print ``--help``) and a
configuration file can be read before PyTorch loads. The networks and the loss import them from
here: :class:`~pconv.PConvUNetConfig` describes a :class:`~pconv.PConvUNet`,
:class:`~pconv.UNet3PlusConfig` a :class:`~pconv.UNet3Plus`, :class:`~pconv.LossWeights` an
:class:`~pconv.InpaintingLoss`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["BASE_FILLS", "OPSET", "LossWeights", "PConvUNetConfig", "UNet3PlusConfig"]

# Base fills a PConv U-Net can predict a correction of (PConvUNetConfig.base_fill).
BASE_FILLS = ("none", "pushpull")
# The ONNX opset that pconv.onnx_model.export_onnx (python -m pconv.export) writes by default.
OPSET = 18


@dataclass(frozen=True)
class PConvUNetConfig:
    """Architecture of a :class:`PConvUNet`; stored in every checkpoint and release file.

    Attributes:
        in_channels: image channels (1 grayscale, 3 RGB, more for multi-band instruments).
        out_channels: predicted channels; ``None`` means ``in_channels``.
        depth: number of encoder layers; 8 at 512x512 and 7 at 256x256 in the paper.
        base_width: channels of the first layer; doubled per layer up to ``max_width``.
        max_width: channel cap (512 in the paper).
        upsample_mode: ``F.interpolate`` mode for decoder features (masks always nearest).
        dropout: dropout probability after each hidden block (0 disables; used for Monte
            Carlo uncertainty).
        base_fill: ``"pushpull"``: the network predicts a correction that is added to the
            push-pull fill of its input (:func:`pconv.fill.push_pull`), and its last layer starts
            at zero, so an untrained model returns exactly that fill; ``"none"``: the paper's
            direct prediction.
        fill_input: with a base fill, also give the fill to the first layer as extra input
            channels marked known (the network then sees no holes below its first layer).
        fill_smooth: 3x3 smoothing passes of the base fill inside the holes.
        fill_gate: with a base fill, the network predicts the image and a per-pixel weight ``g``
            instead of a correction: the output is ``fill + g * (image - fill)``. ``g`` starts at
            zero (the fill) while the image channels keep the weights of a direct model they
            start from, so the run begins at the fill and learns where to trust the network.
        gate_gain: ``g`` is this times the network's gate channel. The channel starts at zero
            and Adam moves a weight by about the learning rate per step, so at gain 1 and lr 1e-4
            ``g`` stayed near 0.05 after 1,500 steps; a gain of 10 lets it reach the weights a
            fixed blend prefers (0.75-1) within a run. Files saved before this field have 1.
        gate_head: with ``fill_gate``, the hidden width of a small convolutional head (3x3 conv,
            ReLU, 3x3 conv) whose output is added to the gate channel; 0 = no head. The gate
            channel alone is a linear function of the last decoder features; the head also sees
            the fill and the prediction's difference from it, so ``g`` can fall where the
            network's texture departs from the fill. Its last layer starts at zero (``g`` as
            before).
    """

    in_channels: int = 3
    out_channels: int | None = None
    depth: int = 8
    base_width: int = 64
    max_width: int = 512
    upsample_mode: str = "nearest"
    dropout: float = 0.0
    base_fill: str = "none"
    fill_input: bool = False
    fill_smooth: int = 20
    fill_gate: bool = False
    gate_gain: float = 1.0
    gate_head: int = 0

    def __post_init__(self) -> None:
        if self.in_channels < 1 or (self.out_channels is not None and self.out_channels < 1):
            raise ValueError("in_channels and out_channels must be at least 1")
        if self.base_fill not in BASE_FILLS:
            raise ValueError(f"base_fill must be one of {', '.join(BASE_FILLS)}, got {self.base_fill!r}")
        if self.base_fill != "none" and (self.out_channels or self.in_channels) != self.in_channels:
            raise ValueError("a base fill needs out_channels equal to in_channels (the fill has the input's channels)")
        if (self.fill_input or self.fill_gate) and self.base_fill == "none":
            raise ValueError("fill_input and fill_gate need a base fill")
        if self.gate_head < 0 or (self.gate_head and not self.fill_gate):
            raise ValueError(f"gate_head must be 0, or positive with fill_gate, got {self.gate_head}")
        if not self.gate_gain > 0:
            raise ValueError(f"gate_gain must be positive, got {self.gate_gain}")
        if self.fill_smooth < 0:
            raise ValueError(f"fill_smooth must be at least 0, got {self.fill_smooth}")
        if not 2 <= self.depth <= 10:
            raise ValueError(f"depth must be between 2 and 10, got {self.depth}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.upsample_mode not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"upsample_mode must be nearest, bilinear or bicubic, got {self.upsample_mode!r}")

    @property
    def widths(self) -> list[int]:
        """Output channels of each encoder layer."""
        return [min(self.base_width * 2**i, self.max_width) for i in range(self.depth)]

    @property
    def kernels(self) -> list[int]:
        """Encoder kernel sizes: 7, 5, 5, then 3 (the paper's layout)."""
        return [(7, 5, 5)[i] if i < 3 else 3 for i in range(self.depth)]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class UNet3PlusConfig:
    """Architecture of a :class:`UNet3Plus`; stored in every checkpoint and release file.

    Attributes:
        in_channels: input channels (radar moments, grayscale, RGB, ...).
        out_channels: predicted channels; ``None`` means ``in_channels``.
        depth: encoder levels (``depth - 1`` poolings).
        base_width: channels of the first encoder level, doubled per level.
        filters: channels of each full-scale skip branch (``None``: ``base_width``).
        conv: ``"partial"`` (mask-aware partial convolutions) or ``"plain"`` (mask as an input channel).
        dropout: dropout probability after every pooling and upsampling (Monte Carlo sampling).
    """

    in_channels: int = 3
    out_channels: int | None = None
    depth: int = 4
    base_width: int = 64
    filters: int | None = None
    conv: str = "partial"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.in_channels < 1 or (self.out_channels is not None and self.out_channels < 1):
            raise ValueError("in_channels and out_channels must be at least 1")
        if not 2 <= self.depth <= 7:
            raise ValueError(f"depth must be between 2 and 7, got {self.depth}")
        if self.conv not in ("partial", "plain"):
            raise ValueError(f"conv must be 'partial' or 'plain', got {self.conv!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def widths(self) -> list[int]:
        """Channels of each encoder level."""
        return [self.base_width * 2**i for i in range(self.depth)]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms; the defaults are the paper's."""

    valid: float = 1.0
    hole: float = 6.0
    perceptual: float = 0.05
    style: float = 120.0
    tv: float = 0.1
    ssim: float = 0.0  # not in the paper: 1 - SSIM of the composite, the metric the evaluation reports

    @property
    def needs_vgg(self) -> bool:
        return self.perceptual != 0 or self.style != 0

    def to_dict(self) -> dict:
        return asdict(self)
