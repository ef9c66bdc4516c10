"""onnxruntime against PyTorch on the CPU: one 512x512 inpainting pass of the released model.

Exports the model (``pconv.onnx_model.export_onnx``), checks the two agree on a held-out photo
(max absolute difference of the predictions, in [0, 1] units), then times both, interleaved.

    python benchmarks/bench_onnx.py [--weights FILE] [--size 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_interleaved  # noqa: E402

from pconv import load_model  # noqa: E402
from pconv.data import center_crop  # noqa: E402
from pconv.images import load_rgb  # noqa: E402
from pconv.io import DEFAULT_WEIGHTS  # noqa: E402
from pconv.masks import generate  # noqa: E402
from pconv.onnx_model import OnnxModel, export_onnx  # noqa: E402

PHOTO = Path(__file__).resolve().parents[1] / "data" / "photos" / "test" / "skimage-astronaut.jpg"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    model = load_model(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, path)
        onnx_model = OnnxModel(path)
        image = np.asarray(center_crop(load_rgb(PHOTO), args.size))
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
        m = torch.from_numpy(generate(args.size, args.size, np.random.default_rng(0), "mixed", (0.2, 0.3)))[
            None, None
        ].float()
        with torch.no_grad():
            diff = float((model(x, m) - onnx_model(x, m)).abs().max())

            def torch_pass() -> None:
                model(x, m)

            times = time_interleaved({"pytorch": torch_pass, "onnxruntime": lambda: onnx_model(x, m)}, args.repeats)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {Path(args.weights).name} at {args.size}x{args.size}"
    )
    print(f"max |onnxruntime - pytorch| = {diff:.2e}")
    for name, seconds in times.items():
        print(f"{name:>12}: {seconds * 1000:8.1f} ms  ({seconds / times['pytorch']:.2f}x pytorch)")


if __name__ == "__main__":
    main()
