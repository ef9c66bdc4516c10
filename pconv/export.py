"""Export a model to ONNX (the file format and the runner are in :mod:`pconv.onnx_model`).

python -m pconv.export --onnx model.onnx [--weights model.safetensors] [--opset 18]
python predict.py --onnx model.onnx --image photo.jpg --mask holes.png --out filled.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pconv.cli import WEIGHTS_HELP, UsageError, prog_name, run_main
from pconv.configs import OPSET
from pconv.errors import OutputError, require

__all__ = ["main"]


def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog=prog_name("python -m pconv.export"), description="Export a model to ONNX.")
    p.add_argument("--onnx", type=Path, required=True, help="output .onnx file")
    p.add_argument(
        "--weights",
        type=Path,
        help=WEIGHTS_HELP,
    )
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    args = p.parse_args(argv)
    require("onnx", "the ONNX export", "onnx", "onnxscript")
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not OPSET <= args.opset <= newest:
        raise UsageError(
            f"--opset must be between {OPSET} and {newest} (what the installed onnx knows), got {args.opset}"
        )
    if args.onnx.is_dir():
        raise UsageError(f"--onnx {args.onnx} is a folder: name the file to write")
    from pconv.io import load_model  # PyTorch loads once the command line is parsed
    from pconv.onnx_model import export_onnx

    model = load_model(args.weights)
    try:
        export_onnx(model, args.onnx, opset=args.opset)
    except OSError as err:
        raise OutputError(str(err)) from None
    except Exception as err:  # the exporter reports an opset it cannot target with its own types
        raise UsageError(f"the export at opset {args.opset} failed: {str(err).strip().splitlines()[0]}") from None
    print(f"wrote {args.onnx} (opset {args.opset}; height and width in multiples of {model.graph_multiple})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m pconv.export``)."""
    return run_main(_main, argv, "python -m pconv.export")


if __name__ == "__main__":
    sys.exit(main())
