"""The inpainting loss of Liu et al. 2018 (arXiv 1804.07723), section 3.4.

    L = L_valid + 6 L_hole + 0.05 L_perceptual + 120 (L_style_out + L_style_comp) + 0.1 L_tv

plus, optionally (weight 0 by default, not in the paper), ``1 - SSIM`` of the composite: the
structural similarity the evaluation reports, which the L1 terms alone do not raise.

Each term is a plain function; :class:`InpaintingLoss` holds the weights and the VGG16
extractor and returns every term for logging. Masks: 1 = known, 0 = hole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pconv.configs import LossWeights
from pconv.vgg import VGG16Features

__all__ = [
    "InpaintingLoss",
    "LossWeights",
    "composite",
    "gram_matrix",
    "hole_valid_losses",
    "perceptual_loss",
    "ssim",
    "style_loss",
    "total_variation_loss",
]


def composite(output: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """``I_comp``: known pixels from ``gt``, hole pixels from ``output``."""
    return mask * gt + (1 - mask) * output


def hole_valid_losses(output: Tensor, gt: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(L_hole, L_valid)``: L1 inside / outside the holes, averaged over all elements."""
    diff = (output - gt).abs()
    numel = diff.numel()
    hole = ((1 - mask) * diff).sum() / numel
    valid = (mask * diff).sum() / numel
    return hole, valid


def gram_matrix(features: Tensor) -> Tensor:
    """``F F^T / (C H W)`` per image, in float32: ``(N, C, H, W) -> (N, C, C)``."""
    n, c, h, w = features.shape
    f = features.float().reshape(n, c, h * w)
    with torch.autocast(device_type=f.device.type, enabled=False):
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def perceptual_loss(feats: list[Tensor], gt_feats: list[Tensor]) -> Tensor:
    """Sum over layers of the mean L1 distance between features."""
    return torch.stack([F.l1_loss(f, g).float() for f, g in zip(feats, gt_feats)]).sum()


def style_loss(feats: list[Tensor], gt_feats: list[Tensor]) -> Tensor:
    """Sum over layers of the mean L1 distance between Gram matrices (the paper's 1/C_p^2)."""
    return torch.stack([F.l1_loss(gram_matrix(f), gram_matrix(g)) for f, g in zip(feats, gt_feats)]).sum()


def total_variation_loss(comp: Tensor, mask: Tensor) -> Tensor:
    """L1 of neighbouring differences of ``I_comp`` over the 1-pixel dilation of the holes.

    A pair of horizontally (vertically) adjacent pixels counts only when both lie in the
    dilated hole region; the sum is divided by the number of elements of ``I_comp``.
    """
    hole = 1 - mask[:, :1].to(comp.dtype)
    region = F.max_pool2d(hole, 3, stride=1, padding=1)  # (N, 1, H, W), 1 = dilated hole
    horiz = region[..., :, 1:] * region[..., :, :-1]
    vert = region[..., 1:, :] * region[..., :-1, :]
    tv_h = (horiz * (comp[..., :, 1:] - comp[..., :, :-1]).abs()).sum()
    tv_v = (vert * (comp[..., 1:, :] - comp[..., :-1, :]).abs()).sum()
    return (tv_h + tv_v) / comp.numel()


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean structural similarity of two ``(N, C, H, W)`` batches, computed as scikit-image's
    ``structural_similarity`` does by default (7x7 uniform window, sample covariance, the border
    of half a window left out, channels averaged), so the loss optimises the reported metric."""
    win = 7
    if min(x.shape[-2:]) < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} pixels, got {tuple(x.shape[-2:])}")
    x, y = x.float(), y.float()
    with torch.autocast(device_type=x.device.type, enabled=False):

        def mean(t: Tensor) -> Tensor:
            return F.avg_pool2d(t, win, stride=1)

        cov = win * win / (win * win - 1)  # sample covariance
        mx, my = mean(x), mean(y)
        vx = cov * (mean(x * x) - mx * mx)
        vy = cov * (mean(y * y) - my * my)
        vxy = cov * (mean(x * y) - mx * my)
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        return s.mean()


class InpaintingLoss(nn.Module):
    """The paper's total loss; ``forward`` returns a dict of every term and ``"total"``.

    Args:
        vgg: a :class:`VGG16Features` extractor (needed when the perceptual or style weight
            is non-zero).
        weights: term weights; :class:`LossWeights` defaults are the paper's.

    Images are expected in [0, 1] (the range the VGG normalisation assumes); grayscale is
    repeated to RGB for the VGG terms.
    """

    def __init__(self, vgg: VGG16Features | None, weights: LossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or LossWeights()
        if self.weights.needs_vgg and vgg is None:
            raise ValueError(
                "the perceptual and style terms need a VGG16Features; set their weights to 0 to go without"
            )
        self.vgg = vgg

    def forward(self, output: Tensor, gt: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """``output``/``gt`` (N, C, H, W), ``mask`` (N, 1|C, H, W) with 1 = known."""
        mask = mask.to(output.dtype)
        w = self.weights
        comp = composite(output, gt, mask)
        hole, valid = hole_valid_losses(output, gt, mask)
        terms = {"valid": valid, "hole": hole, "tv": total_variation_loss(comp, mask)}
        terms["ssim"] = 1 - ssim(comp, gt) if w.ssim else torch.zeros((), device=output.device)
        if self.vgg is not None and w.needs_vgg:
            n = output.shape[0]
            feats = self.vgg(torch.cat([output, comp, gt], dim=0))  # one pass for all three
            out_f = [f[:n] for f in feats]
            comp_f = [f[n : 2 * n] for f in feats]
            gt_f = [f[2 * n :].detach() for f in feats]
            terms["perceptual"] = perceptual_loss(out_f, gt_f) + perceptual_loss(comp_f, gt_f)
            terms["style_out"] = style_loss(out_f, gt_f)
            terms["style_comp"] = style_loss(comp_f, gt_f)
        else:
            zero = torch.zeros((), device=output.device)
            terms.update(perceptual=zero, style_out=zero, style_comp=zero)
        terms["total"] = (
            w.valid * terms["valid"]
            + w.hole * terms["hole"]
            + w.perceptual * terms["perceptual"]
            + w.style * (terms["style_out"] + terms["style_comp"])
            + w.tv * terms["tv"]
            + w.ssim * terms["ssim"]
        )
        return terms
