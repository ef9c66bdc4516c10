"""Every way this project fills holes, by name: the trained model and the classical methods.

One registry (:data:`METHODS`) that ``predict.py --method``, ``pconv-serve`` (the page's choice and
the API's ``method`` field), the library (``inpaint("telea", image, known)``) and ``python -m
pconv.evaluate --baselines`` all read, so a method added here appears in each of them.

A classical method is a function of a uint8 ``(H, W, C)`` image and a bool ``(H, W)`` mask (True =
known) that returns the filled uint8 image. :class:`ClassicalModel` wraps one as an
:class:`~pconv.models.InpaintingModel`, so it runs through :func:`pconv.inpaint.inpaint` like the
model: the same crops around the holes, working scales, EXIF and bit-depth rules, and known pixels
copied from the input. The methods:

- ``model``: the released network (or any release file, ``--weights``).
- ``pushpull``: the push-pull pyramid fill of :mod:`pconv.fill`, smooth and fast.
- ``patchmatch``: PatchMatch (Barnes et al. 2009; PyPatchMatch, patch radius 3), which copies
  texture from the photo into the holes, with Poisson-corrected edges (:mod:`pconv.seams`;
  ``pip install 'pconv[patchmatch]'``).
- ``telea`` and ``ns``: OpenCV's Telea and Navier-Stokes (radius 3).
- ``biharmonic``: scikit-image's biharmonic fill (``pip install 'pconv[evaluate]'``; slow).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from pconv.errors import ConfigError, MissingExtraError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from pconv.models import InpaintingModel

__all__ = [
    "CLASSICAL_HOLE_DEPTH",
    "FILLS",
    "METHODS",
    "MODEL",
    "ClassicalModel",
    "Fill",
    "Method",
    "available",
    "load_method",
    "parse_methods",
]

Fill = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (uint8 (H, W, C) image, known (H, W)) -> uint8 result

# The name of the trained model among the methods.
MODEL = "model"
# The hole depth (pixels) a classical method is run at full resolution for with ``scale="auto"``: a
# quarter of a 512-px crop, as for the released model, so every crop has known context around its holes.
CLASSICAL_HOLE_DEPTH = 128.0


def _opencv(flag: int) -> Fill:
    def run(image: np.ndarray, known: np.ndarray) -> np.ndarray:
        out = cv2.inpaint(image, (~known).astype(np.uint8) * 255, 3, flag)
        return out.reshape(image.shape)  # OpenCV drops a single channel's axis

    return run


def _biharmonic(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic  # scipy: slow to import, so here

    filled = inpaint_biharmonic(image.astype(np.float64) / 255.0, ~known, channel_axis=-1)
    return np.clip(np.rint(filled * 255), 0, 255).astype(np.uint8)


def _pushpull(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    import torch

    from pconv.fill import push_pull

    x = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0
    m = torch.from_numpy(known)[None, None].float()
    with torch.no_grad():
        filled = push_pull(x, m)[0].permute(1, 2, 0).numpy()
    return np.where(known[..., None], image, np.clip(np.rint(filled * 255), 0, 255).astype(np.uint8))


def _patchmatch(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    from patchmatch import patch_match  # PyPatchMatch: optional (Method.require checks it), seconds per image

    from pconv.seams import seamless_fill

    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    out = patch_match.inpaint(np.ascontiguousarray(rgb), (~known).astype(np.uint8) * 255, patch_size=3)
    out = seamless_fill(rgb, known, out)  # no hard outline where the copy meets the photo
    return out[..., :1] if image.shape[2] == 1 else out


@dataclass(frozen=True)
class Method:
    """One way to fill holes.

    Attributes:
        name: its name in ``--method``, the API and reports.
        summary: one line for help texts and the web page.
        fill: the classical fill, or ``None`` for the trained model.
        extra: the optional dependency group it needs (``pip install 'pconv[EXTRA]'``), if any.
        modules: the modules that extra provides.
    """

    name: str
    summary: str
    fill: Fill | None = None
    extra: str | None = None
    modules: tuple[str, ...] = ()

    def available(self) -> bool:
        """Whether what it needs is installed."""
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def require(self) -> None:
        """Raise :class:`~pconv.errors.MissingExtraError` with the install command when it cannot run."""
        if not self.available():
            raise MissingExtraError(
                f"the {self.name} method needs {', '.join(self.modules)}: pip install 'pconv[{self.extra}]' "
                f'(or -e ".[{self.extra}]" in a clone)'
            )


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(MODEL, "the trained network (the released model, or --weights)"),
        Method("pushpull", "push-pull pyramid fill: smooth, fast, no texture", _pushpull),
        Method(
            "patchmatch",
            "PatchMatch: copies texture from the photo into the holes (seconds per image)",
            _patchmatch,
            "patchmatch",
            ("patchmatch", "scipy"),
        ),
        Method("telea", "OpenCV Telea: fast marching from the hole edge", _opencv(cv2.INPAINT_TELEA)),
        Method("ns", "OpenCV Navier-Stokes: fluid-dynamics continuation of the edges", _opencv(cv2.INPAINT_NS)),
        Method(
            "biharmonic", "scikit-image biharmonic: smooth, slow on big holes", _biharmonic, "evaluate", ("skimage",)
        ),
    )
}


# The classical fills by name (what evaluate runs as baselines).
FILLS: dict[str, Fill] = {name: m.fill for name, m in METHODS.items() if m.fill is not None}


def available() -> list[str]:
    """The names of the methods that can run with what is installed, in registry order."""
    return [name for name, m in METHODS.items() if m.available()]


def parse_methods(text: str) -> list[str]:
    """``--method``: one name, a comma-separated list, or ``all`` (every method that is installed).

    Raises:
        ConfigError: an unknown or repeated name, or an empty list.
    """
    if text.strip() == "all":
        return available()
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {', '.join(unknown)}; choose from {', '.join(METHODS)} or all")
    if not names:
        raise ConfigError(f"no method given; choose from {', '.join(METHODS)} or all")
    if len(set(names)) != len(names):
        raise ConfigError(f"a method is named twice in {text!r}")
    return names


class ClassicalModel:
    """A classical method as an :class:`~pconv.models.InpaintingModel`: it runs through
    :func:`pconv.inpaint.inpaint` (crops, working scales) like a network.

    It takes ``(N, C, H, W)`` images in [0, 1] as the models do; they are turned into the uint8
    pixels they were read as (exactly: the tools divide uint8 by 255) and back.
    """

    in_channels = 3
    multiple = 1
    hole_depth = CLASSICAL_HOLE_DEPTH
    can_sample = False

    def __init__(self, method: Method) -> None:
        if method.fill is None:
            raise ConfigError(f"{method.name} is the trained model, not a classical method")
        self.method = method
        self.name = method.name

    def __call__(self, image: Tensor, mask: Tensor, sample: bool = False) -> Tensor:
        import torch

        if sample:
            raise ConfigError(f"the {self.name} method has no Monte Carlo samples")
        pixels = image.detach().mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        known = (mask.detach() > 0.5).expand(image.shape[0], 1, -1, -1)[:, 0].cpu().numpy()
        filled = np.stack([self.method.fill(np.ascontiguousarray(p), k) for p, k in zip(pixels, known)])
        return torch.from_numpy(filled).to(image.device).permute(0, 3, 1, 2).float().div_(255)

    def eval(self) -> ClassicalModel:
        return self

    def to(self, device: Any) -> ClassicalModel:
        return self

    def __repr__(self) -> str:
        return f"ClassicalModel({self.name!r})"


def load_method(name: str, weights: str | Path | None = None, *, device: str | torch.device = "cpu") -> InpaintingModel:
    """The method ``name`` ready for :func:`pconv.inpaint.inpaint`: the model of ``weights`` (default:
    the released one) for ``"model"``, else a :class:`ClassicalModel`.

    Raises:
        ConfigError: an unknown name, or ``weights`` for a classical method.
        MissingExtraError: the method's extra is not installed.
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    method = METHODS[name]
    if method.fill is None:
        from pconv.io import load_model

        return load_model(weights, device=device)
    if weights is not None:
        raise ConfigError(f"weights apply to the trained model, not to the {name} method")
    method.require()
    return ClassicalModel(method)
