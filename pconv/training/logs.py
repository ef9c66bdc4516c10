"""What a run writes for people: CSV logs, sample grids and (when installed) TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pconv.errors import CheckpointError, OutputError, require
from pconv.files import atomic_save_image, atomic_write_csv, open_append
from pconv.losses import composite

__all__ = ["RunLogs", "sample_grid"]


class RunLogs:
    """CSV logs, sample grids, TensorBoard (when installed) and Weights & Biases (when asked),
    written by rank 0 only.

    Args:
        out: the run folder.
        resume_step: on ``--resume``, the checkpoint's step: CSV rows past it are dropped.
        wandb: a Weights & Biases project to log to (config, every scalar, sample grids), or
            ``None``. Without ``WANDB_API_KEY`` (and ``WANDB_MODE`` unset) it logs offline into
            ``out/wandb``, for ``wandb sync`` later: no account or network is needed.
        wandb_config: the run's configuration, shown by W&B.
        run_id: the W&B run id (resuming a run continues the same W&B run).
        wandb_group: groups runs in W&B (a sweep's trials).
    """

    def __init__(
        self,
        out: Path,
        resume_step: int | None,
        *,
        wandb: str | None = None,
        wandb_config: dict | None = None,
        run_id: str | None = None,
        wandb_group: str | None = None,
    ) -> None:
        self.out = out
        (out / "samples").mkdir(parents=True, exist_ok=True)
        self.files: dict[str, tuple[object, csv.DictWriter | None]] = {}
        self.resume_step = resume_step
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.tb = None
        self.wandb = _start_wandb(wandb, out, wandb_config, run_id, wandb_group) if wandb else None

    def _writer(self, name: str, fields: list[str]) -> csv.DictWriter:
        """The CSV log ``name``: written anew (on a resume, with the rows up to the checkpoint kept) by
        an atomic replace, then appended to, never through a link planted at its path."""
        if name not in self.files:
            path = self.out / name
            rows = self._kept_rows(path) if self.resume_step is not None else []
            try:
                atomic_write_csv(path, [[r.get(k, "") for k in fields] for r in rows], fields)
                f = open_append(path)
            except OSError as err:
                raise OutputError(f"cannot write the log {path}: {err.strerror or err}") from None
            self.files[name] = (f, csv.DictWriter(f, fieldnames=fields))
        return self.files[name][1]  # type: ignore[return-value]

    def _kept_rows(self, path: Path) -> list[dict]:
        """The rows of an existing log up to the resumed step (none when there is no log, or a link
        stands where it should be)."""
        if path.is_symlink() or not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        try:
            return [r for r in rows if int(r["step"]) <= self.resume_step]  # type: ignore[operator]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{path} is not a log this project wrote (no step column, or a step that is not a number): "
                "move it away to resume"
            ) from None

    def row(self, name: str, values: dict) -> None:
        writer = self._writer(name, list(values))
        try:
            writer.writerow(values)
            self.files[name][0].flush()  # type: ignore[attr-defined]
        except OSError as err:
            raise OutputError(f"cannot write the log {self.out / name}: {err.strerror or err}") from None
        prefix = name.removesuffix(".csv")
        scalars = {f"{prefix}/{k}": v for k, v in values.items() if isinstance(v, float)}
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, values["step"])
        if self.wandb is not None:
            self.wandb.log(scalars, step=values["step"])

    def grid(self, step: int, grid: np.ndarray) -> None:
        atomic_save_image(self.out / "samples" / f"step_{step:07d}.png", Image.fromarray(grid))
        if self.tb is not None:
            self.tb.add_image("samples", grid, step, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({"samples": wandb.Image(grid, caption="holes | output | composite | truth")}, step=step)

    def close(self) -> None:
        """Close every file and logger; calling it again does nothing."""
        for f, _ in self.files.values():
            f.close()  # type: ignore[attr-defined]
        self.files.clear()
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _start_wandb(project: str, out: Path, config: dict | None, run_id: str | None, group: str | None):
    """A W&B run; offline unless an API key (or ``WANDB_MODE``) says otherwise."""
    import os

    require("wandb", "--wandb", "wandb")
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    return wandb.init(
        project=project,
        dir=str(out),
        name=out.name,
        id=run_id or None,
        resume="allow",
        group=group,
        config=config,
        mode=mode,
    )


def sample_grid(image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> np.ndarray:
    """Rows of input with holes (white) | output | composite | ground truth, as uint8 RGB."""
    comp = composite(pred, image, mask)
    holes = image * mask + (1 - mask)
    rows = [torch.cat(list(cols), dim=-1) for cols in zip(holes, pred.clamp(0, 1), comp.clamp(0, 1), image)]
    grid = torch.cat(rows, dim=-2)  # (C, rows*H, 4*W)
    if grid.shape[0] == 1:
        grid = grid.expand(3, -1, -1)
    return (grid.permute(1, 2, 0).float().cpu().numpy() * 255 + 0.5).astype(np.uint8)
