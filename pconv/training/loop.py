"""The training run, top to bottom: :func:`train` sets up (:mod:`~pconv.training.setup`) and runs
the stages, :func:`train_stage` runs one stage's steps (:mod:`~pconv.training.steps`).

Stage 1 (``pretrain``) trains with BatchNorm everywhere; stage 2 (``finetune``) freezes the
encoder's BatchNorm and lowers the learning rate, as in Liu et al. 2018, section 4.1.

Stopping: Ctrl-C (SIGINT) or SIGTERM lets the step under way finish, saves ``last.pt`` and ends
the run with :class:`KeyboardInterrupt`, so ``--resume`` continues exactly; a second Ctrl-C
stops at once without saving (``last.pt`` is then the previous checkpoint, still intact).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pconv.devices import resolve_device
from pconv.losses import InpaintingLoss
from pconv.models import ARCHITECTURES
from pconv.training.checkpoint import TrainState, load_checkpoint, restore_rng, save_checkpoint
from pconv.training.config import TrainConfig
from pconv.training.distributed import World, init_distributed
from pconv.training.ema import WeightAverage
from pconv.training.logs import RunLogs
from pconv.training.release import TrainSummary, finished_summary, write_release
from pconv.training.schedule import Stage, global_step, plan_stages
from pconv.training.setup import (
    TrainData,
    build_model,
    find_data,
    make_loaders,
    open_logs,
    prepare_out,
    vgg_for,
    write_config,
)
from pconv.training.stage import train_stage
from pconv.training.steps import amp_dtype_for
from pconv.training.stopping import Stopped, StopRequest

__all__ = ["TrainSummary", "train", "train_stage"]


# ----------------------------------------------------------------------------- the run


@dataclass
class _Run:
    """What :func:`train_stage` needs besides the stage: built once by :func:`train`."""

    cfg: TrainConfig
    world: World
    device: torch.device
    amp_dtype: torch.dtype | None
    model: nn.Module
    wrapped: nn.Module  # the model as trained: DistributedDataParallel and/or compiled
    loss_fn: InpaintingLoss
    batches: Iterator[dict]
    val_loader: DataLoader | None
    fixed: dict | None  # a validation batch, shown in every sample grid
    plan: list[Stage]
    state: TrainState
    logs: RunLogs | None
    out: Path
    stop: StopRequest = dataclasses.field(default_factory=lambda: StopRequest())
    start_time: float = 0.0
    seen_skipped: set[str] = dataclasses.field(default_factory=set)
    on_validate: Callable[[int, dict[str, float]], None] | None = None
    average: WeightAverage | None = None  # --ema

    def scored_model(self) -> nn.Module:
        """The weights validation, samples and the release use: the moving average with ``--ema``."""
        return self.model if self.average is None else self.average.model()

    def global_step(self) -> int:
        return global_step(self.plan, self.state)

    def checkpoint(self, name: str, optimizer: torch.optim.Optimizer | None, scaler: torch.amp.GradScaler) -> None:
        if not self.world.main:
            return
        self.state.seconds = time.perf_counter() - self.start_time
        self.state.skipped = sorted(self.seen_skipped)
        save_checkpoint(
            self.out / name,
            model=self.model,
            optimizer=optimizer,
            scaler=scaler,
            state=self.state,
            config=self.cfg.to_flat(),
            model_config=self.model.config.to_dict(),
            device=self.device,
            ema=self.average.state if self.average is not None else None,
        )


def train(cfg: TrainConfig, on_validate: Callable[[int, dict[str, float]], None] | None = None) -> TrainSummary:
    """Run (or resume) training as ``cfg`` says.

    ``on_validate(step, metrics)`` is called after every validation (rank 0); an exception it
    raises ends the run there (a hyperparameter sweep prunes a poor trial this way).
    """
    world = init_distributed(cfg.run.device)
    try:
        return _train(cfg, world, on_validate)
    finally:
        if world.world_size > 1:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, world: World, on_validate: Callable[[int, dict[str, float]], None] | None) -> TrainSummary:
    device = resolve_device(cfg.run.device)
    if device.type == "cuda" and world.world_size > 1:
        device = torch.device("cuda", world.local_rank)
    data = find_data(cfg)
    out = prepare_out(cfg, world)
    plan = plan_stages(cfg, max(1, len(data.train_files) // world.world_size // cfg.data.batch_size))
    ckpt = load_checkpoint(out / "last.pt") if cfg.run.resume else None
    if ckpt is not None and ckpt["state"].stage_index >= len(plan) and (out / "model.safetensors").is_file():
        return finished_summary(ckpt["state"], out, bool(data.val_files))  # nothing to train: every file stays as it is
    torch.manual_seed(cfg.run.seed + world.rank)
    model = build_model(cfg, device, ckpt)
    loss_fn = InpaintingLoss(vgg_for(cfg, device, world), cfg.loss.weights)
    state = ckpt["state"] if ckpt is not None else TrainState(run_id=uuid.uuid4().hex)
    if world.main:
        write_config(cfg, out, plan, data, world)
    logs = open_logs(cfg, out, plan, state, resumed=ckpt is not None) if world.main else None
    try:
        run = _start(cfg, world, device, model, loss_fn, data, plan, state, logs, out, ckpt)
        run.on_validate = on_validate
        if cfg.schedule.ema > 0:
            twin = ARCHITECTURES[cfg.model.arch].build(cfg.model_config()).to(device)
            run.average = WeightAverage(model, cfg.schedule.ema, twin, ckpt.get("ema") if ckpt is not None else None)
        _run_stages(run, ckpt)
        summary = TrainSummary(
            steps=state.batches,
            seconds=time.perf_counter() - run.start_time,
            skipped=len(run.seen_skipped),
            best_psnr=state.best if data.val_files else None,
        )
        if world.main:
            seconds = time.perf_counter() - run.start_time
            path, sha, source = write_release(cfg, run.scored_model(), plan, state, world, out, data.masks, seconds)
            summary = dataclasses.replace(summary, release=path, sha256=sha, weights=source)
    finally:  # also when stopped, interrupted, pruned by a sweep or failed: no log file left open
        if logs is not None:
            logs.close()
    if world.world_size > 1:
        dist.barrier()
    return summary


def _start(
    cfg: TrainConfig,
    world: World,
    device: torch.device,
    model: nn.Module,
    loss_fn: InpaintingLoss,
    data: TrainData,
    plan: list[Stage],
    state: TrainState,
    logs: RunLogs | None,
    out: Path,
    ckpt: dict | None,
) -> _Run:
    """The loaders, the wrapped model and the random state: everything a stage needs."""
    loader, val_loader = make_loaders(cfg, data, state, world, device)
    fixed = next(iter(val_loader)) if val_loader is not None else None
    wrapped: nn.Module = model
    if world.world_size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.run.compile:
        wrapped = torch.compile(wrapped)
    batches = iter(loader)
    if ckpt is not None:  # after everything above has drawn its random numbers, as in the first run
        if world.main:
            restore_rng(ckpt, device)
        else:
            torch.manual_seed(cfg.run.seed + world.rank + 7919 * state.batches)
    amp_dtype = amp_dtype_for(cfg.run.amp, device, warn=world.main)
    return _Run(
        cfg,
        world,
        device,
        amp_dtype,
        model,
        wrapped,
        loss_fn,
        batches,
        val_loader,
        fixed,
        plan,
        state,
        logs,
        out,
        start_time=time.perf_counter() - state.seconds,
        seen_skipped=set(state.skipped),
    )


def _run_stages(run: _Run, ckpt: dict | None) -> None:
    """Every stage left in the plan; a requested stop is saved, a second Ctrl-C is not."""
    state = run.state
    with run.stop.installed():
        try:
            while state.stage_index < len(run.plan):
                resumed = ckpt if ckpt is not None and ckpt["state"].stage_index == state.stage_index else None
                train_stage(run, run.plan[state.stage_index], resumed)
                ckpt = None
        except Stopped:
            raise
        except KeyboardInterrupt:
            if run.world.main:
                print(
                    f"\ninterrupted at once: not saved; {run.out / 'last.pt'} holds the last checkpoint "
                    f"(continue with --resume --out {run.out})",
                    file=sys.stderr,
                )
            raise
