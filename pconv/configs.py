"""Hyper-parameters of the networks and of the loss, as plain dataclasses.

They import no torch, so a command line can parse its options (and print ``--help``) and a
configuration file can be read before PyTorch loads. The networks and the loss import them from
here: :class:`~pconv.PConvUNetConfig` describes a :class:`~pconv.PConvUNet`,
:class:`~pconv.UNet3PlusConfig` a :class:`~pconv.UNet3Plus`, :class:`~pconv.LossWeights` an
:class:`~pconv.InpaintingLoss`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = [
    "BASE_FILLS",
    "FILL_SMOOTH",
    "GATE_GAIN",
    "OPSET",
    "PAD_LEVELS",
    "LossWeights",
    "PConvUNetConfig",
    "UNet3PlusConfig",
    "migrate_pconv_unet",
]

# Levels of a PConv U-Net's encoder whose input sizes are exact multiples of 2 (see
# PConvUNet.multiple); read when used, so a benchmark can set it.
PAD_LEVELS = 5

# Base fills a gated PConv U-Net weighs its prediction against (PConvUNetConfig.base_fill).
BASE_FILLS = ("none", "pushpull")
# The gated model's constants (every file of it so far has these): 3x3 smoothing passes of the
# push-pull fill inside the holes, and the factor from the gate channel to g. The channel starts at
# zero and Adam moves a weight by about the learning rate per step, so at a gain of 1 g barely left
# zero in a CPU run; at 10 it reaches the weights a fixed blend prefers (0.75-1) within one.
FILL_SMOOTH = 20
GATE_GAIN = 10.0
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
        base_fill: ``"none"``: the paper's model, which predicts the image; ``"pushpull"``: the
            gated model over the push-pull fill of its input (:func:`pconv.fill.push_pull`, with
            :data:`FILL_SMOOTH` smoothing passes): the network predicts the image and a
            per-pixel weight ``g``, and the output is ``fill + g * (image - fill)``. ``g`` is
            :data:`GATE_GAIN` times a channel of the last layer that starts at zero, so an
            untrained gated model returns exactly the fill and learns where to trust the network.
        gate_head: with a base fill, the hidden width of a small convolutional head (3x3 conv,
            ReLU, 3x3 conv) added to the gate, which also sees the fill and the prediction's
            difference from it, so ``g`` can fall where the prediction departs from the fill;
            0 = the gate is one channel of the last layer. Its last layer starts at zero.
    """

    in_channels: int = 3
    out_channels: int | None = None
    depth: int = 8
    base_width: int = 64
    max_width: int = 512
    upsample_mode: str = "nearest"
    dropout: float = 0.0
    base_fill: str = "none"
    gate_head: int = 0

    def __post_init__(self) -> None:
        if self.in_channels < 1 or (self.out_channels is not None and self.out_channels < 1):
            raise ValueError("in_channels and out_channels must be at least 1")
        if self.base_fill not in BASE_FILLS:
            raise ValueError(f"base_fill must be one of {', '.join(BASE_FILLS)}, got {self.base_fill!r}")
        if self.base_fill != "none" and (self.out_channels or self.in_channels) != self.in_channels:
            raise ValueError("a base fill needs out_channels equal to in_channels (the fill has the input's channels)")
        if self.gate_head < 0 or (self.gate_head and self.base_fill == "none"):
            raise ValueError(f"gate_head must be 0, or positive with a base fill, got {self.gate_head}")
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

    @property
    def multiple(self) -> int:
        """The network pads its input to a multiple of this: ``2**min(depth, PAD_LEVELS)`` (see
        :attr:`pconv.PConvUNet.multiple`)."""
        return 2 ** min(self.depth, PAD_LEVELS)

    def to_dict(self) -> dict:
        return asdict(self)


def migrate_pconv_unet(stored: dict) -> dict:
    """The fields of a :class:`PConvUNetConfig` from a configuration stored by any release of
    pconv (a release file's or checkpoint's metadata): the one migration of old files.

    Until the seventh round, gated models were stored as ``fill_gate: true`` with their constants
    (``fill_smooth`` 20, ``gate_gain`` 10) and a ``fill_input: false``; now ``base_fill`` alone says
    whether a model is gated. The experiments' other combinations (the fill as input channels, an
    ungated residual ``out = h + fill``, other constants) were never released and no longer build.

    Raises:
        ValueError: a configuration of one of those experiments (naming what it used).
    """
    fields = dict(stored)
    old = {"fill_gate", "fill_input", "fill_smooth", "gate_gain"} & set(fields)
    if not old:
        return fields  # today's format (or a direct model from before base_fill existed)
    # the old format: each field with the default it had then
    gated = fields.pop("fill_gate", False)
    fill_input = fields.pop("fill_input", False)
    smooth = fields.pop("fill_smooth", FILL_SMOOTH)
    gain = fields.pop("gate_gain", 1.0)  # files saved before gate_gain existed used 1
    has_fill = fields.get("base_fill", "none") != "none"
    retired = [
        name
        for name, used in (
            ("fill_input", fill_input),
            ("an ungated residual (base_fill without fill_gate)", has_fill and not gated),
            (f"fill_smooth {smooth}", has_fill and smooth != FILL_SMOOTH),
            (f"gate_gain {gain}", has_fill and gated and gain != GATE_GAIN),
        )
        if used
    ]
    if retired:
        raise ValueError(
            f"a model made by an experiment this version no longer builds ({', '.join(retired)}); pconv 0.1 loads it"
        )
    return fields


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

    @property
    def multiple(self) -> int:
        """The network pads its input to a multiple of this: ``2**(depth - 1)``."""
        return 2 ** (self.depth - 1)

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
