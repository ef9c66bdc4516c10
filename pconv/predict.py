"""Inpaint an image, or a folder of images, from the command line (``python predict.py``).

    python predict.py --image photo.jpg --mask holes.png --out filled.png
    python predict.py --image-dir photos/ --mask-dir masks/ --out-dir filled/
    python predict.py --image photo.jpg --mask holes.png --out filled.png --method all --compare methods.png

Methods (--method, one or a comma-separated list, or all): model (the released network, or
--weights), pushpull, patchmatch (pip install 'pconv[patchmatch]'), telea, ns, biharmonic. With
several, each result goes to its own file (filled.png -> filled.telea.png; in folder mode
OUT_DIR/METHOD/) and --compare writes holes | each method (| --original), labelled.

Masks: white = hole (``--invert-mask`` for the opposite); with a meaningful alpha channel,
alpha > 127 is a hole. Known pixels of the output are the input's, byte for byte, in lossless
formats (PNG, TIFF, BMP, lossless WebP); JPEG output re-encodes them.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from pconv.cli import (
    WEIGHTS_HELP,
    UsageError,
    add_inpaint_options,
    inpaint_options,
    prog_name,
    resolve_device,
    run_main,
)
from pconv.errors import MissingExtraError, PconvError, require
from pconv.images import output_format, read_image
from pconv.masks import IMAGE_SUFFIXES
from pconv.metadata import DEFAULT_WEIGHTS, geometry_of
from pconv.methods import METHODS, MODEL, load_method, parse_methods
from pconv.options import InpaintOptions
from pconv.pipeline import Inputs, Outputs, inpaint_file, read_inputs
from pconv.tiling import make_plan

# PyTorch loads only once the command line is parsed, so --help and usage errors come at once.
if TYPE_CHECKING:
    import torch

    from pconv.models import InpaintingModel

__all__ = ["build_parser", "main"]

# The InpaintOptions fields predict.py takes as flags (--tile, --overlap, --scale, --samples, --batch-size, --flip).
INFERENCE = ("tile", "overlap", "scale", "samples", "batch", "flip", "precision")


def load(weights: Path | None, device: torch.device, onnx: Path | None = None) -> InpaintingModel:
    """The model of ``--weights`` (default: the released model) or ``--onnx``."""
    if onnx is None:
        from pconv.io import load_model

        return load_model(weights, device=device)
    if weights is not None:
        raise UsageError("give --weights or --onnx, not both")
    if not onnx.is_file():
        raise UsageError(f"ONNX file not found: {onnx}")
    require("onnx", "--onnx", "onnxruntime")
    from pconv.onnx_model import OnnxModel

    try:
        return OnnxModel(onnx)
    except MissingExtraError:
        raise
    except Exception as err:  # onnxruntime reports a broken file with its own exception types
        raise UsageError(f"cannot load {onnx}: {str(err).splitlines()[0]}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name("predict.py"),
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    one = p.add_argument_group("one image")
    one.add_argument("--image", type=Path, help="image to inpaint")
    one.add_argument("--mask", type=Path, help="its mask (white = hole)")
    one.add_argument("--out", type=Path, help="result file; the extension names the format")
    one.add_argument(
        "--compare",
        type=Path,
        metavar="FILE",
        help="also write input | holes | result side by side (several methods: holes | each method, labelled)",
    )
    one.add_argument("--in-place", action="store_true", help="let --out be the input image, which the result replaces")
    one.add_argument(
        "--original",
        type=Path,
        metavar="FILE",
        help="the photo without holes, shown last on the --compare sheet of several methods",
    )
    one.add_argument(
        "--uncertainty",
        type=Path,
        metavar="FILE",
        help="with --samples: colour-mapped standard deviation (PNG), raw values (.npy) and standard error "
        "(_stderr.npy)",
    )
    one.add_argument(
        "--interval",
        type=Path,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="with --samples: the 95%% confidence interval of the mean (mean -/+ 1.96 standard errors) as two images",
    )
    many = p.add_argument_group("a folder")
    many.add_argument("--image-dir", type=Path, help="images to inpaint")
    many.add_argument("--mask-dir", type=Path, help="masks, paired with the images by file name (stem)")
    many.add_argument("--out-dir", type=Path, help="results, named like the images")
    many.add_argument("--ext", default="png", help="format of the results in --out-dir (default png)")
    opt = p.add_argument_group("options")
    opt.add_argument(
        "--method",
        default=MODEL,
        metavar="NAME[,NAME...]|all",
        help="how to fill: "
        + "; ".join(f"{name}: {m.summary}" for name, m in METHODS.items())
        + "; all = every installed method (default model)",
    )
    opt.add_argument(
        "--weights",
        type=Path,
        help=WEIGHTS_HELP,
    )
    opt.add_argument("--onnx", type=Path, help="run this ONNX file (python -m pconv.export) with onnxruntime instead")
    opt.add_argument("--invert-mask", action="store_true", help="masks use white = known")
    opt.add_argument("--resize-mask", action="store_true", help="scale a mask of another size to the image")
    add_inpaint_options(opt, INFERENCE)
    opt.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    opt.add_argument(
        "--smallest",
        action="store_true",
        help="write the smallest files (PNG level 9, WebP method 6, deflated TIFF): several times slower; by "
        "default lossless formats are written at the effort that is best for time against size",
    )
    return p


def _check_args(args: argparse.Namespace) -> None:
    single = [args.image, args.mask, args.out]
    folder = [args.image_dir, args.mask_dir, args.out_dir]
    if any(v is not None for v in single) and any(v is not None for v in folder):
        raise UsageError("use either --image/--mask/--out or --image-dir/--mask-dir/--out-dir, not both")
    if any(v is not None for v in folder):
        if any(v is None for v in folder):
            raise UsageError("folder mode needs --image-dir, --mask-dir and --out-dir")
        if args.compare is not None or args.uncertainty is not None or args.interval is not None:
            raise UsageError("--compare, --uncertainty and --interval apply to a single --image")
    elif any(v is None for v in single):
        raise UsageError("give --image, --mask and --out (or --image-dir, --mask-dir and --out-dir)")
    if (args.uncertainty is not None or args.interval is not None) and args.samples < 2:
        raise UsageError("--uncertainty and --interval need --samples N with N >= 2")
    if args.original is not None and args.compare is None:
        raise UsageError("--original is shown on the --compare sheet: give --compare too")


def _methods(args: argparse.Namespace) -> list[str]:
    """The methods of ``--method``, checked against the options that only a model takes."""
    methods = parse_methods(args.method)
    if not methods:
        raise UsageError("--method all found no installed method")
    if args.method.strip() == "all":
        missing = [m for name, m in METHODS.items() if name not in methods]
        if missing:
            extras = ", ".join(f"{m.name} (pip install 'pconv[{m.extra}]')" for m in missing)
            print(f"note: --method all runs the installed methods; not installed: {extras}", file=sys.stderr)
    if (args.weights is not None or args.onnx is not None) and MODEL not in methods:
        raise UsageError(f"--weights and --onnx choose the trained model: add {MODEL} to --method")
    if methods != [MODEL] and (args.samples > 1 or args.uncertainty is not None or args.interval is not None):
        raise UsageError(f"--samples, --uncertainty and --interval apply to --method {MODEL} alone")
    return methods


def _load_all(methods: list[str], args: argparse.Namespace, device: torch.device) -> dict[str, InpaintingModel]:
    """Every method ready to run, the model from --weights or --onnx."""
    for name in methods:
        METHODS[name].require()  # a missing extra before any model loads
    return {name: load(args.weights, device, args.onnx) if name == MODEL else load_method(name) for name in methods}


def _listed(path: Path) -> bool:
    """An image file folder mode works on: not hidden (a killed writer's temporary file is)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _pairs(args: argparse.Namespace) -> list[tuple[Path, Path | None]]:
    """Images of --image-dir with the mask of the same stem in --mask-dir (or ``None``)."""
    for folder, what in ((args.image_dir, "image"), (args.mask_dir, "mask")):
        if not folder.is_dir():
            raise UsageError(f"{what} folder not found: {folder}")
    images = sorted(p for p in args.image_dir.iterdir() if _listed(p))
    if not images:
        raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {args.image_dir}")
    masks: dict[str, Path] = {}
    for p in sorted(args.mask_dir.iterdir()):
        if _listed(p):
            masks.setdefault(p.stem, p)
    seen: dict[str, Path] = {}
    for img in images:
        if img.stem in seen:
            raise UsageError(
                f"{seen[img.stem].name} and {img.name} in {args.image_dir} would both be written as "
                f"{img.stem}.{args.ext.lstrip('.')}: rename one of them"
            )
        seen[img.stem] = img
    return [(img, masks.get(img.stem)) for img in images]


def _options(args: argparse.Namespace) -> InpaintOptions:
    return inpaint_options(args, INFERENCE)  # checked once, by InpaintOptions


def _run(
    models: dict[str, InpaintingModel],
    image: Path,
    mask: Path,
    outputs: Outputs,
    args: argparse.Namespace,
    device,
    inputs: Future[Inputs] | None = None,
) -> str:
    """Inpaint one pair (``inputs``: as read already); warnings go to stderr at once (above any
    progress bar); returns the report."""
    report = inpaint_file(
        models,
        image,
        mask,
        outputs,
        _options(args),
        device=device,
        invert_mask=args.invert_mask,
        resize_mask=args.resize_mask,
        progress=args.image is not None,
        original=args.original,
        in_place=args.in_place,
        inputs=inputs,
    )
    for line in report.warnings:
        if line != report.message:
            tqdm.write(f"warning: {line}", file=sys.stderr)
    return report.message if report.result is not None else f"warning: {report.message}"


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    methods = _methods(args)
    _options(args)  # option errors before any model loads
    if args.image is not None:
        return _single(args, methods, _read_early(args, methods))

    device = resolve_device(args.device)
    ext = "." + args.ext.lstrip(".")
    output_format(Path("x" + ext))
    pairs = _pairs(args)
    models = _load_all(methods, args, device)
    channels = next(iter(models.values())).in_channels
    failures: list[str] = []
    for image_path, mask_path in tqdm(pairs, desc="inpainting", unit="image"):
        try:
            if mask_path is None:
                read_image(image_path, channels)  # an unreadable image is reported as such first
                raise UsageError(f"no mask named {image_path.stem}.* in {args.mask_dir}")
            for name, model in models.items():
                # one method: OUT_DIR/NAME.EXT; several: OUT_DIR/METHOD/NAME.EXT
                folder = args.out_dir / name if len(models) > 1 else args.out_dir
                outputs = Outputs(folder / (image_path.stem + ext), smallest=args.smallest, methods=(name,))
                report = _run({name: model}, image_path, mask_path, outputs, args, device)
                if report.startswith("warning: "):
                    tqdm.write(report, file=sys.stderr)
        except PconvError as err:
            failures.append(f"{image_path.name}: {err}")
    done = len(pairs) - len(failures)
    print(f"inpainted {done} of {len(pairs)} images into {args.out_dir}")
    if failures:
        print(f"{len(failures)} failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _read_early(args: argparse.Namespace, methods: list[str]) -> Future[Inputs]:
    """Decode ``--image`` and ``--mask`` in a daemon thread while PyTorch imports (the decoders
    release the GIL), and plan the model's crops there too. Their errors come when the pair is
    used, after the model's and the outputs'; an error or Ctrl-C before that does not wait."""
    future: Future[Inputs] = Future()

    def read() -> None:
        try:
            inputs = read_inputs(args.image, args.mask, 3, invert_mask=args.invert_mask, resize_mask=args.resize_mask)
        except BaseException as err:  # handed to whoever takes the result
            future.set_exception(err)
            return
        try:
            inputs = _plan_early(inputs, args, methods)
        finally:  # whatever happens, the pair is handed over
            future.set_result(inputs)

    threading.Thread(target=read, name="read-inputs", daemon=True).start()
    return future


def _plan_early(inputs: Inputs, args: argparse.Namespace, methods: list[str]) -> Inputs:
    """``inputs`` with the crops planned for the model's release file (its hole depth and multiple
    read without PyTorch), when the model is the one method; the pipeline uses the plan only if the
    loaded model has that geometry. Any problem leaves the plan to the pipeline, which reports it;
    a mask without holes or without known pixels gets none (the pipeline stops before planning)."""
    if methods != [MODEL] or args.onnx is not None or inputs.known.all() or not inputs.known.any():
        return inputs
    try:
        if args.weights is not None and not args.weights.is_file():  # a registered name: not read here
            return inputs
        geometry = geometry_of(args.weights or DEFAULT_WEIGHTS)
        options = _options(args)
        plan = make_plan(inputs.known, options, *geometry)
    except Exception:  # noqa: BLE001 (a guess made early: the model's load and the pipeline report errors)
        return inputs
    return replace(inputs, plan=(geometry, options, plan))


def _single(args: argparse.Namespace, methods: list[str], inputs: Future[Inputs]) -> int:
    """``--image``/``--mask``/``--out``: one pair, its ``inputs`` being read."""
    device = resolve_device(args.device)
    output_format(args.out)
    models = _load_all(methods, args, device)
    outputs = Outputs(
        args.out,
        args.compare,
        args.uncertainty,
        tuple(args.interval) if args.interval else None,
        args.smallest,
        tuple(methods),
    )
    report = _run(models, args.image, args.mask, outputs, args, device, inputs)
    print(report, file=sys.stderr if report.startswith("warning: ") else sys.stdout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python predict.py``, ``pconv-predict``)."""
    return run_main(_main, argv, "predict.py")


if __name__ == "__main__":
    sys.exit(main())
