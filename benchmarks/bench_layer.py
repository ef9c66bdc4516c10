"""PartialConv2d against nn.Conv2d with the same weights, at the PConv U-Net's layer shapes.

Times forward+backward (best of interleaved samples of at least 50 ms each) and the activation
memory kept for backward, with a one-channel mask and with a mask as wide as the input, and prints the
ratios to the plain convolution measured in the same run.

    python benchmarks/bench_layer.py            # all shapes of the 512x512 network
    python benchmarks/bench_layer.py --quick    # a few shapes, fewer repeats
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/bench_layer.py   # Linux: huge pages for big tensors

On Linux, fresh tensors of tens of megabytes are new memory mappings whose page faults can cost
more than the arithmetic on them; PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` backs them with
transparent huge pages, which speeds up both layers and narrows the ratio at the large,
input-heavy shapes (the mask multiply needs such a buffer; the plain convolution does not).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import saved_bytes, time_interleaved  # noqa: E402

from pconv import PartialConv2d  # noqa: E402

# (name, in_channels, out_channels, kernel, stride, input size) of the 512x512 PConv U-Net.
SHAPES = [
    ("enc1 7x7", 3, 64, 7, 2, 512),
    ("enc2 5x5", 64, 128, 5, 2, 256),
    ("enc3 5x5", 128, 256, 5, 2, 128),
    ("enc4 3x3", 256, 512, 3, 2, 64),
    ("enc5 3x3", 512, 512, 3, 2, 32),
    ("enc8 3x3", 512, 512, 3, 2, 8),
    ("dec8 3x3", 1024, 512, 3, 1, 4),
    ("dec5 3x3", 1024, 512, 3, 1, 32),
    ("dec4 3x3", 768, 256, 3, 1, 64),
    ("dec3 3x3", 384, 128, 3, 1, 128),
    ("dec2 3x3", 192, 64, 3, 1, 256),
    ("dec1 3x3", 67, 3, 3, 1, 512),
]
QUICK = {"enc1 7x7", "enc4 3x3", "dec8 3x3", "dec2 3x3", "dec1 3x3"}


def bench_shape(cin: int, cout: int, k: int, stride: int, size: int, batch: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride, k // 2)
    pconv = PartialConv2d(cin, cout, k, stride, k // 2, return_mask=True)
    pconv.load_state_dict(conv.state_dict())
    x = torch.randn(batch, cin, size, size, requires_grad=True)
    mask1 = (torch.rand(batch, 1, size, size) > 0.3).float()
    maskc = (torch.rand(batch, cin, size, size) > 0.3).float()

    def step(fn):
        def run():
            out = fn()
            out.sum().backward()
            x.grad = None
            conv.zero_grad(set_to_none=True)
            pconv.zero_grad(set_to_none=True)

        return run

    fns = {
        "conv": lambda: conv(x),
        "pconv 1ch": lambda: pconv(x, mask1)[0],
        "pconv Cch": lambda: pconv(x, maskc)[0],
    }
    times = time_interleaved({n: step(f) for n, f in fns.items()}, repeats, min_seconds=0.05)
    params = list(conv.parameters()) + list(pconv.parameters())
    inputs = {"conv": [x], "pconv 1ch": [x, mask1], "pconv Cch": [x, maskc]}
    mem = {n: saved_bytes(f, inputs[n], params) for n, f in fns.items()}
    return {
        "t 1ch": times["pconv 1ch"] / times["conv"],
        "t Cch": times["pconv Cch"] / times["conv"],
        "m 1ch": mem["pconv 1ch"] / mem["conv"],
        "m Cch": mem["pconv Cch"] / mem["conv"],
        "conv ms": times["conv"] * 1e3,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="four shapes, fewer repeats")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 15)
    shapes = [s for s in SHAPES if not args.quick or s[0] in QUICK]
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0") == "1"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {repeats} repeats, "
        f"THP_MEM_ALLOC_ENABLE={'1' if thp else '0 (set it to 1 on Linux for huge pages)'}"
    )
    print(
        "ratios PartialConv2d / nn.Conv2d: forward+backward time, and memory alive for backward (inputs, saved tensors, output)"
    )
    print(
        f"{'layer':<10} {'in':>5} {'out':>4} {'size':>4} {'conv ms':>8} {'time 1ch':>9} {'time Cch':>9} {'mem 1ch':>8} {'mem Cch':>8}"
    )
    worst = 0.0
    for name, cin, cout, k, stride, size in shapes:
        r = bench_shape(cin, cout, k, stride, size, args.batch, repeats)
        worst = max(worst, r["t 1ch"], r["t Cch"])
        print(
            f"{name:<10} {cin:>5} {cout:>4} {size:>4} {r['conv ms']:>8.2f} {r['t 1ch']:>8.2f}x {r['t Cch']:>8.2f}x"
            f" {r['m 1ch']:>7.2f}x {r['m Cch']:>7.2f}x"
        )
    print(f"worst time ratio: {worst:.2f}x")


if __name__ == "__main__":
    main()
