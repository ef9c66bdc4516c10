"""Device choice shared by training, inference and the tools."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pconv.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device", "torch_device"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device, checked.

    Raises:
        ConfigError: an unknown device name, or CUDA asked for where PyTorch sees no GPU.
    """
    import torch  # here, not at the top: the tools' --help should not wait for PyTorch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r} ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this PyTorch build sees no CUDA GPU")
    return device


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` (a name is resolved as by :func:`resolve_device`)."""
    return resolve_device(device) if isinstance(device, str) else device
