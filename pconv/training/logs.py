"""What a run writes for people: CSV logs, sample grids and (when installed) TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pconv.losses import composite

__all__ = ["RunLogs", "sample_grid"]


class RunLogs:
    """CSV logs, sample grids and (when installed) TensorBoard, written by rank 0 only."""

    def __init__(self, out: Path, resume_step: int | None) -> None:
        self.out = out
        (out / "samples").mkdir(parents=True, exist_ok=True)
        self.files: dict[str, tuple[object, csv.DictWriter | None]] = {}
        self.resume_step = resume_step
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def _writer(self, name: str, fields: list[str]) -> csv.DictWriter:
        if name not in self.files:
            path = self.out / name
            rows = []
            if self.resume_step is not None and path.exists():  # drop rows past the checkpoint
                with open(path, newline="") as f:
                    rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.resume_step]
            f = open(path, "w", newline="")
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
            self.files[name] = (f, writer)
        return self.files[name][1]  # type: ignore[return-value]

    def row(self, name: str, values: dict) -> None:
        writer = self._writer(name, list(values))
        writer.writerow(values)
        self.files[name][0].flush()  # type: ignore[attr-defined]
        if self.tb is not None:
            prefix = name.removesuffix(".csv")
            for key, value in values.items():
                if isinstance(value, float):
                    self.tb.add_scalar(f"{prefix}/{key}", value, values["step"])

    def grid(self, step: int, grid: np.ndarray) -> None:
        Image.fromarray(grid).save(self.out / "samples" / f"step_{step:07d}.png")
        if self.tb is not None:
            self.tb.add_image("samples", grid, step, dataformats="HWC")

    def close(self) -> None:
        for f, _ in self.files.values():
            f.close()  # type: ignore[attr-defined]
        if self.tb is not None:
            self.tb.close()


def sample_grid(image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> np.ndarray:
    """Rows of input with holes (white) | output | composite | ground truth, as uint8 RGB."""
    comp = composite(pred, image, mask)
    holes = image * mask + (1 - mask)
    rows = [torch.cat(list(cols), dim=-1) for cols in zip(holes, pred.clamp(0, 1), comp.clamp(0, 1), image)]
    grid = torch.cat(rows, dim=-2)  # (C, rows*H, 4*W)
    if grid.shape[0] == 1:
        grid = grid.expand(3, -1, -1)
    return (grid.permute(1, 2, 0).float().cpu().numpy() * 255 + 0.5).astype(np.uint8)
