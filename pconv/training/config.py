"""What a training run depends on: nested frozen dataclasses, checked by :func:`check`.

Each field carries its help text (and, where needed, command-line options) in its metadata, so
every option is written once (:mod:`pconv.train` builds ``train.py``'s flags from them).
``config.json`` and checkpoints store the flat form (``--loss-hole`` is ``loss_hole``, everything
else its field name), which is what ``--resume`` compares.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pconv.configs import BASE_FILLS, LossWeights, PConvUNetConfig, UNet3PlusConfig
from pconv.errors import ConfigError
from pconv.masks import DEFAULT_MIX, KINDS, MIXES, parse_kind, parse_ratio
from pconv.models import ARCHITECTURES

__all__ = [
    "RESUMABLE",
    "STAGES",
    "DataConfig",
    "LossConfig",
    "ModelChoice",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "check",
]

STAGES = ("pretrain", "finetune", "both")
# Options that may change when a run is resumed; any other must match the saved run.
RESUMABLE = {
    "steps",
    "epochs",
    "finetune_steps",
    "finetune_epochs",
    "workers",
    "device",
    "val_every",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "early_stop",
    "compile",
    "resume",
    "overwrite",
    "wandb",
    "wandb_group",
}


def opt(default: Any, help: str, **flag_options: Any) -> Any:
    """A dataclass field with its command-line help (and flag options: ``metavar``, ``choices``, ...)
    in its metadata."""
    return field(default=default, metadata={"help": help, **flag_options})


@dataclass(frozen=True)
class DataConfig:
    """Images, crops and holes."""

    train: str = opt("", "training images, searched recursively", metavar="DIR")
    val: str | None = opt(None, "validation images (fixed masks across the hole-ratio bins)", metavar="DIR")
    size: int = opt(512, "square crop side in pixels")
    batch_size: int = opt(6, "images per step per process")
    workers: int = opt(min(4, os.cpu_count() or 1), "data loader processes")
    masks: str | None = opt(None, "hole masks from this folder (white = hole) instead of the generator", metavar="DIR")
    invert_masks: bool = opt(False, "the mask files use white = known")
    mask_kind: str = opt(
        DEFAULT_MIX,
        f"generated hole shapes: one of {', '.join(KINDS)}; a mixture ("
        + ", ".join(f"{n}: " + ", ".join(f"{k}={v:g}" for k, v in m.items()) for n, m in MIXES.items())
        + "); or your own, e.g. strokes=1,solid=2",
        metavar="KIND|MIX",
    )
    mask_ratio: str | None = opt(None, "hole-ratio range of generated masks, e.g. 0.01-0.6", metavar="LO-HI")
    crop_scale: tuple[float, float] = opt(
        (0.25, 1.0), "area fraction range of random crops", nargs=2, metavar=("MIN", "MAX"), type=float
    )


@dataclass(frozen=True)
class ModelChoice:
    """The architecture and its size; :meth:`build` gives the architecture's own configuration."""

    arch: str = opt("pconv_unet", "architecture", choices=tuple(ARCHITECTURES))
    depth: int | None = opt(None, "encoder levels (default: pconv_unet 8 at 512 px, 7 at 256 px, ...; unet3plus 4)")
    base_width: int = opt(64, "channels of the first level")
    dropout: float = opt(0.0, "dropout probability (for Monte Carlo uncertainty)")
    conv: str = opt(
        "partial",
        "unet3plus: partial convolutions, or plain ones with the mask as an input channel",
        choices=("partial", "plain"),
    )
    deep_weight: float = opt(0.25, "unet3plus: weight of the deep-supervision outputs' L1 terms")
    base_fill: str = opt(
        "none",
        "pconv_unet: pushpull = the gated model: the network predicts the image and a per-pixel weight g, "
        "output = push-pull fill + g * (image - fill), g starting at zero (an untrained model is the fill; "
        "--init from a direct model keeps its image); none = predict the image, as in the paper",
        choices=BASE_FILLS,
    )
    gate_head: int = opt(
        0,
        "with --base-fill: hidden width of a small convolutional head added to the gate, which also "
        "sees the fill and the prediction's difference from it (0 = the gate is one channel of the "
        "last layer); it starts at zero, so --init from a gated model starts at that model",
    )
    gate_only: bool = opt(
        False,
        "with --base-fill and --init: train the gate alone; the network's prediction (every other "
        "weight, BatchNorm statistics included) stays that of the --init model",
    )

    def build(self, size: int) -> PConvUNetConfig | UNet3PlusConfig:
        """The architecture's configuration dataclass for crops of ``size`` pixels."""
        if self.arch == "unet3plus":
            return UNet3PlusConfig(
                depth=self.depth or 4, base_width=self.base_width, conv=self.conv, dropout=self.dropout
            )
        depth = self.depth if self.depth is not None else max(2, min(8, int(math.log2(size)) - 1))
        return PConvUNetConfig(
            depth=depth,
            base_width=self.base_width,
            dropout=self.dropout,
            base_fill=self.base_fill,
            gate_head=self.gate_head,
        )


@dataclass(frozen=True)
class ScheduleConfig:
    """Stages, their lengths and learning rates."""

    stage: str = opt("both", "which stages to run", choices=STAGES)
    steps: int | None = opt(None, "stage 1 length in steps (default 10000)")
    epochs: float | None = opt(None, "stage 1 length in epochs (instead of --steps)")
    finetune_steps: int | None = opt(None, "stage 2 length in steps (default 5000)")
    finetune_epochs: float | None = opt(None, "stage 2 length in epochs")
    lr: float = opt(2e-4, "stage 1 learning rate")
    finetune_lr: float = opt(5e-5, "stage 2 learning rate")
    weight_decay: float = opt(0.0, "L2 weight decay")
    lr_milestones: tuple[float, ...] = opt(
        (),
        "multiply the learning rate by --lr-gamma at these steps (or fractions of the stage, e.g. 0.9 0.95)",
        nargs="+",
        metavar="M",
        type=float,
    )
    lr_gamma: float = opt(0.1, "step decay factor")
    lr_schedule: str = opt(
        "step",
        "step: constant but for the --lr-milestones; linear: decay to zero over each stage (a resumed run continues "
        "it; --lr-milestones still apply)",
        choices=("step", "linear"),
    )
    early_stop: int | None = opt(
        None, "end a stage after this many validations without a better PSNR", metavar="PATIENCE"
    )
    init: str | None = opt(None, "start from these weights (release file or checkpoint)", metavar="FILE")
    ema: float = opt(
        0.0,
        "keep an exponential moving average of the weights with this decay (e.g. 0.999; warmed up over the "
        "first steps): validation, best.pt and the release use it; 0 = off",
        metavar="DECAY",
    )


@dataclass(frozen=True)
class LossConfig:
    """The loss terms' weights (the paper's by default) and the VGG16 behind two of them."""

    vgg_weights: str = opt(
        "auto",
        "VGG16 for the perceptual/style terms: imagenet (torchvision's, downloaded "
        "once), hed (real VGG16 features shipped in weights/, from the HED edge detector), a file, "
        "none = random frozen features, or auto = imagenet when it is already downloaded, else hed",
        metavar="auto|imagenet|hed|PATH|none",
    )
    weights: LossWeights = field(default_factory=LossWeights)


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run goes: output folder, device, intervals."""

    out: str = opt("runs/pconv", "output folder", metavar="RUN_DIR")
    seed: int = opt(0, "random seed")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    amp: str = opt(
        "auto",
        "mixed precision: auto = on with CUDA (bf16, else fp16); on = also on a CPU with native "
        "bf16 (AVX512-BF16 or AMX)",
        choices=("auto", "on", "off"),
    )
    channels_last: bool = opt(False, "channels_last memory format")
    compile: bool = opt(False, "torch.compile the model")
    val_every: int = opt(1000, "validate every N steps")
    val_masks: int = opt(
        1,
        "masks per validation image, cycling the six hole-ratio bins; more gives a steadier "
        "best.pt on a small validation folder",
        metavar="N",
    )
    log_every: int = opt(10, "log every N steps")
    sample_every: int = opt(500, "write a sample grid every N steps, 0 = never")
    checkpoint_every: int = opt(500, "save last.pt every N steps")
    wandb: str | None = opt(
        None,
        "also log to this Weights & Biases project (offline into RUN_DIR/wandb without an "
        "API key; pip install -e .[wandb])",
        metavar="PROJECT",
    )
    wandb_group: str | None = opt(None, "Weights & Biases group of this run (a sweep sets it)", metavar="NAME")
    resume: bool = opt(False, "continue the run saved in --out")
    overwrite: bool = opt(False, "start a new run in an --out that holds another run (its files are removed)")


_SECTIONS = {"data": DataConfig, "model": ModelChoice, "schedule": ScheduleConfig, "loss": LossConfig, "run": RunConfig}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved (flat) as ``config.json`` and in every checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelChoice = field(default_factory=ModelChoice)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def model_config(self) -> PConvUNetConfig | UNet3PlusConfig:
        """The architecture's configuration dataclass for this run."""
        return self.model.build(self.data.size)

    def to_flat(self) -> dict[str, Any]:
        """One level of keys, as in ``config.json`` (tuples as lists)."""
        flat: dict[str, Any] = {}
        for name in _SECTIONS:
            for f in dataclasses.fields(getattr(self, name)):
                value = getattr(getattr(self, name), f.name)
                if isinstance(value, LossWeights):
                    flat.update({f"loss_{k}": v for k, v in dataclasses.asdict(value).items()})
                else:
                    flat[f.name] = list(value) if isinstance(value, tuple) else value
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_flat`; unknown keys (a resolved ``config.json``'s extras) are ignored.

        Values are converted to each field's type (a configuration file may give ``1e-4`` as a
        string, as PyYAML reads it); one that does not convert is a :class:`ValueError` naming it.
        """
        sections = {}
        for name, section in _SECTIONS.items():
            values = {}
            for f in dataclasses.fields(section):
                if f.name == "weights":
                    loss = {k.removeprefix("loss_"): v for k, v in flat.items() if k.startswith("loss_")}
                    values["weights"] = LossWeights(
                        **{
                            k: float(v)
                            for k, v in loss.items()
                            if k in {w.name for w in dataclasses.fields(LossWeights)}
                        }
                    )
                elif f.name in flat:
                    values[f.name] = _convert(f, flat[f.name])
            sections[name] = section(**values)
        return cls(**sections)


def _convert(f: dataclasses.Field, value: Any) -> Any:
    """``value`` as the type of field ``f`` (annotations: str, int, float, bool, their ``| None``
    forms, and tuples of floats)."""
    text = str(f.type)
    try:
        if value is None and "None" in text:
            return None
        if text.startswith("tuple"):
            if isinstance(value, str):
                value = value.replace(",", " ").split()
            return tuple(float(v) for v in value)
        if text == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false"):
                return str(value).lower() == "true"
            raise ValueError
        if isinstance(value, bool):  # True is an int to Python, not to a user
            raise ValueError
        if text.startswith("int"):
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if text.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{f.name}: {value!r} is not a valid {text.replace(' | None', '')}") from None


def check(cfg: TrainConfig) -> None:
    """Refuse impossible combinations with one clear line each.

    Raises:
        ConfigError: the first problem found (named by its ``train.py`` flag).
    """
    d, r = cfg.data, cfg.run
    for key, value in cfg.to_flat().items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{key.replace('_', '-')} must be a finite number, got {value}")
    s = cfg.schedule
    if not (s.lr >= 0 and s.finetune_lr >= 0 and s.weight_decay >= 0 and s.lr_gamma > 0):
        raise ConfigError("--lr, --finetune-lr and --weight-decay must be at least 0 and --lr-gamma positive")
    negative = [k for k, v in dataclasses.asdict(cfg.loss.weights).items() if v < 0]
    if negative:
        raise ConfigError(f"loss weights must be at least 0: --loss-{negative[0].replace('_', '-')}")
    if d.size < 16 or d.batch_size < 1 or d.workers < 0:
        raise ConfigError("--size must be at least 16, --batch-size at least 1 and --workers at least 0")
    if r.val_masks < 1:
        raise ConfigError(f"--val-masks must be at least 1, got {r.val_masks}")
    if not 0 <= cfg.schedule.ema < 1:
        raise ConfigError(f"--ema must be in [0, 1), got {cfg.schedule.ema}")
    if not 0 < d.crop_scale[0] <= d.crop_scale[1] <= 1:
        raise ConfigError(f"--crop-scale must satisfy 0 < MIN <= MAX <= 1, got {d.crop_scale}")
    try:
        parse_kind(d.mask_kind)
        if d.mask_ratio is not None:
            parse_ratio(d.mask_ratio)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if d.masks is not None and d.mask_ratio is not None:
        raise ConfigError("--mask-ratio applies to generated masks, not to --masks DIR")
    m = cfg.model
    if m.arch != "pconv_unet" and (m.base_fill != "none" or m.gate_head):
        raise ConfigError("--base-fill and --gate-head apply to --arch pconv_unet")
    if m.gate_only and not (m.base_fill != "none" and cfg.schedule.init):
        raise ConfigError("--gate-only needs --base-fill and --init (the model whose prediction the gate weighs)")
    if m.gate_only and cfg.schedule.weight_decay:
        raise ConfigError("--gate-only keeps every other weight as it is; --weight-decay would shrink them")
    try:
        cfg.model_config()  # the architecture checks its own fields, named here by their flags
    except ValueError as err:
        fields = "|".join(f.name for f in dataclasses.fields(ModelChoice))
        raise ConfigError(re.sub(rf"\b({fields})\b", lambda n: "--" + n[0].replace("_", "-"), str(err))) from None
