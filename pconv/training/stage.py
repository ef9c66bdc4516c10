"""One training stage as a short loop of named steps: the learning rate, a batch, an optimisation
step, the logs, then samples, validation, stop requests and checkpoints (:func:`train_stage`)."""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from tqdm import tqdm

from pconv.data import UnreadableData
from pconv.errors import InputError
from pconv.models import ARCHITECTURES
from pconv.training.logs import sample_grid
from pconv.training.schedule import Stage, lr_at
from pconv.training.steps import eval_forward, to_device, train_step, validate
from pconv.training.stopping import Stopped

if TYPE_CHECKING:
    from pconv.training.loop import _Run

__all__ = ["train_stage"]


def train_stage(run: _Run, stage: Stage, ckpt: dict | None) -> None:
    """Run one stage from ``run.state`` to its end (or an early stop, or a stop request)."""
    optimizer, scaler = _begin_stage(run, stage, ckpt)
    bar = tqdm(
        total=stage.steps,
        initial=min(run.state.stage_step, stage.steps),
        desc=stage.name,
        unit="step",
        disable=not run.world.main,
        dynamic_ncols=True,
    )
    speed = _Speed(run)
    try:
        while run.state.stage_step < stage.steps:
            lr = _set_lr(run, stage, optimizer)
            batch = _next_batch(run)
            terms = _step(run, stage, optimizer, scaler, batch)
            bar.update(1)
            _log_step(run, stage, bar, speed, lr, terms)
            if _after_step(run, stage, batch, optimizer, scaler):
                break
    finally:
        bar.close()
    run.state.stage_index += 1
    run.state.stage_step = 0
    run.checkpoint("last.pt", None, scaler)  # the stage boundary: a resume starts the next stage


def _begin_stage(run: _Run, stage: Stage, ckpt: dict | None) -> tuple[torch.optim.Optimizer, torch.amp.GradScaler]:
    """BatchNorm freezing for the stage, its optimizer and loss scaler (restored when resuming)."""
    cfg, state, model = run.cfg, run.state, run.model
    if state.stage_step == 0:
        state.best, state.bad_evals = -math.inf, 0  # each stage picks its own best; the release comes from the last
    # --gate-only keeps every BatchNorm statistic; otherwise the second stage freezes the encoder's
    model.freeze_bn("all" if cfg.model.gate_only else "encoder" if stage.name == "finetune" else None)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=stage.lr, weight_decay=cfg.schedule.weight_decay)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp_dtype == torch.float16)
    if ckpt is not None and ckpt["optimizer"] is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
    if state.stage_step > stage.steps and run.world.main:
        tqdm.write(
            f"{stage.name}: resumed at step {state.stage_step}, past its new length of "
            f"{stage.steps}; the stage ends here",
            file=sys.stderr,
        )
    return optimizer, scaler


def _set_lr(run: _Run, stage: Stage, optimizer: torch.optim.Optimizer) -> float:
    """The schedule's learning rate at this step, set on the optimizer."""
    s = run.cfg.schedule
    lr = lr_at(stage.lr, run.state.stage_step, stage.steps, s.lr_milestones, s.lr_gamma, s.lr_schedule)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _next_batch(run: _Run) -> dict:
    """The next batch; an unreadable data set is an :class:`InputError` with the loader's reason."""
    try:
        batch = next(run.batches)
    except UnreadableData as err:  # from a loader worker, the message carries the worker's traceback
        shutdown = getattr(run.batches, "_shutdown_workers", None)
        if shutdown is not None:  # end the workers now, not at interpreter exit
            shutdown()
        raise InputError(str(err).strip().splitlines()[-1].split("UnreadableData: ")[-1]) from None
    _report_skipped(run, batch["skipped"])
    return batch


def _step(
    run: _Run, stage: Stage, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, batch: dict
) -> dict[str, float]:
    """One optimisation step (and the weight average's update); the loss terms."""
    cfg, state = run.cfg, run.state
    deep_weight = cfg.model.deep_weight if ARCHITECTURES[cfg.model.arch].deep_supervision else None
    image, mask = to_device(batch, run.device, cfg.run.channels_last)
    terms = train_step(run.wrapped, run.loss_fn, optimizer, scaler, image, mask, run.amp_dtype, deep_weight)
    if run.average is not None:
        run.average.update(run.model, state.batches)
    if not math.isfinite(terms["total"]):
        raise FloatingPointError(
            f"the loss became {terms['total']} at step {state.stage_step} of {stage.name}; lower --lr or check the data"
        )
    state.stage_step += 1
    state.batches += 1
    return terms


class _Speed:
    """Images per second since the last logged step."""

    def __init__(self, run: _Run) -> None:
        self.run, self.time, self.step = run, time.perf_counter(), run.state.stage_step

    def __call__(self, step: int) -> float:
        now = time.perf_counter()
        images = (step - self.step) * self.run.cfg.data.batch_size * self.run.world.world_size
        speed = images / max(now - self.time, 1e-9)
        self.time, self.step = now, step
        return speed


def _log_step(run: _Run, stage: Stage, bar: tqdm, speed: _Speed, lr: float, terms: dict[str, float]) -> None:
    """Every ``--log-every`` steps (and at the stage's end): the progress bar and ``log.csv``."""
    step = run.state.stage_step
    if run.world.main and (step % run.cfg.run.log_every == 0 or step == stage.steps):
        rate = speed(step)
        bar.set_postfix(loss=f"{terms['total']:.4f}", img_s=f"{rate:.1f}")
        row = {"step": run.global_step(), "stage": stage.name, "lr": lr, **terms, "images_per_s": rate}
        run.logs.row("log.csv", row)


def _after_step(
    run: _Run, stage: Stage, batch: dict, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> bool:
    """Samples, validation (``best.pt``), a stop request, the periodic ``last.pt``; whether the
    stage ends early.

    Raises:
        Stopped: a stop was requested (``last.pt`` is saved first).
    """
    cfg, world, step = run.cfg, run.world, run.state.stage_step
    if world.main and cfg.run.sample_every and step % cfg.run.sample_every == 0:
        _write_samples(run, batch)
    if cfg.data.val and (step % cfg.run.val_every == 0 or step == stage.steps):
        improved, stop = _validate_and_track(run, stage)
        if improved:
            run.state.best_stage = run.state.stage_index
            run.checkpoint("best.pt", None, scaler)  # weights for the release: no optimizer state
        if stop:
            if world.main:
                tqdm.write(
                    f"early stop: no better validation PSNR in {cfg.schedule.early_stop} "
                    f"evaluations; ending {stage.name} at step {step}"
                )
            return True
    if _stop_requested(run):
        run.checkpoint("last.pt", optimizer, scaler)
        if world.main:
            tqdm.write(
                f"stopped: saved {run.out / 'last.pt'} at step {run.global_step()}; continue with "
                f"--resume --out {run.out}",
                file=sys.stderr,
            )
        raise Stopped
    if step % cfg.run.checkpoint_every == 0 and step < stage.steps:
        run.checkpoint("last.pt", optimizer, scaler)
    return False


def _stop_requested(run: _Run) -> bool:
    """Whether any process asked to stop; all ranks agree, so all stop after the same step."""
    flag = run.stop.requested
    if run.world.world_size > 1:
        t = torch.tensor([float(flag)], device=run.device if run.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        flag = bool(t.item())
    return flag


def _report_skipped(run: _Run, reports: list[str]) -> None:
    for report in reports:
        if report not in run.seen_skipped:
            run.seen_skipped.add(report)
            if run.world.main:
                tqdm.write(f"warning: skipped unreadable image {report}", file=sys.stderr)


def _write_samples(run: _Run, batch: dict) -> None:
    source = run.fixed if run.fixed is not None else batch
    image, mask = to_device(
        {k: v[:4] for k, v in source.items() if k != "skipped"}, run.device, run.cfg.run.channels_last
    )
    run.logs.grid(
        run.global_step(), sample_grid(image, mask, eval_forward(run.scored_model(), image, mask, run.amp_dtype))
    )


def _validate_and_track(run: _Run, stage: Stage) -> tuple[bool, bool]:
    """Validate on rank 0, share the verdict with every rank: ``(improved, stop early)``."""
    verdict = [False, False]
    state = run.state
    if run.world.main and run.val_loader is not None:
        scored = run.scored_model()
        metrics = validate(scored, run.val_loader, run.device, run.amp_dtype, run.cfg.run.channels_last)
        run.logs.row("val.csv", {"step": run.global_step(), "stage": stage.name, **metrics})
        tqdm.write(
            f"{stage.name} step {state.stage_step}: val PSNR {metrics['psnr']:.2f} dB, "
            f"SSIM {metrics['ssim']:.4f}, L1 {metrics['l1']:.2f}%"
        )
        if run.on_validate is not None:
            run.on_validate(run.global_step(), metrics)
        if metrics["psnr"] > state.best:
            state.best, state.bad_evals = metrics["psnr"], 0
            verdict[0] = True
        else:
            state.bad_evals += 1
        verdict[1] = run.cfg.schedule.early_stop is not None and state.bad_evals >= run.cfg.schedule.early_stop
    if run.world.world_size > 1:
        dist.broadcast_object_list(verdict, src=0)
    return verdict[0], verdict[1]
