"""Parameters, inference time and training-step time of the PConv U-Net and UNet3+ at 256 px.

Times are best-of-repeats, interleaved, and reported as ratios to the PConv U-Net measured in
the same run. The training step is forward + L1 hole/valid loss (+ deep supervision for
UNet3+) + backward + Adam.

    python benchmarks/bench_models.py [--size 256] [--batch 4] [--repeats 3] [--base-width 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pconv import PConvUNet, UNet3Plus
from pconv.losses import hole_valid_losses

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_interleaved  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--base-width", type=int, default=64)
    args = p.parse_args()
    torch.manual_seed(0)
    models = {
        "pconv_unet (depth 7)": PConvUNet(depth=7, base_width=args.base_width),
        "unet3plus partial (depth 4)": UNet3Plus(depth=4, base_width=args.base_width, conv="partial", dropout=0.1),
        "unet3plus plain (depth 4)": UNet3Plus(depth=4, base_width=args.base_width, conv="plain", dropout=0.1),
    }
    image = torch.rand(args.batch, 3, args.size, args.size)
    mask = torch.ones(args.batch, 1, args.size, args.size)
    mask[..., args.size // 4 : args.size // 2, args.size // 8 : -args.size // 8] = 0
    optimisers = {name: torch.optim.Adam(m.parameters(), 1e-4) for name, m in models.items()}

    def infer(model: torch.nn.Module):
        def run() -> None:
            model.eval()
            with torch.no_grad():
                model(image, mask)

        return run

    def train_step(name: str):
        model, opt = models[name], optimisers[name]

        def run() -> None:
            model.train()
            outputs = model(image, mask, deep=True) if isinstance(model, UNet3Plus) else [model(image, mask)]
            loss = sum(6 * h + v for h, v in (hole_valid_losses(o, image, mask) for o in outputs))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return run

    inference = time_interleaved({n: infer(m) for n, m in models.items()}, args.repeats, warmup=1)
    training = time_interleaved({n: train_step(n) for n in models}, args.repeats, warmup=1)
    base = next(iter(models))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.size}x{args.size}, batch {args.batch}, "
        f"base width {args.base_width}"
    )
    print(f"{'model':<30} {'parameters':>11} {'infer s':>8} {'ratio':>6} {'train s':>8} {'ratio':>6}")
    for name, model in models.items():
        params = sum(q.numel() for q in model.parameters())
        print(
            f"{name:<30} {params:>11,} {inference[name]:>8.3f} {inference[name] / inference[base]:>5.2f}x "
            f"{training[name]:>8.3f} {training[name] / training[base]:>5.2f}x"
        )


if __name__ == "__main__":
    main()
