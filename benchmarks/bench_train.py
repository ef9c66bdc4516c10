"""Images per second of the training step and of the data loader alone, at 256 and 512 px.

The loader (JPEG decoding at reduced size, random resized crop, flip, a fresh hole mask per
image) must deliver at least twice the images per second that the step consumes, with the
default number of workers, or training would wait for data. The step is the paper's: PConv
U-Net (depth 7 at 256 px, 8 at 512 px), all five loss terms through VGG16 (random weights here;
the cost is the same), Adam.

    python benchmarks/bench_train.py [--sizes 256 512] [--batch 4] [--steps 3]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pconv import InpaintingLoss, PConvUNet, VGG16Features
from pconv.data import EpochSampler, InpaintingDataset, collate, find_images
from pconv.training.config import DataConfig
from pconv.training.setup import worker_init

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos" / "train"


def train_loader(size: int, batch: int, workers: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader like train.py's over the training photos (holes from the generator)."""
    dataset = InpaintingDataset(find_images(PHOTOS), size, seed=0)
    return DataLoader(
        dataset,
        batch,
        sampler=EpochSampler(len(dataset), 0),
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=worker_init,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
    )


def loader_speed(size: int, batch: int, workers: int, batches: int) -> float:
    """Images per second from a DataLoader like train.py's (after the workers have started)."""
    it = iter(train_loader(size, batch, workers))
    next(it)  # workers up
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def step_speed(size: int, batch: int, steps: int) -> float:
    """Images per second of forward + loss + backward + Adam step."""
    torch.manual_seed(0)
    model = PConvUNet(depth=8 if size >= 512 else 7).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss_fn = InpaintingLoss(VGG16Features(None))
    opt = torch.optim.Adam(model.parameters(), 2e-4)
    image = torch.rand(batch, 3, size, size)
    mask = (torch.rand(batch, 1, size // 8, size // 8) > 0.3).float().repeat_interleave(8, 2).repeat_interleave(8, 3)

    def step() -> None:
        terms = loss_fn(model(image, mask), image, mask)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="timed training steps per size")
    p.add_argument("--workers", type=int, default=DataConfig.workers, help="loader workers (default: train.py's)")
    args = p.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.workers} loader workers, batch {args.batch}"
    )
    print(f"{'size':>5} {'step img/s':>11} {'loader img/s':>13} {'loader/step':>12}")
    for size in args.sizes:
        step = step_speed(size, args.batch, args.steps)
        load = loader_speed(size, args.batch, args.workers, batches=max(8, 4 * args.workers))
        print(f"{size:>5} {step:>11.2f} {load:>13.1f} {load / step:>11.1f}x")


if __name__ == "__main__":
    main()
