"""Inpaint an image, or a folder of images, from the command line (``python predict.py``).

    python predict.py --image photo.jpg --mask holes.png --out filled.png
    python predict.py --image-dir photos/ --mask-dir masks/ --out-dir filled/

Masks: white = hole (``--invert-mask`` for the opposite); with a meaningful alpha channel,
alpha > 127 is a hole. Known pixels of the output are the input's, byte for byte, in lossless
formats (PNG, TIFF, BMP, lossless WebP); JPEG output re-encodes them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from pconv.cli import SCALE_HELP, UsageError, prog_name, resolve_device, run_main, scale_arg
from pconv.files import Writer, atomic_write_many
from pconv.masks import IMAGE_SUFFIXES, read_mask

# PyTorch loads only once the command line is parsed, so --help and usage errors come at once.
if TYPE_CHECKING:
    import torch
    from torch import nn

    from pconv.inpaint import InpaintResult

__all__ = ["main"]

# Below this share of known pixels the result is mostly invented: say so.
MIN_KNOWN_SHARE = 0.02


@dataclass
class _Input:
    pixels: np.ndarray  # (H, W, C) uint8, C = the model's channels
    alpha: Image.Image | None  # kept aside and put back on the result
    mode: str  # "RGB" or "L": what the result is saved as


def _output_format(path: Path) -> str:
    """The Pillow format for ``path``'s extension; a clear error before any work when unsupported."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(
            f"cannot write {path}: unsupported extension {path.suffix or '(none)'!r}; "
            "use .png, .jpg, .tif, .bmp or .webp"
        )
    return fmt


def read_input(path: Path, channels: int) -> _Input:
    """Read an image as the model's channels, EXIF orientation applied; alpha kept aside."""
    if not path.is_file():
        raise UsageError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            check_depth(img)
            img.load()
            return decode_input(img, channels)
    except Image.DecompressionBombError as err:
        raise UsageError(
            f"cannot read image {path}: {err} (Pillow's guard against decompression bombs; "
            "a real photo this large must be split or downscaled first)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UsageError(f"cannot read image {path}: {err}") from None


def check_depth(img: Image.Image) -> None:
    """Refuse an image of more than 8 bits per channel, from its header (before decoding).

    The result is written with 8 bits per channel, so the known pixels of a deeper image could not
    stay as they are. Pillow opens a 16-bit RGB PNG as 8-bit RGB, silently; its tile says 16.
    """
    deep = img.mode in ("I", "F") or img.mode.startswith("I;16")
    deep = deep or any(";16" in str(tile.args) for tile in getattr(img, "tile", None) or ())
    if deep:
        raise ValueError(
            f"{'float' if img.mode == 'F' else 'more than 8 bits per pixel'} images are not supported: the result is "
            "written with 8 bits per channel; convert the image to 8 bits first"
        )


def displayed_size(img: Image.Image) -> tuple[int, int]:
    """``(width, height)`` as the image is shown, its EXIF orientation applied (read from the
    header: no pixels are decoded). A phone photo stored landscape with orientation 6 is shown,
    and inpainted, portrait; masks are drawn on what is shown."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError):  # a broken EXIF block: Pillow shows the stored pixels
        orientation = 1
    return (img.height, img.width) if orientation in (5, 6, 7, 8) else img.size


def decode_input(img: Image.Image, channels: int) -> _Input:
    """A loaded image as the model's channels, EXIF orientation applied; alpha kept aside."""
    img = ImageOps.exif_transpose(img)
    check_depth(img)
    alpha = img.getchannel("A") if "A" in img.getbands() else None
    if channels == 1:
        mode = "L"
    elif channels == 3:
        mode = "L" if img.mode in ("L", "LA", "1") else "RGB"
    else:
        raise UsageError(f"this model takes {channels}-channel inputs; predict.py reads grayscale and RGB images")
    pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    return _Input(pixels.reshape(*pixels.shape[:2], channels), alpha, mode)


def save_options(fmt: str, smallest: bool = False) -> dict:
    """Pillow's encoder options for ``fmt``: lossless formats at the effort that measured best for
    time against size, or (``smallest``) the smallest file at any cost in time. On the 2-MP test
    photos (``benchmarks/bench_output.py``) PNG level 3 takes 0.38-0.44x the time of Pillow's
    default 6 for files 9-13% larger (level 9: 6-10x the time, 4-8% smaller); lossless WebP
    method 0 takes 0.48-0.63x the time of the default 4 for files 15-21% larger. TIFF stays
    uncompressed unless ``smallest`` (deflate)."""
    if fmt == "PNG":
        return {"compress_level": 9 if smallest else 3}
    if fmt == "WEBP":
        return {"lossless": True, "method": 6 if smallest else 0}
    if fmt == "TIFF":
        return {"compression": "tiff_adobe_deflate"} if smallest else {}
    if fmt == "JPEG":
        return {"quality": 95}
    return {}


def _encoder(img: Image.Image, path: Path, smallest: bool = False) -> tuple[Path, Writer]:
    """``(path, writer)``: writes ``img`` in the format ``path``'s extension names."""
    fmt = _output_format(path)
    options = save_options(fmt, smallest)
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    return path, lambda f: img.save(f, format=fmt, **options)


def _write_all(writes: list[tuple[Path, Writer]]) -> None:
    """Write every output or none (a failure leaves no partial or half-updated set of files)."""
    try:
        atomic_write_many(writes)
    except OSError as err:
        raise UsageError(str(err)) from None


def _copy_into(source: Path, f: BinaryIO) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, f)


def to_output_image(pixels: np.ndarray, source: _Input) -> Image.Image:
    img = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    if source.mode == "L" and img.mode != "L":
        img = img.convert("L")  # exact for gray input: the RGB weights sum to one
    if source.alpha is not None:
        img = img.convert("LA" if img.mode == "L" else "RGBA")
        img.putalpha(source.alpha)
    return img


def compare_image(source: np.ndarray, known: np.ndarray, result: np.ndarray) -> np.ndarray:
    """Input | holes (white) | result, side by side, at most 3072 px wide."""
    holes = source.copy()
    holes[~known] = 255
    gap = np.full((source.shape[0], 8, source.shape[2]), 255, np.uint8)
    sheet = np.concatenate([source, gap, holes, gap, result], axis=1)
    if sheet.shape[1] > 3072:
        scale = 3072 / sheet.shape[1]
        sheet = cv2.resize(sheet, (3072, max(1, round(sheet.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        sheet = sheet.reshape(*sheet.shape[:2], -1)
    return sheet


def uncertainty_outputs(
    result: InpaintResult, known: np.ndarray, path: Path, smallest: bool = False
) -> tuple[list[tuple[Path, Writer]], float]:
    """The Monte Carlo standard deviation as a colour-mapped image (mean over channels, 0 to its
    maximum, inferno) and raw values: ``<path>.npy`` (std, ``(H, W)`` or ``(H, W, C)``) and
    ``<path>_stderr.npy`` (standard error of the mean). Returns their writers and the colour
    scale's top."""
    assert result.std is not None and result.stderr is not None
    std = result.std.mean(-1)
    top = float(std.max())
    scaled = np.zeros(std.shape, np.uint8) if top == 0 else np.rint(std / top * 255).astype(np.uint8)
    colour = cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)[..., ::-1]
    colour[known] = (colour[known] * 0.35).astype(np.uint8)  # dim known pixels (std 0 there)
    writes = [_encoder(Image.fromarray(np.ascontiguousarray(colour)), path, smallest)]
    for suffix, values in ((".npy", result.std), ("_stderr.npy", result.stderr)):
        array = values.squeeze(-1) if values.shape[-1] == 1 else values
        writes.append((path.with_name(path.stem + suffix), lambda f, a=array: np.save(f, a)))
    return writes, top


def _read_known(path: Path, size: tuple[int, int], invert: bool, resize: bool) -> np.ndarray:
    try:
        known, _ = read_mask(path, invert)
    except FileNotFoundError:
        raise UsageError(f"mask not found: {path}") from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    h, w = known.shape
    if (w, h) != size:
        if not resize:
            raise UsageError(
                f"mask {path} is {w}x{h} but the image is {size[0]}x{size[1]}; pass --resize-mask to scale it"
            )
        known = cv2.resize(known.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return known


def _check_outputs(image_path: Path, mask_path: Path, out_path: Path, args: argparse.Namespace) -> None:
    """Every output has a known format and its own file, and none is the mask (the result may
    replace the input image, on purpose)."""
    outputs = {"--out": out_path}
    if args.compare is not None:
        outputs["--compare"] = args.compare
    if args.uncertainty is not None:
        u = args.uncertainty
        outputs.update(
            {
                "--uncertainty": u,
                "--uncertainty (.npy)": u.with_name(u.stem + ".npy"),
                "--uncertainty (_stderr.npy)": u.with_name(u.stem + "_stderr.npy"),
            }
        )
    for name, path in zip(("--interval LOW", "--interval HIGH"), args.interval or ()):
        outputs[name] = path
    for name, path in outputs.items():
        if not name.endswith(".npy)"):
            _output_format(path)
    seen: dict[Path, str] = {mask_path.resolve(): "the mask"}
    for name, path in outputs.items():
        real = path.resolve()
        if real == image_path.resolve() and name != "--out":
            raise UsageError(f"{name} {path} is the input image: choose another file")
        if real in seen:
            raise UsageError(f"{name} {path} is also {seen[real]}: each output needs a file of its own")
        seen[real] = f"{name}"


def inpaint_file(
    model: nn.Module | None,
    image_path: Path,
    mask_path: Path,
    out_path: Path,
    args: argparse.Namespace,
    device: torch.device,
    channels: int,
) -> tuple[InpaintResult | None, str]:
    """Inpaint one pair of files and write the outputs; returns the result and a one-line report."""
    _check_outputs(image_path, mask_path, out_path, args)
    source = read_input(image_path, channels)
    height, width = source.pixels.shape[:2]
    known = _read_known(mask_path, (width, height), args.invert_mask, args.resize_mask)
    if known.all():
        if out_path.exists() and out_path.resolve() == image_path.resolve():
            return None, f"warning: mask {mask_path} has no holes; {out_path} is the input and stays as it is"
        if out_path.suffix.lower() == image_path.suffix.lower():
            _write_all([(out_path, lambda f: _copy_into(image_path, f))])
        else:
            _write_all([_encoder(to_output_image(source.pixels, source), out_path, args.smallest)])
        return None, f"warning: mask {mask_path} has no holes; wrote the input unchanged to {out_path}"
    if not known.any():
        raise UsageError(f"mask {mask_path} covers the whole image: there is nothing to inpaint from")
    known_share = float(known.mean())
    assert model is not None
    from pconv.inpaint import inpaint

    try:
        result = inpaint(
            model,
            source.pixels,
            known,
            tile=args.tile,
            overlap=args.overlap,
            samples=args.samples,
            batch=args.batch_size,
            flip=args.flip,
            scale=args.scale,
            device=device,
            progress=args.image is not None,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    writes = [_encoder(to_output_image(result.image, source), out_path, args.smallest)]
    tiles = f"{result.tiles} tile{'s' if result.tiles != 1 else ''}"
    report = f"wrote {out_path} ({tiles}, {np.count_nonzero(~known)} hole pixels)"
    if known_share < MIN_KNOWN_SHARE:
        tqdm.write(
            f"warning: only {known_share:.2%} of {image_path.name} is known: the fill has almost nothing to go "
            "on and is a guess",
            file=sys.stderr,
        )
    if args.compare is not None:
        writes.append(
            _encoder(
                Image.fromarray(compare_image(source.pixels, known, result.image).squeeze()),
                args.compare,
                args.smallest,
            )
        )
        report += f"; comparison {args.compare}"
    if args.uncertainty is not None:
        more, top = uncertainty_outputs(result, known, args.uncertainty, args.smallest)
        writes += more
        hole_std = float(result.std[~known].mean())
        report += (
            f"; uncertainty {args.uncertainty} (+ .npy, _stderr.npy; colour scale 0 to std {top:.4f}, "
            f"mean std in the holes {hole_std:.4f})"
        )
    if args.interval is not None:
        for path, pixels in zip(args.interval, result.interval()):
            writes.append(_encoder(to_output_image(pixels, source), path, args.smallest))
        report += f"; 95% interval {args.interval[0]} .. {args.interval[1]}"
    _write_all(writes)
    return result, report


def _load(weights: Path | None, device: torch.device, onnx: Path | None = None) -> nn.Module:
    if onnx is not None:
        if weights is not None:
            raise UsageError("give --weights or --onnx, not both")
        if not onnx.is_file():
            raise UsageError(f"ONNX file not found: {onnx}")
        try:
            from pconv.onnx_model import OnnxModel

            return OnnxModel(onnx)
        except ImportError:
            raise UsageError("--onnx needs onnxruntime: pip install -e .[onnx]") from None
        except Exception as err:  # onnxruntime reports a broken file with its own exception types
            raise UsageError(f"cannot load {onnx}: {str(err).splitlines()[0]}") from None
    from pconv.io import DEFAULT_WEIGHTS, load_model

    path = weights or DEFAULT_WEIGHTS
    if weights is None and not path.is_file():
        raise UsageError(f"no released model at {path}; pass --weights FILE (a release file written by train.py)")
    try:
        return load_model(path, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None


def _tile(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a number of pixels, got {text!r}") from None
    if value < 32:
        raise argparse.ArgumentTypeError(f"tiles must be at least 32 pixels, got {value}")
    return value


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
    one.add_argument("--compare", type=Path, metavar="FILE", help="also write input | holes | result side by side")
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
    opt.add_argument("--weights", type=Path, help="release file from train.py (default: the project's released model)")
    opt.add_argument("--onnx", type=Path, help="run this ONNX file (python -m pconv.export) with onnxruntime instead")
    opt.add_argument("--invert-mask", action="store_true", help="masks use white = known")
    opt.add_argument("--resize-mask", action="store_true", help="scale a mask of another size to the image")
    opt.add_argument(
        "--tile",
        type=_tile,
        default="auto",
        help="auto (one pass up to ~1 megapixel, else 512-px tiles), none, or a tile side in pixels",
    )
    opt.add_argument("--overlap", type=int, help="pixels shared by neighbouring tiles (default a quarter tile)")
    opt.add_argument("--scale", type=scale_arg, default="auto", metavar="auto|FACTOR", help=SCALE_HELP)
    opt.add_argument("--samples", type=int, default=1, help="Monte Carlo dropout samples (needs a model with dropout)")
    opt.add_argument("--batch-size", type=int, default=8, help="samples per forward pass (default 8)")
    opt.add_argument(
        "--flip",
        action="store_true",
        help="average with the prediction for the mirror image (twice the time, less noise)",
    )
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
    if args.samples < 1 or args.batch_size < 1:
        raise UsageError("--samples and --batch-size must be at least 1")
    if (args.uncertainty is not None or args.interval is not None) and args.samples < 2:
        raise UsageError("--uncertainty and --interval need --samples N with N >= 2")


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


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    device = resolve_device(args.device)
    if args.image is not None:
        _output_format(args.out)
        model = _load(args.weights, device, args.onnx)
        channels = model.config.in_channels
        result, report = inpaint_file(model, args.image, args.mask, args.out, args, device, channels)
        print(report, file=sys.stderr if result is None else sys.stdout)
        return 0

    ext = "." + args.ext.lstrip(".")
    _output_format(Path("x" + ext))
    pairs = _pairs(args)
    model = _load(args.weights, device, args.onnx)
    channels = model.config.in_channels
    failures: list[str] = []
    for image_path, mask_path in tqdm(pairs, desc="inpainting", unit="image"):
        try:
            if mask_path is None:
                read_input(image_path, channels)  # an unreadable image is reported as such first
                raise UsageError(f"no mask named {image_path.stem}.* in {args.mask_dir}")
            _, report = inpaint_file(
                model, image_path, mask_path, args.out_dir / (image_path.stem + ext), args, device, channels
            )
            if report.startswith("warning"):
                tqdm.write(report, file=sys.stderr)
        except UsageError as err:
            failures.append(f"{image_path.name}: {err}")
    done = len(pairs) - len(failures)
    print(f"inpainted {done} of {len(pairs)} images into {args.out_dir}")
    if failures:
        print(f"{len(failures)} failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python predict.py``, ``pconv-predict``)."""
    return run_main(_main, argv, "predict.py")


if __name__ == "__main__":
    sys.exit(main())
