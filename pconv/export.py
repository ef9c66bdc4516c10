"""Export a model to ONNX, and run an ONNX file where a PyTorch model is expected.

    python -m pconv.export --onnx model.onnx [--weights model.safetensors] [--opset 18]
    python predict.py --onnx model.onnx --image photo.jpg --mask holes.png --out filled.png

The graph takes ``image`` ``(N, C, H, W)`` float32 in [0, 1] and ``mask`` ``(N, 1, H, W)``
(1 = known) and returns ``pred`` ``(N, C, H, W)``; batch, height and width are dynamic, height
and width in multiples of the network's downsampling factor (``multiple`` in the file's
metadata: 128 for a depth-7 PConv U-Net). :class:`OnnxModel` pads to that multiple, so
``pconv.inpaint.inpaint`` (tiles, working scales, ``--flip``) runs an ONNX file unchanged. The
export uses PyTorch's ``torch.export``-based exporter (``dynamo=True``, opset 18 by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pconv.cli import UsageError, prog_name, run_main
from pconv.inpaint import DEFAULT_HOLE_DEPTH
from pconv.io import DEFAULT_WEIGHTS, load_model

__all__ = ["OnnxModel", "export_onnx", "main"]

OPSET = 18


def export_onnx(model: nn.Module, path: str | Path, *, opset: int = OPSET) -> None:
    """Write ``model`` (a PConv U-Net or UNet3+) as an ONNX file with dynamic batch, height and width."""
    model = model.eval().cpu()
    multiple = int(getattr(model, "multiple", 1))
    channels = model.config.in_channels
    x = torch.rand(2, channels, 2 * multiple, 2 * multiple)  # a batch of 2 keeps the batch symbolic
    m = torch.ones(2, 1, 2 * multiple, 2 * multiple)
    m[..., multiple // 2 : multiple, multiple // 2 : multiple] = 0
    n = torch.export.Dim("batch", min=1, max=1024)
    h = torch.export.Dim("h", min=1, max=1024)
    w = torch.export.Dim("w", min=1, max=1024)
    shapes = {"image": {0: n, 2: multiple * h, 3: multiple * w}, "mask": {0: n, 2: multiple * h, 3: multiple * w}}
    with torch.no_grad():
        program = torch.onnx.export(model, (x, m), dynamo=True, input_names=["image", "mask"], output_names=["pred"],
                                    dynamic_shapes=shapes, opset_version=opset, verbose=False)
    import onnx

    proto = program.model_proto
    meta = {"pconv.architecture": type(model).__name__, "pconv.config": json.dumps(model.config.to_dict()),
            "pconv.multiple": str(multiple),
            "pconv.hole_depth": str(getattr(model, "hole_depth", None) or DEFAULT_HOLE_DEPTH)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


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
            raise ValueError(f"{path} was not written by pconv.export (no pconv metadata)")
        self.multiple = int(meta["pconv.multiple"])
        self.config = _Config(json.loads(meta["pconv.config"]))
        self.hole_depth = float(meta["pconv.hole_depth"])
        self.mc_dropout = None  # no Monte Carlo sampling through an exported graph

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        height, width = image.shape[2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        mask = mask.expand(image.shape[0], -1, -1, -1).float()
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
            mask = F.pad(mask, (0, pad_w, 0, pad_h))
        out = self.session.run(None, {"image": image.float().contiguous().cpu().numpy(),
                                      "mask": mask.contiguous().cpu().numpy()})[0]
        return torch.from_numpy(out)[..., :height, :width]


def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog=prog_name("python -m pconv.export"), description="Export a model to ONNX.")
    p.add_argument("--onnx", type=Path, required=True, help="output .onnx file")
    p.add_argument("--weights", type=Path, help="release file (default: the project's released model)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    args = p.parse_args(argv)
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UsageError("the ONNX export needs onnx and onnxscript: pip install -e .[onnx]") from None
    weights = args.weights or DEFAULT_WEIGHTS
    try:
        model = load_model(weights)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    export_onnx(model, args.onnx, opset=args.opset)
    print(f"wrote {args.onnx} (opset {args.opset}; height and width in multiples of {model.multiple})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m pconv.export``)."""
    return run_main(_main, argv, "python -m pconv.export")


if __name__ == "__main__":
    sys.exit(main())
