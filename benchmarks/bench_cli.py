"""Whole commands, as a user times them: ``predict.py`` against a Python script that reads the
image, runs OpenCV Telea and writes the PNG; start-up, reading and writing included.

    python benchmarks/bench_cli.py [--repeats 3] [--sizes quickstart 24] [--precision bfloat16]

``quickstart`` is the README's example photo and mask; a number is a photo of that many
megapixels (an example photo upscaled) with holes in each ``--layouts``: ``four`` (two strokes
and two blobs, scaled with the photo), ``strokes`` (two long thin strokes across it, 18 and 30 px
wide, and two ~600-px blobs), ``blobs`` (60 small round holes, radius 15-60 px, scattered) and
``box`` (one box of a quarter of the width by a quarter of the height: 1500x1000 at 24 MP). Each command
runs ``--repeats`` times in a fresh process, interleaved; the shortest run counts, and the peak
memory of that process is its maximum resident set size. A process that only imports PyTorch
is timed beside them: the floor of any command that runs a PyTorch model.

The Telea script runs with ``NUMPY_MADVISE_HUGEPAGE=0``, as the tools set it for themselves
(``pconv.cli.no_numpy_hugepages``): with Linux's default huge-page settings, NumPy's advice makes
fresh 24 MP arrays stall on memory compaction at random, which slowed the script by up to 1.5 s
between runs here; the baseline is timed at its best.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from bench_fill import four_holes

ROOT = Path(__file__).resolve().parents[1]
TELEA = (
    "import sys, cv2\n"
    "image, mask, out = sys.argv[1:]\n"
    "filled = cv2.inpaint(cv2.imread(image), cv2.imread(mask, cv2.IMREAD_GRAYSCALE), 3, cv2.INPAINT_TELEA)\n"
    "cv2.imwrite(out, filled)\n"
)
# What a PyTorch-free quick start could cost: onnxruntime on an exported graph, one pass (no crops or
# working scales), reading and writing as predict.py does.
ONNX = (
    "import sys, zlib\n"
    "import numpy as np, onnxruntime\n"
    "from PIL import Image\n"
    "graph, image, mask, out = sys.argv[1:]\n"
    "session = onnxruntime.InferenceSession(graph, providers=['CPUExecutionProvider'])\n"
    "multiple = int(session.get_modelmeta().custom_metadata_map['pconv.multiple'])\n"
    "rgb = np.asarray(Image.open(image).convert('RGB'))\n"
    "known = np.asarray(Image.open(mask).convert('L')) < 128\n"
    "h, w = known.shape\n"
    "ph, pw = -h % multiple, -w % multiple\n"
    "x = np.pad(rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255, ((0, 0), (0, 0), (0, ph), (0, pw)))\n"
    "m = np.pad(known[None, None].astype(np.float32), ((0, 0), (0, 0), (0, ph), (0, pw)))\n"
    "names = [i.name for i in session.get_inputs()]\n"
    "pred = session.run(None, dict(zip(names, (x, m))))[0][0, :, :h, :w].transpose(1, 2, 0)\n"
    "fill = np.rint(np.clip(pred, 0, 1) * 255).astype(np.uint8)\n"
    "result = np.where(known[..., None], rgb, fill)\n"
    "Image.fromarray(result).save(out, 'PNG', compress_level=1, compress_type=zlib.Z_RLE)\n"
)


def run(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Seconds and peak resident memory (GiB) of one process (``env``: added to the environment)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {err[-500:]}")
    return seconds, usage.ru_maxrss / 2**20  # Linux reports KiB


def holes(layout: str, height: int, width: int) -> np.ndarray:
    """The hole mask (255 = hole) of a layout (see the module's docstring)."""
    if layout == "four":
        return (~four_holes(height, width)).astype(np.uint8) * 255
    m = np.zeros((height, width), np.uint8)
    if layout == "strokes":
        cv2.line(m, (width // 20, height // 8), (width // 20 + 1800, height // 8 + 300), 255, 18)
        cv2.line(m, (width // 6, height * 7 // 8), (width // 6 + 2500, height * 7 // 8 - 700), 255, 30)
        cv2.circle(m, (width * 3 // 4, height * 3 // 10), 300, 255, -1)
        cv2.ellipse(m, (width // 2, height // 2), (320, 260), 20, 0, 360, 255, -1)
    elif layout == "blobs":
        rng = np.random.default_rng(0)
        for _ in range(60):
            centre = (int(rng.integers(100, width - 100)), int(rng.integers(100, height - 100)))
            cv2.circle(m, centre, int(rng.integers(15, 61)), 255, -1)
    elif layout == "box":
        m[height * 3 // 8 : height * 5 // 8, width * 3 // 8 : width * 5 // 8] = 255
    else:
        raise SystemExit(f"unknown layout {layout!r}")
    return m


def case(size: str, layout: str, folder: Path) -> tuple[Path, Path, str]:
    if size == "quickstart":
        return ROOT / "examples" / "chelsea.jpg", ROOT / "examples" / "chelsea_mask.png", "quick-start photo"
    megapixels = float(size)
    photo = cv2.imread(str(ROOT / "examples" / "canyon.jpg"))
    h, w = photo.shape[:2]
    scale = (megapixels * 1e6 / (h * w)) ** 0.5
    width, height = round(w * scale), round(h * scale)
    image, mask = folder / f"photo_{size}.jpg", folder / f"mask_{size}_{layout}.png"
    if not image.exists():
        resized = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(image), resized, [cv2.IMWRITE_JPEG_QUALITY, 92])
    cv2.imwrite(str(mask), holes(layout, height, width))
    return image, mask, f"{width}x{height} ({width * height / 1e6:.0f} MP), {layout}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", nargs="+", default=["quickstart", "24"])
    p.add_argument("--weights", help="release file (default: the released model)")
    p.add_argument("--precision", default="float32", help="predict.py --precision (default float32)")
    p.add_argument("--layouts", nargs="+", default=["four"], help="hole layouts of the numbered sizes (default four)")
    p.add_argument(
        "--onnx",
        help="an exported graph (python -m pconv.export): also time a PyTorch-free onnxruntime script on the "
        "quick-start photo (one pass, no crops or scales)",
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "telea.py").write_text(TELEA)
        (folder / "onnx.py").write_text(ONNX)
        print("whole processes (start-up, reading and writing included), best of repeats:")
        for size, layout in [(s, lay) for s in args.sizes for lay in (["-"] if s == "quickstart" else args.layouts)]:
            image, mask, label = case(size, layout, folder)
            ours = [
                sys.executable,
                str(ROOT / "predict.py"),
                "--image",
                str(image),
                "--mask",
                str(mask),
                "--out",
                str(folder / "ours.png"),
                *(["--weights", args.weights] if args.weights else []),
                "--precision",
                args.precision,
            ]
            telea = [sys.executable, str(folder / "telea.py"), str(image), str(mask), str(folder / "telea.png")]
            results: dict[str, list[tuple[float, float]]] = {"predict.py": [], "Telea script": [], "torch": []}
            onnx = None
            if args.onnx and size == "quickstart":
                onnx = [
                    sys.executable,
                    str(folder / "onnx.py"),
                    args.onnx,
                    str(image),
                    str(mask),
                    str(folder / "o.png"),
                ]
                results["onnxruntime script"] = []
            for _ in range(args.repeats):
                results["predict.py"].append(run(ours))
                results["Telea script"].append(run(telea, {"NUMPY_MADVISE_HUGEPAGE": "0"}))
                results["torch"].append(run([sys.executable, "-c", "import torch"]))
                if onnx is not None:
                    results["onnxruntime script"].append(run(onnx))
            best = {name: min(r) for name, r in results.items()}
            ratio = best["predict.py"][0] / best["Telea script"][0]
            print(
                f"  {label}: predict.py {best['predict.py'][0]:.2f} s (peak {best['predict.py'][1]:.2f} GiB), "
                f"Telea script {best['Telea script'][0]:.2f} s (peak {best['Telea script'][1]:.2f} GiB): {ratio:.1f}x; "
                f"a process that only imports PyTorch: {best['torch'][0]:.2f} s "
                f"({best['torch'][0] / best['Telea script'][0]:.1f}x)"
            )
            if onnx is not None:
                seconds, peak = best["onnxruntime script"]
                print(
                    f"  {label}: a PyTorch-free onnxruntime script, one pass: {seconds:.2f} s (peak {peak:.2f} GiB): "
                    f"{seconds / best['Telea script'][0]:.1f}x Telea, {seconds / best['predict.py'][0]:.2f}x predict.py"
                )


if __name__ == "__main__":
    main()
