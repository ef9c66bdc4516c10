"""What the trainable inpainting networks share: configuration handling, input checks and padding,
Monte Carlo dropout on request, BatchNorm freezing for the second training stage, and the
attributes of :class:`pconv.models.InpaintingModel`."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["InpaintingNet", "prepare_inputs"]


def prepare_inputs(image: Tensor, mask: Tensor, in_channels: int, multiple: int) -> tuple[Tensor, Tensor]:
    """Check shapes, expand the mask to the batch and pad both to ``multiple``.

    Padded pixels are marked unknown (mask 0); callers crop their outputs back.
    """
    if image.dim() != 4 or image.shape[1] != in_channels:
        raise ValueError(f"expected an image of shape (N, {in_channels}, H, W), got {tuple(image.shape)}")
    if (
        mask.dim() != 4
        or mask.shape[1] != 1
        or mask.shape[2:] != image.shape[2:]
        or mask.shape[0] not in (1, image.shape[0])
    ):
        raise ValueError(
            f"expected a mask of shape (N, 1, {image.shape[2]}, {image.shape[3]}), got {tuple(mask.shape)}"
        )
    height, width = image.shape[2:]
    mask = mask.detach().to(image.dtype).expand(image.shape[0], -1, -1, -1)
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h))
    return image, mask


class InpaintingNet(nn.Module):
    """Base class of the registered architectures (:data:`pconv.models.ARCHITECTURES`).

    Subclasses set ``config_class``, build their layers in ``__init__`` after calling this one
    (with an ``encoder`` module whose BatchNorm layers the second stage freezes), and implement
    ``multiple`` and ``forward(image, mask, sample=False)``, applying :meth:`dropout`.
    """

    config_class: type

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = self.config_class(**kwargs)
        elif kwargs:
            raise TypeError("pass either a config or keyword arguments, not both")
        self.config = config
        # the hole depth it handles at full resolution: set from its release file by load_model
        self.hole_depth: float | None = None
        self._frozen_bn: str | None = None  # "encoder" or "all": whose BatchNorm keeps its statistics

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def can_sample(self) -> bool:
        """Whether ``forward(..., sample=True)`` draws Monte Carlo dropout samples."""
        return self.config.dropout > 0

    @property
    def multiple(self) -> int:
        """Input sizes are padded internally to a multiple of this; tiles are aligned to it."""
        raise NotImplementedError

    @property
    def graph_multiple(self) -> int:
        """Sides at which every level halves exactly: what an exported graph takes (its symbolic
        sizes assume it); :attr:`multiple` unless the network pads less than that."""
        return self.multiple

    def predict_holes(self, image: Tensor, mask: Tensor, sample: bool = False) -> Tensor:
        """What inpainting reads of ``forward``: the same values at hole pixels; other pixels may
        hold anything finite. Subclasses compute less where they can."""
        return self(image, mask, sample=sample)

    def dropout(self, x: Tensor, sample: bool) -> Tensor:
        """Dropout at the configured rate while training, or in eval mode when sampling."""
        p = self.config.dropout
        return F.dropout(x, p, training=True) if p > 0 and (self.training or sample) else x

    def freeze_encoder_bn(self, frozen: bool = True) -> InpaintingNet:
        """Second training stage: encoder BatchNorm uses and keeps its running statistics.

        Its affine parameters still learn; decoder BatchNorm is unaffected. Stays in force
        across ``train()``/``eval()`` calls.
        """
        return self.freeze_bn("encoder" if frozen else None)

    def freeze_bn(self, part: str | None) -> InpaintingNet:
        """BatchNorm in ``part`` (``"encoder"``, ``"all"``, or ``None`` for none) uses and keeps its
        running statistics, across ``train()``/``eval()`` calls. Changes no weight."""
        if part not in (None, "encoder", "all"):
            raise ValueError(f"part must be None, 'encoder' or 'all', got {part!r}")
        self._frozen_bn = part
        return self.train(self.training)

    def train(self, mode: bool = True) -> InpaintingNet:
        super().train(mode)
        if self._frozen_bn is not None:
            for module in (self.encoder if self._frozen_bn == "encoder" else self).modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self
