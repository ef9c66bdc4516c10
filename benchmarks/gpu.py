"""Everything worth measuring on a GPU, in one call of at most ``--budget`` seconds (8 minutes).

    python benchmarks/gpu.py                 # on a machine with CUDA
    python benchmarks/gpu.py --dry-run       # on the CPU at tiny sizes: what the test suite runs

1. The CUDA tier of the tests (``tests/test_device.py``, whose cases run on every device present).
2. ``PartialConv2d`` against ``nn.Conv2d`` at the 512-px U-Net's layer shapes (float32, bf16
   autocast, channels_last), and ``PConvUNet`` against the same U-Net of plain convolutions
   (training step and inference; also ``torch.compile``): ratios measured in this run.
3. Training images per second at 512 px with the data loader of ``train.py`` (the photos in
   ``data/photos/train``, holes from the generator, the paper's loss with the bundled VGG16), bf16
   autocast, and the card's utilisation meanwhile (``nvidia-smi``).

Installs nothing: it needs what ``pip install -e ".[test]"`` installs. Prints one table; a part
that the remaining budget cannot hold is skipped, and the table says so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_layer import SHAPES  # noqa: E402
from bench_model import PlainUNet  # noqa: E402

from pconv import InpaintingLoss, PartialConv2d, PConvUNet, PConvUNetConfig, VGG16Features  # noqa: E402
from pconv.losses import hole_valid_losses  # noqa: E402

Row = tuple[str, str, str]  # (what, variant, result)


class Budget:
    """Seconds left of the call; a part asks before it starts."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best-of-``repeats`` seconds of ``fn()``, synchronising the device around each call."""
    fn()  # warm-up (and compilation)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def variant(name: str, device: torch.device) -> Iterator[None]:
    """bf16 autocast for ``bf16``; nothing for the others (set up by the caller)."""
    if name == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def prepare(model: nn.Module, name: str) -> Callable:
    if name == "channels_last":
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if name == "compile" else model


def cuda_tests(budget: Budget, dry_run: bool) -> list[Row]:
    """``pytest tests/test_device.py`` (on CUDA where present); the dry run only collects it."""
    args = [sys.executable, "-m", "pytest", "-q", "-x", str(ROOT / "tests" / "test_device.py")]
    args += ["--collect-only"] if dry_run else ["-k", "cuda"]
    timeout = max(10.0, min(240.0, budget.left() / 3))
    try:
        run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        last = (run.stdout.strip().splitlines() or ["(no output)"])[-1]
        return [("tests/test_device.py", "cuda" if not dry_run else "collect", last)]
    except subprocess.TimeoutExpired:
        return [("tests/test_device.py", "cuda", f"stopped after {timeout:.0f} s (budget)")]


def layer_rows(
    device: torch.device, variants: list[str], batch: int, scale: int, repeats: int, budget: Budget
) -> list[Row]:
    """PartialConv2d / nn.Conv2d, forward + backward, at each layer shape (sizes divided by ``scale``)."""
    rows = []
    for name, cin, cout, k, stride, size in SHAPES:
        size = max(8, size // scale)
        ratios = []
        for v in variants:
            if budget.left() < 30:
                ratios.append(f"{v} skipped")
                continue
            torch.manual_seed(0)
            partial = PartialConv2d(cin, cout, k, stride, k // 2).to(device)
            plain = nn.Conv2d(cin, cout, k, stride, k // 2).to(device)
            x = torch.randn(batch, cin, size, size, device=device, requires_grad=True)
            mask = (torch.rand(batch, 1, size, size, device=device) > 0.3).float()
            if v == "channels_last":
                x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
            layers = {"partial": prepare(partial, v), "plain": prepare(plain, v)}

            def step(layer, with_mask: bool) -> Callable[[], None]:
                def run() -> None:
                    with variant(v, device):
                        out = layer(x, mask) if with_mask else layer(x)
                    out.float().sum().backward()

                return run

            t_partial = timed(step(layers["partial"], True), device, repeats)
            t_plain = timed(step(layers["plain"], False), device, repeats)
            ratios.append(f"{v} {t_partial / t_plain:.2f}x")
        rows.append((f"layer {name} {cin}->{cout} @{size}", "PartialConv2d / Conv2d", ", ".join(ratios)))
    return rows


def model_rows(
    device: torch.device,
    variants: list[str],
    batch: int,
    size: int,
    depth: int,
    width: int,
    repeats: int,
    budget: Budget,
) -> list[Row]:
    """PConvUNet / plain U-Net: a training step and an inference pass per variant."""
    rows = []
    for v in variants:
        if budget.left() < 60:
            rows.append((f"U-Net {size} px", v, "skipped (budget)"))
            continue
        config = PConvUNetConfig(depth=depth, base_width=width)
        torch.manual_seed(0)
        models = {"pconv": PConvUNet(config).to(device), "plain": PlainUNet(config).to(device)}
        image = torch.rand(batch, 3, size, size, device=device)
        mask = (torch.rand(batch, 1, size, size, device=device) > 0.25).float()
        if v == "channels_last":
            image = image.to(memory_format=torch.channels_last)
        runs = {k: prepare(m, v) for k, m in models.items()}
        seconds = {}
        for k, model in runs.items():

            def train(model=model, k=k) -> None:
                models[k].train()
                with variant(v, device):
                    out = model(image, mask)
                    hole, valid = hole_valid_losses(out.float(), image, mask)
                (6 * hole + valid).backward()
                models[k].zero_grad(set_to_none=True)

            def infer(model=model, k=k) -> None:
                models[k].eval()
                with torch.no_grad(), variant(v, device):
                    model(image, mask)

            seconds[k] = (timed(train, device, repeats), timed(infer, device, repeats))
        (pt, pi), (bt, bi) = seconds["pconv"], seconds["plain"]
        rows.append(
            (
                f"U-Net {size} px, batch {batch}",
                v,
                f"train {pt * 1000:.0f} ms ({pt / bt:.2f}x plain), infer {pi * 1000:.0f} ms ({pi / bi:.2f}x plain)",
            )
        )
    return rows


class Utilisation:
    """The GPU's utilisation (%), sampled from ``nvidia-smi`` every half second in a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.tool = shutil.which("nvidia-smi")
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self.tool and not self.stop.is_set():
            out = subprocess.run(
                [self.tool, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            with contextlib.suppress(ValueError):
                self.samples.append(float(out.splitlines()[0]))
            self.stop.wait(0.5)

    def __enter__(self) -> Utilisation:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def summary(self) -> str:
        if not self.samples:
            return "utilisation unknown (no nvidia-smi)"
        return f"GPU busy {sum(self.samples) / len(self.samples):.0f}% on average"


def training_rows(device: torch.device, size: int, batch: int, steps: int, workers: int, budget: Budget) -> list[Row]:
    """Images per second of train.py's loop body: loader, forward, the paper's loss, backward, Adam."""
    from bench_train import train_loader

    if budget.left() < 60:
        return [(f"training {size} px", "bf16", "skipped (budget)")]
    loader = train_loader(size, batch, workers, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    model = PConvUNet(depth=8 if size >= 512 else 7).to(device).train()
    loss_fn = InpaintingLoss(VGG16Features("hed")).to(device)
    opt = torch.optim.Adam(model.parameters(), 2e-4)
    batches = iter(loader)

    def step() -> None:
        b = next(batches)
        image, mask = b["image"].to(device, non_blocking=True), b["mask"].to(device, non_blocking=True)
        with variant("bf16", device):
            out = model(image, mask)
        terms = loss_fn(out.float(), image, mask)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()

    step()  # workers up, kernels chosen
    with Utilisation() as busy:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, done = time.perf_counter(), 0
        while done < steps and budget.left() > 20:
            step()
            done += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return [
        (
            f"training {size} px, batch {batch}, {workers} loader workers",
            "bf16 autocast",
            f"{done * batch / seconds:.1f} images/s over {done} steps; {busy.summary()}",
        )
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=480, help="seconds for the whole call (default 480)")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, tiny sizes, no compilation")
    args = p.parse_args(argv)
    budget = Budget(args.budget)
    if args.dry_run:
        device = torch.device("cpu")
        variants, scale, model_size, depth, width, batch, repeats = ["float32", "bf16"], 16, 64, 3, 8, 2, 1
        train_size, train_batch, steps, workers = 64, 2, 2, 0
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu.py: error: no CUDA device here; --dry-run runs the script on the CPU")
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        variants, scale, model_size, depth, width, batch, repeats = (
            ["float32", "bf16", "channels_last", "compile"],
            1,
            512,
            8,
            64,
            8,
            5,
        )
        train_size, train_batch, steps, workers = 512, 8, 40, min(8, os.cpu_count() or 1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"torch {torch.__version__} on {name}; budget {args.budget:.0f} s", flush=True)
    rows = cuda_tests(budget, args.dry_run)
    rows += layer_rows(device, [v for v in variants if v != "compile"], batch, scale, repeats, budget)
    rows += model_rows(device, variants, batch, model_size, depth, width, repeats, budget)
    rows += training_rows(device, train_size, train_batch, steps, workers, budget)
    width_what = max(len(r[0]) for r in rows)
    width_variant = max(len(r[1]) for r in rows)
    for what, v, result in rows:
        print(f"{what:<{width_what}}  {v:<{width_variant}}  {result}")
    print(f"done in {args.budget - budget.left():.0f} s")


if __name__ == "__main__":
    main()
