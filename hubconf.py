"""torch.hub entry points: ``torch.hub.load("<owner>/pconv", "pconv_unet_photos_512", pretrained=True)``.

One entry point per registered model name (``pconv.registry.MODELS``: ``pconv_unet_photos_512``,
``pconv_unet_paper_512``, ``unet3plus_mc_dropout``, ...), as ``pconv.create_model`` builds it;
``pconv_unet`` is the released model (or an untrained one of any configuration); one entry point
per registered architecture (``pconv.models.ARCHITECTURES``) builds an untrained network
(``pconv_unet_bare``, ``unet3plus``); ``convert`` puts partial convolutions into any model.
"""

dependencies = ["torch", "numpy", "safetensors", "cv2", "PIL"]

from pconv import load_model  # noqa: E402
from pconv.convert import convert  # noqa: E402,F401
from pconv.models import ARCHITECTURES  # noqa: E402
from pconv.registry import MODELS, create_model  # noqa: E402


def pconv_unet(pretrained: bool = True, **config):
    """The PConv U-Net: the project's released model (``pretrained=True``, in eval mode; its
    ``hole_depth`` set for ``pconv.inpaint.inpaint``), or an untrained one built from ``config``
    (``PConvUNetConfig`` fields, e.g. ``depth=8, base_width=64``)."""
    if pretrained:
        if config:
            raise ValueError("the released model has a fixed configuration; pass pretrained=False to choose one")
        return load_model()
    return ARCHITECTURES["pconv_unet"].build(**config)


def pconv_unet_bare(**config):
    """An untrained PConv U-Net (``PConvUNetConfig`` fields as keywords)."""
    return ARCHITECTURES["pconv_unet"].build(**config)


def unet3plus(**config):
    """An untrained UNet3+ with partial (or plain) convolutions and Monte Carlo dropout
    (``UNet3PlusConfig`` fields as keywords, e.g. ``in_channels=1, dropout=0.2``)."""
    return ARCHITECTURES["unet3plus"].build(**config)


def _entry(name: str):
    def entry(pretrained: bool = False, **config):
        return create_model(name, pretrained=pretrained, **config)

    entry.__name__ = name
    entry.__doc__ = f"{MODELS[name].summary} (``pconv.create_model({name!r}, pretrained=..., **config)``)."
    return entry


for _name in MODELS:
    if _name not in globals():  # the architecture entry points above keep their own
        globals()[_name] = _entry(_name)
