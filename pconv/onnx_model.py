"""ONNX files of pconv models: :func:`export_onnx` writes one, :class:`OnnxModel` runs one.

The graph takes ``image`` ``(N, C, H, W)`` float32 in [0, 1] and ``mask`` ``(N, 1, H, W)``
(1 = known) and returns ``pred`` ``(N, C, H, W)``; batch, height and width are dynamic, height
and width in multiples of the network's downsampling factor (``multiple`` in the file's
metadata: ``graph_multiple``, ``2**depth`` for a PConv U-Net, 128 at depth 7, where PyTorch pads
to 32 only, so fills of other sides differ slightly). :class:`OnnxModel` pads to that multiple, so
``pconv.inpaint.inpaint`` (tiles, working scales, ``--flip``) runs an ONNX file unchanged. The
export uses PyTorch's ``torch.export``-based exporter (``dynamo=True``, opset 18 by default).
The command line is ``python -m pconv.export``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pconv.configs import OPSET
from pconv.errors import CheckpointError, ConfigError
from pconv.tiling import DEFAULT_HOLE_DEPTH

__all__ = ["OnnxModel", "export_onnx"]


def export_onnx(model: nn.Module, path: str | Path, *, opset: int = OPSET) -> None:
    """Write ``model`` (a PConv U-Net or UNet3+) as an ONNX file with dynamic batch, height and width."""
    model = model.eval().cpu()
    multiple = model.graph_multiple  # ONNX has no symbolic rounding up, so every level halves exactly
    channels = model.config.in_channels
    x = torch.rand(2, channels, 2 * multiple, 2 * multiple)  # a batch of 2 keeps the batch symbolic
    m = torch.ones(2, 1, 2 * multiple, 2 * multiple)
    m[..., multiple // 2 : multiple, multiple // 2 : multiple] = 0
    n = torch.export.Dim("batch", min=1, max=1024)
    h = torch.export.Dim("h", min=1, max=1024)
    w = torch.export.Dim("w", min=1, max=1024)
    shapes = {"image": {0: n, 2: multiple * h, 3: multiple * w}, "mask": {0: n, 2: multiple * h, 3: multiple * w}}
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (x, m),
            dynamo=True,
            input_names=["image", "mask"],
            output_names=["pred"],
            dynamic_shapes=shapes,
            opset_version=opset,
            verbose=False,
        )

    proto = program.model_proto
    meta = {
        "pconv.architecture": type(model).__name__,
        "pconv.config": json.dumps(model.config.to_dict()),
        "pconv.multiple": str(multiple),
        "pconv.hole_depth": str(model.hole_depth or DEFAULT_HOLE_DEPTH),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    from pconv.files import atomic_write_bytes

    atomic_write_bytes(path, proto.SerializeToString())  # never through a link planted at path


class _Config:
    def __init__(self, values: dict) -> None:
        self.__dict__.update(values)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class OnnxModel(nn.Module):
    """An ONNX file (from :func:`export_onnx`) behind the ``model(image, mask)`` interface,
    run by onnxruntime: pads to the graph's multiple (padding marked unknown) and crops back."""

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        super().__init__()
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=list(providers))
        meta = self.session.get_modelmeta().custom_metadata_map
        if "pconv.multiple" not in meta:
            raise CheckpointError(f"{path} was not written by pconv.export (no pconv metadata)")
        self.multiple = int(meta["pconv.multiple"])
        self.config = _Config(json.loads(meta["pconv.config"]))
        self.hole_depth = float(meta["pconv.hole_depth"])
        self.in_channels = int(self.config.in_channels)
        self.can_sample = False  # no Monte Carlo sampling through an exported graph

    def forward(self, image: Tensor, mask: Tensor, sample: bool = False) -> Tensor:
        if sample:
            raise ConfigError("an exported ONNX graph cannot draw Monte Carlo dropout samples")
        height, width = image.shape[2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        mask = mask.expand(image.shape[0], -1, -1, -1).float()
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
            mask = F.pad(mask, (0, pad_w, 0, pad_h))
        out = self.session.run(
            None, {"image": image.float().contiguous().cpu().numpy(), "mask": mask.contiguous().cpu().numpy()}
        )[0]
        return torch.from_numpy(out)[..., :height, :width]
