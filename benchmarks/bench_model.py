"""PConvUNet against the same U-Net built from nn.Conv2d (no masks), at 256 and 512 px.

Prints, measured in one run: the ratio of a training step (forward, L1 hole/valid loss,
backward) and of an inference pass, and the ratio of activation memory alive for backward.

    python benchmarks/bench_model.py [--sizes 256 512] [--batch 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import saved_bytes, time_interleaved  # noqa: E402

from pconv import PConvUNet, PConvUNetConfig  # noqa: E402
from pconv.losses import hole_valid_losses  # noqa: E402


class PlainUNet(nn.Module):
    """The PConv U-Net's layout with ordinary convolutions: the baseline."""

    def __init__(self, config: PConvUNetConfig) -> None:
        super().__init__()
        reference = PConvUNet(config)

        def plain(block):
            conv = block.conv
            layers = [
                nn.Conv2d(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    bias=conv.bias is not None,
                )
            ]
            layers += [m for m in (block.bn, block.act) if m is not None]
            return nn.Sequential(*layers)

        self.encoder = nn.ModuleList(plain(b) for b in reference.encoder)
        self.decoder = nn.ModuleList(plain(b) for b in reference.decoder)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        h, skips = image, []
        for block in self.encoder:
            skips.append(h)
            h = block(h)
        for j, block in enumerate(self.decoder):
            h = block(torch.cat([F.interpolate(h, scale_factor=2), skips[-1 - j]], 1))
        return h


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, best of {args.repeats}")
    print(
        f"{'size':>5} {'depth':>5} {'plain train s':>13} {'train':>7} {'infer':>7} {'memory':>7}   (PConvUNet / plain U-Net)"
    )
    for size in args.sizes:
        depth = 8 if size >= 512 else 7
        config = PConvUNetConfig(depth=depth)
        torch.manual_seed(0)
        models = {"pconv": PConvUNet(config), "plain": PlainUNet(config)}
        image = torch.rand(args.batch, 3, size, size)
        mask = (torch.rand(args.batch, 1, size, size) > 0.25).float()

        def train_step(model):
            def run():
                model.train()
                out = model(image, mask)
                hole, valid = hole_valid_losses(out, image, mask)
                (6 * hole + valid).backward()
                model.zero_grad(set_to_none=True)

            return run

        def infer(model):
            def run():
                model.eval()
                with torch.no_grad():
                    model(image, mask)

            return run

        train = time_interleaved({k: train_step(m) for k, m in models.items()}, args.repeats, warmup=1)
        inference = time_interleaved({k: infer(m) for k, m in models.items()}, args.repeats, warmup=1)
        mem = {}
        for k, m in models.items():
            m.train()
            mem[k] = saved_bytes(lambda: m(image, mask), [image, mask], m.parameters())
        print(
            f"{size:>5} {depth:>5} {train['plain']:>13.2f} {train['pconv'] / train['plain']:>6.2f}x "
            f"{inference['pconv'] / inference['plain']:>6.2f}x {mem['pconv'] / mem['plain']:>6.2f}x"
        )


if __name__ == "__main__":
    main()
