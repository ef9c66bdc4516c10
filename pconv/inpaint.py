"""Inpaint whole images of any size with a trained model: one pass, or crops around the holes,
each hole at its working scale (where the model runs is :mod:`pconv.tiling`'s business). Known
pixels are copied from the input unchanged.

With ``samples > 1`` the model's dropout stays active (Monte Carlo dropout, Gal and Ghahramani
2016): the result is the mean of the samples and each hole pixel gets a standard deviation.

With ``flip=True`` every prediction is the mean of the model's output for the image and for its
mirror image, mirrored back (test-time augmentation): twice the time, less of the model's
pixel-level noise. With Monte Carlo samples too, every mirrored pass counts as one more sample
(``2 * samples`` in all): the standard deviation stays that of a single pass, where averaging
each pair first would shrink it by about ``sqrt(2)``, and the standard error uses all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pconv.errors import ConfigError, InputError, NonFiniteError
from pconv.models import InpaintingModel
from pconv.options import InpaintOptions
from pconv.tiling import Box, Plan, feather, geometry_of_model, make_plan, upsample_box

__all__ = ["Cancelled", "InpaintOptions", "InpaintResult", "inpaint"]

# Crops of one size go through the model together, up to this many crops and pixels per forward
# pass (a pass is also how often a cancelled request is noticed).
BATCH_CROPS, BATCH_PIXELS = 8, 1 << 18


class Cancelled(Exception):
    """:func:`inpaint` stopped early because its ``should_stop`` callback asked it to."""


@dataclass
class InpaintResult:
    """The composite and what was computed on the way.

    Attributes:
        image: ``(H, W, C)`` uint8 composite: known pixels are the input's, holes the prediction
            (the mean over Monte Carlo samples).
        std: ``(H, W, C)`` float32 per-pixel standard deviation over the samples, in [0, 1]
            units (0 at known pixels), or ``None`` for a single pass.
        samples: Monte Carlo samples behind ``image`` and ``std`` (1 for a single pass; with
            ``flip``, twice the samples asked for: the mirrored passes count).
        tiles: how many tiles (or 1 for a single pass) went through the model.
    """

    image: np.ndarray
    std: np.ndarray | None
    tiles: int
    samples: int = 1

    @property
    def stderr(self) -> np.ndarray | None:
        """Standard error of the Monte Carlo mean, ``std / sqrt(samples)``."""
        return None if self.std is None else self.std / np.sqrt(self.samples)

    def interval(self, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper uint8 composites of the confidence interval ``mean -/+ z * stderr``."""
        if self.std is None:
            raise ValueError("a confidence interval needs Monte Carlo samples")
        mean = self.image.astype(np.float32) / 255.0
        half = z * self.stderr
        return _to_uint8(mean - half), _to_uint8(mean + half)


@dataclass(frozen=True)
class _Job:
    """One call of :func:`inpaint`: the model, its options and where it runs."""

    model: InpaintingModel
    options: InpaintOptions
    device: torch.device
    progress: bool
    should_stop: Callable[[], bool] | None

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled

    def run(self, x: torch.Tensor, m: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """The model's prediction in float32, run in the options' precision (bfloat16: under autocast)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.precision == "bfloat16"):
            # only hole pixels are read: a network computes just those where it can (asked of the
            # class: a torch.compile wrapper would hand out its eager module's method)
            predict = self.model.predict_holes if hasattr(type(self.model), "predict_holes") else self.model
            pred = predict(x, m, sample=True) if sample else predict(x, m)
        return pred.float()

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """One prediction (a Monte Carlo draw when sampling), averaged with the mirror image's
        when ``flip``; clamped to [0, 1]."""
        sample = self.options.samples > 1
        pred = self.run(x, m, sample)
        if self.options.flip:
            pred = (pred + self.run(x.flip(-1), m.flip(-1), sample).flip(-1)) / 2
        return _finite(pred).clamp_(0, 1)

    @torch.no_grad()
    def predict_many(
        self, images: list[np.ndarray], knowns: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """:meth:`predict` for crops of one size, in one forward pass (a single pass each when sampling)."""
        if len(images) == 1 or self.options.samples > 1:
            return [self.predict(image, known) for image, known in zip(images, knowns)]
        x = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        m = torch.from_numpy(np.stack(knowns)).to(self.device)[:, None].float()
        pred = self.forward(x, m).permute(0, 2, 3, 1).cpu().numpy()
        return [(p, None) for p in pred]

    @torch.no_grad()
    def predict(self, image: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Prediction ``(h, w, C)`` in [0, 1] (the mean over samples) and its variance (or ``None``)."""
        x = torch.from_numpy(np.array(image)).to(self.device).permute(2, 0, 1)[None].float().div_(255)
        m = torch.from_numpy(np.array(known)).to(self.device)[None, None].float()
        samples, batch = self.options.samples, self.options.batch
        if samples == 1:
            return self.forward(x, m)[0].permute(1, 2, 0).cpu().numpy(), None
        total = torch.zeros_like(x[0], dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        done = passes = 0
        while done < samples:
            n = min(batch, samples - done)
            xs = x.expand(n, -1, -1, -1)
            # with flip, each mirrored pass is a sample of its own: the spread stays that of one pass
            draws = [self.run(xs, m, sample=True)]
            if self.options.flip:
                draws.append(self.run(xs.flip(-1), m.flip(-1), sample=True).flip(-1))
            for pred in draws:
                pred = _finite(pred).clamp(0, 1).double()  # (n, C, h, w)
                total += pred.sum(0)
                total_sq += pred.square().sum(0)
                passes += n
            done += n
        mean = total / passes
        var = (total_sq / passes - mean.square()).clamp_(min=0) * passes / (passes - 1)
        return mean.float().permute(1, 2, 0).cpu().numpy(), var.float().permute(1, 2, 0).cpu().numpy()


def inpaint(
    model: InpaintingModel | str,
    image: np.ndarray,
    known: np.ndarray,
    options: InpaintOptions | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    plan: Plan | None = None,
    **fields: Any,
) -> InpaintResult:
    """Fill the holes of ``image``.

    Args:
        model: an :class:`~pconv.models.InpaintingModel`, e.g. a :class:`~pconv.PConvUNet`
            (put in eval mode here), or the name of a method of :data:`pconv.methods.METHODS`
            (``"model"``: the released model; ``"pushpull"``, ``"patchmatch"``, ``"telea"``, ...).
        image: ``(H, W, C)`` uint8.
        known: ``(H, W)`` bool, True = known pixel.
        options: tiles, working scale, Monte Carlo samples, flip (:class:`InpaintOptions`); or
            give its fields as keywords (``inpaint(model, image, known, scale=1)``).
        device: where the model runs (the model is moved there).
        progress: show a progress bar over tiles.
        should_stop: called before every tile; when it returns True, :class:`Cancelled` is raised
            (a server stops the work of a client that left).
        plan: where the model runs (:func:`pconv.tiling.make_plan` of ``known``, these options and
            this model), when the caller has worked it out already (a server, for its work budget).

    Raises:
        InputError: an image or mask of the wrong type or shape.
        ConfigError: bad options, an unknown method, Monte Carlo samples from a model without
            dropout, or bfloat16 for a model that is not a PyTorch module (a classical method, ONNX).
        MissingExtraError: a method whose optional dependency is not installed.
        NonFiniteError: the model gave NaN or infinite values in the holes (broken weights); nothing
            is returned.
        TypeError: ``model`` does not meet :class:`~pconv.models.InpaintingModel`.
    """
    if options is None:
        options = InpaintOptions(**fields)
    elif fields:
        raise TypeError("pass either options or their fields as keywords, not both")
    if isinstance(model, str):
        from pconv.methods import load_method

        model = load_method(model, device=device)
    if not isinstance(model, InpaintingModel):
        raise TypeError(f"{type(model).__name__} does not meet pconv.models.InpaintingModel")
    if image.ndim != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, C) uint8 image, got {image.dtype} {image.shape}")
    if known.shape != image.shape[:2]:
        raise InputError(
            f"mask {known.shape[1]}x{known.shape[0]} does not match image {image.shape[1]}x{image.shape[0]}"
        )
    if options.samples > 1 and not model.can_sample:
        raise ConfigError("Monte Carlo sampling needs a model trained with dropout (this one has none)")
    if options.precision != "float32" and not isinstance(model, torch.nn.Module):
        name = getattr(model, "name", type(model).__name__)
        raise ConfigError(f"precision {options.precision} applies to PyTorch models, not to {name}")
    device = torch.device(device)
    job = _Job(model.to(device).eval(), options, device, progress, should_stop)
    if plan is None:
        plan = make_plan(known, options, *geometry_of_model(model))
    return _multiscale(job, image, known, plan)


def _multiscale(job: _Job, image: np.ndarray, known: np.ndarray, plan: Plan) -> InpaintResult:
    """Run every scale level of ``plan`` and paste each level's fill into its own holes."""
    samples = job.options.samples
    out = image.copy()
    std = np.zeros(image.shape, np.float32) if samples > 1 else None
    height, width = known.shape
    tiles = 0
    for planned in plan.levels:
        level = planned.level
        mine = level.mine
        if level.factor == 1:
            tiles += _inpaint(job, image, known, mine, planned.crops, out, std)
            continue
        size = level.known.shape[::-1]
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        small_out = small.copy()
        small_std = np.zeros(small.shape, np.float32) if std is not None else None
        tiles += _inpaint(job, small, level.known, level.targets, planned.crops, small_out, small_std)
        # only the bounding box of this level's holes is upsampled
        ys, xs = np.nonzero(mine)
        box = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
        y0, y1, x0, x1 = box
        big = upsample_box(small_out.astype(np.float32), (height, width), box)
        sub = mine[y0:y1, x0:x1]
        out[y0:y1, x0:x1][sub] = np.clip(np.rint(big[sub]), 0, 255).astype(np.uint8)
        if std is not None:
            std[y0:y1, x0:x1][sub] = np.maximum(upsample_box(small_std, (height, width), box)[sub], 0)
    return InpaintResult(out, std, tiles, samples * 2 if job.options.flip and samples > 1 else samples)


def _inpaint(
    job: _Job,
    image: np.ndarray,
    known: np.ndarray,
    targets: np.ndarray,
    crops: list[tuple[Box, int]] | None,
    out: np.ndarray,
    std: np.ndarray | None,
) -> int:
    """Write the prediction of the ``targets`` pixels (a subset of the holes) at this resolution into
    ``out`` (and their standard deviation into ``std``); other pixels are left alone. ``crops`` are
    the plan's (``None``: one pass over the whole image); returns how many ran."""
    if not targets.any():
        return 0
    job.check_stop()
    if crops is None:
        pred, var = job.predict(image, known)
        out[targets] = _to_uint8(pred[targets])
        if std is not None:
            std[targets] = np.sqrt(var[targets])
        return 1

    # Accumulators hold one row per target pixel, so memory follows the holes: the crops' bounding
    # box keeps only an index map (a crop of many scattered holes spans the whole photo).
    top = min(y for (y, _, _, _), _ in crops)
    left = min(x for (_, x, _, _), _ in crops)
    bottom = max(y + h for (y, _, h, _), _ in crops)
    right = max(x + w for (_, x, _, w), _ in crops)
    ys, xs = np.nonzero(targets[top:bottom, left:right])
    index = np.full((bottom - top, right - left), -1, np.int32)
    index[ys, xs] = np.arange(len(ys), dtype=np.int32)
    acc = np.zeros((len(ys), image.shape[2]), np.float32)
    acc_var = np.zeros(acc.shape, np.float32) if std is not None else None
    weight = np.zeros(len(ys), np.float32)
    bar = tqdm(total=len(crops), desc="tiles", unit="tile", disable=not job.progress, leave=False)
    for batch in _batches(crops, job.options.samples):
        job.check_stop()
        images = [image[y : y + h, x : x + w] for (y, x, h, w), _ in batch]
        masks = [known[y : y + h, x : x + w] for (y, x, h, w), _ in batch]
        for ((y, x, h, w), overlap), (pred, var) in zip(batch, job.predict_many(images, masks)):
            rows = index[y - top : y + h - top, x - left : x + w - left]
            inside = rows >= 0  # this crop's target pixels
            ids = rows[inside]  # unique within a crop, so += adds every one (no np.add.at needed)
            wt = feather(h, w, overlap)[inside]
            acc[ids] += pred[inside] * wt[:, None]
            weight[ids] += wt
            if acc_var is not None:
                acc_var[ids] += var[inside] * wt[:, None]
        bar.update(len(batch))
    bar.close()
    ys, xs = ys + top, xs + left
    out[ys, xs] = _to_uint8(acc / weight[:, None])
    if std is not None:
        std[ys, xs] = np.sqrt(acc_var / weight[:, None])
    return len(crops)


def _batches(crops: list[tuple[Box, int]], samples: int) -> Iterator[list[tuple[Box, int]]]:
    """Crops of one size together, at most :data:`BATCH_CROPS` and :data:`BATCH_PIXELS` per forward
    pass (one crop per pass when sampling: the samples fill the batch then)."""
    by_size: dict[tuple[int, int], list[tuple[Box, int]]] = {}
    for crop in crops:
        by_size.setdefault(crop[0][2:], []).append(crop)
    for (h, w), group in by_size.items():
        n = 1 if samples > 1 else max(1, min(BATCH_CROPS, BATCH_PIXELS // (h * w)))
        for i in range(0, len(group), n):
            yield group[i : i + n]


def _finite(pred: torch.Tensor) -> torch.Tensor:
    """``pred``, or :class:`NonFiniteError` when any value is NaN or infinite (checked before clamping,
    which would turn infinity into a plausible 0 or 1): such a model is broken, and NaN cast to uint8
    would be written as a silent wrong value."""
    bad = int((~torch.isfinite(pred)).sum())
    if bad:
        raise NonFiniteError(
            f"the model gave NaN or infinite values for {bad} of {pred.numel()} predicted values: "
            "its weights are broken"
        )
    return pred


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
