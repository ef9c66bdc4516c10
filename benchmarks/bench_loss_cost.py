"""What the perceptual and style terms and bf16 autocast cost per training step, as ratios.

One training step (forward, loss, backward, Adam) of a PConv U-Net, in four settings measured
in one run: float32 or bf16 autocast, with or without the VGG16 terms (the HED VGG16 shipped in
weights/; any weights cost the same). Prints seconds per step and each setting's ratio to the
float32 step without VGG. On a CPU without native bf16 (no AVX512-BF16 or AMX) bf16 autocast is
many times slower; ``train.py --amp on`` then stays in float32.

    python benchmarks/bench_loss_cost.py [--size 256] [--batch 4] [--base-width 32] [--depth 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_interleaved  # noqa: E402

from pconv import InpaintingLoss, LossWeights, PConvUNet, VGG16Features  # noqa: E402
from pconv.training.steps import cpu_has_native_bf16  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--base-width", type=int, default=32)
    p.add_argument("--depth", type=int, default=7)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    model = PConvUNet(depth=args.depth, base_width=args.base_width).train()
    opt = torch.optim.Adam(model.parameters(), 1e-5)
    vgg = VGG16Features("hed")
    image = torch.rand(args.batch, 3, args.size, args.size)
    mask = (torch.rand(args.batch, 1, args.size // 8, args.size // 8) > 0.3).float()
    mask = mask.repeat_interleave(8, 2).repeat_interleave(8, 3)

    def step_fn(use_vgg: bool, amp: bool):
        loss_fn = InpaintingLoss(
            vgg if use_vgg else None, LossWeights() if use_vgg else LossWeights(perceptual=0, style=0)
        )

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                terms = loss_fn(model(image, mask).float(), image, mask)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()

        return step

    settings = {
        "float32": (False, False),
        "bf16": (False, True),
        "float32 + VGG": (True, False),
        "bf16 + VGG": (True, True),
    }
    times = time_interleaved({name: step_fn(*s) for name, s in settings.items()}, args.repeats, warmup=1)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}; "
        f"PConvUNet(depth={args.depth}, base_width={args.base_width}), batch {args.batch} at {args.size} px"
    )
    for name, seconds in times.items():
        print(f"{name:>14}: {seconds:6.2f} s/step  {seconds / times['float32']:5.2f}x float32 without VGG")


if __name__ == "__main__":
    main()
