"""The training run, top to bottom: :func:`train` sets up, :func:`train_stage` runs one stage's
steps, :func:`validate` scores the validation set.

Stage 1 (``pretrain``) trains with BatchNorm everywhere; stage 2 (``finetune``) freezes the
encoder's BatchNorm and lowers the learning rate, as in Liu et al. 2018, section 4.1.

Stopping: Ctrl-C (SIGINT) or SIGTERM lets the step under way finish, saves ``last.pt`` and ends
the run with :class:`KeyboardInterrupt`, so ``--resume`` continues exactly; a second Ctrl-C
stops at once without saving (``last.pt`` is then the previous checkpoint, still intact).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import signal
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from pconv.data import EpochSampler, InpaintingDataset, MaskSource, UnreadableData, collate, find_images
from pconv.devices import resolve_device
from pconv.errors import CheckpointError, ConfigError, InputError, require
from pconv.files import atomic_write_bytes, check_writable
from pconv.io import load_model, save_model
from pconv.losses import InpaintingLoss, composite, hole_valid_losses
from pconv.masks import parse_ratio
from pconv.metrics import score
from pconv.models import ARCHITECTURES
from pconv.training.checkpoint import TrainState, load_checkpoint, restore_rng, save_checkpoint
from pconv.training.config import TrainConfig
from pconv.training.distributed import World, init_distributed
from pconv.training.logs import RunLogs, sample_grid
from pconv.vgg import VGG16Features

__all__ = ["Stage", "lr_at", "train", "train_stage", "training_hole_depth", "validate"]

# Files a run writes in --out: a fresh run refuses a folder that holds weights of another run, and
# takes over one whose run stopped before it saved any (only its configuration and logs are there).
WEIGHT_FILES = ("last.pt", "best.pt", "model.safetensors")
RUN_FILES = (*WEIGHT_FILES, "config.json", "log.csv", "val.csv")


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    lr: float


def plan_stages(cfg: TrainConfig, batches_per_epoch: int) -> list[Stage]:
    """The stages to run and their lengths in steps."""
    s = cfg.schedule

    def length(steps: int | None, epochs: float | None, default: int, what: str) -> int:
        if steps is not None and epochs is not None:
            raise ConfigError(f"give the {what} length in steps or in epochs, not both")
        n = math.ceil(epochs * batches_per_epoch) if epochs is not None else steps if steps is not None else default
        if n < 1:
            raise ConfigError(f"the {what} stage needs at least one step")
        return n

    plan = []
    if s.stage in ("pretrain", "both"):
        plan.append(Stage("pretrain", length(s.steps, s.epochs, 10_000, "pretrain"), s.lr))
    if s.stage in ("finetune", "both"):
        plan.append(Stage("finetune", length(s.finetune_steps, s.finetune_epochs, 5_000, "finetune"), s.finetune_lr))
    return plan


def lr_at(
    base: float,
    step: int,
    total: int,
    milestones: tuple[float, ...] | list[float],
    gamma: float,
    schedule: str = "step",
) -> float:
    """The learning rate at ``step`` of a stage of ``total`` steps.

    ``"step"``: ``base * gamma**k`` after the k-th milestone (fractions of ``total`` if all <= 1).
    ``"linear"``: from ``base`` down to zero at the end of the stage (then milestones also apply).
    Both follow from the step and the stage length alone, so a resumed run continues the schedule.
    """
    points = [m * total if all(v <= 1 for v in milestones) else m for m in milestones]
    decay = max(0.0, 1.0 - step / total) if schedule == "linear" else 1.0
    return base * decay * gamma ** sum(step >= p for p in points)


def training_hole_depth(masks: MaskSource, count: int = 200, seed: int = 12345) -> float:
    """The 90th percentile, over ``count`` training masks, of each mask's deepest hole (largest
    distance from a hole pixel to a known one): what the model learns to fill at its own scale.
    Recorded in the release file; ``pconv.inpaint`` picks its working scale from it."""
    import cv2

    rng = np.random.default_rng(seed)
    depths = [cv2.distanceTransform((~masks.sample(rng)).astype(np.uint8), cv2.DIST_L2, 5).max() for _ in range(count)]
    return float(np.percentile(depths, 90))


# ----------------------------------------------------------------------------- one step


def forward_loss(
    model: nn.Module,
    loss_fn: InpaintingLoss,
    image: torch.Tensor,
    mask: torch.Tensor,
    amp_dtype: torch.dtype | None,
    deep_weight: float | None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one batch. With ``deep_weight`` (deep supervision), the coarser outputs
    add ``deep_weight`` times the mean of their weighted valid + hole L1 terms as ``"deep"``."""
    with torch.autocast(image.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        outputs = model(image, mask, deep=True) if deep_weight is not None else [model(image, mask)]
        terms = loss_fn(outputs[0].float(), image, mask)
        if len(outputs) > 1:
            w = loss_fn.weights
            aux = [hole_valid_losses(o.float(), image, mask) for o in outputs[1:]]
            terms["deep"] = torch.stack([w.hole * h + w.valid * v for h, v in aux]).mean()
            terms["total"] = terms["total"] + deep_weight * terms["deep"]
        return terms


def train_step(
    model: nn.Module,
    loss_fn: InpaintingLoss,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    image: torch.Tensor,
    mask: torch.Tensor,
    amp_dtype: torch.dtype | None,
    deep_weight: float | None = None,
) -> dict[str, float]:
    """One optimisation step; returns every loss term as a float."""
    terms = forward_loss(model, loss_fn, image, mask, amp_dtype, deep_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["total"]).backward()
    scaler.step(optimizer)
    scaler.update()
    return {k: float(v.detach()) for k, v in terms.items()}


@torch.no_grad()
def eval_forward(
    model: nn.Module, image: torch.Tensor, mask: torch.Tensor, amp_dtype: torch.dtype | None
) -> torch.Tensor:
    """The prediction in eval mode (float32), leaving the model in the mode it was in."""
    was_training = model.training
    model.eval()
    with torch.autocast(image.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        pred = model(image, mask).float()
    model.train(was_training)
    return pred


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Mean L1 (%), PSNR, SSIM and hole PSNR of the composited results over the validation set."""
    totals: dict[str, float] = {}
    count = 0
    for batch in loader:
        image, mask = _to_device(batch, device, channels_last)
        pred = eval_forward(model, image, mask, amp_dtype)
        comp = composite(pred.clamp(0, 1), image, mask).permute(0, 2, 3, 1).cpu().numpy()
        truth = image.permute(0, 2, 3, 1).cpu().numpy()
        known = mask[:, 0].bool().cpu().numpy()
        for c, t, k in zip(comp, truth, known):
            for name, value in score(c, t, k).items():
                totals[name] = totals.get(name, 0.0) + value
            count += 1
    return {name: value / count for name, value in totals.items()}


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    image = batch["image"].to(device, non_blocking=True)
    mask = batch["mask"].to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return image, mask


def worker_init(worker_id: int) -> None:
    """Loader workers: one thread each (the processes already run in parallel), and deaf to
    Ctrl-C and SIGTERM, which reach the whole process group: the main process decides when to
    stop (after saving), and a worker killed under it would abort the step under way."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ----------------------------------------------------------------------------- stopping


class StopRequest:
    """Ctrl-C / SIGTERM set a flag that the loop reads between steps; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals only reach the main thread; a plain KeyboardInterrupt still works
            return

        def handler(signum: int, frame: object) -> None:
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = True
            tqdm.write("stopping after this step (Ctrl-C again to stop at once, without saving)", file=sys.stderr)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


# ----------------------------------------------------------------------------- the run


@dataclass
class _Run:
    """What :func:`train_stage` needs besides the stage: built once by :func:`train`."""

    cfg: TrainConfig
    world: World
    device: torch.device
    amp_dtype: torch.dtype | None
    model: nn.Module
    wrapped: nn.Module
    loss_fn: InpaintingLoss
    batches: Iterator[dict]
    val_loader: DataLoader | None
    fixed: dict | None
    plan: list[Stage]
    state: TrainState
    logs: RunLogs | None
    out: Path
    stop: StopRequest
    start_time: float
    seen_skipped: set[str]
    on_validate: Callable[[int, dict[str, float]], None] | None = None

    def global_step(self) -> int:
        return _global_step(self.plan, self.state)

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
        )


def train(cfg: TrainConfig, on_validate: Callable[[int, dict[str, float]], None] | None = None) -> dict:
    """Run (or resume) training as ``cfg`` says; returns a summary dict (rank 0's view).

    ``on_validate(step, metrics)`` is called after every validation (rank 0); an exception it
    raises ends the run there (a hyperparameter sweep prunes a poor trial this way).
    """
    world = init_distributed(cfg.run.device)
    try:
        return _train(cfg, world, on_validate)
    finally:
        if world.world_size > 1:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, world: World, on_validate: Callable[[int, dict[str, float]], None] | None) -> dict:
    d, r = cfg.data, cfg.run
    out = Path(r.out)
    device = resolve_device(r.device)
    if device.type == "cuda" and world.world_size > 1:
        device = torch.device("cuda", world.local_rank)
    amp_dtype = amp_dtype_for(r.amp, device, warn=world.main)

    # Data first: a missing or empty folder stops the run before anything else starts.
    try:
        train_files = find_images(d.train, "training image")
        val_files = find_images(d.val, "validation image") if d.val else []
        masks = MaskSource(
            d.size, d.mask_kind, parse_ratio(d.mask_ratio) if d.mask_ratio else None, d.masks, d.invert_masks
        )
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err)) from None
    if val_files:
        require("train", "validation (--val)", "skimage")
    if cfg.schedule.early_stop is not None and not val_files:
        raise ConfigError("--early-stop needs a validation folder (--val)")
    if cfg.schedule.stage == "finetune" and cfg.schedule.init is None and not r.resume:
        raise ConfigError(
            "--stage finetune starts from trained weights: give --init FILE (a release file or checkpoint)"
        )
    if not r.resume and world.main:
        try:
            check_writable(out)
        except OSError as err:
            raise ConfigError(str(err)) from None
        _claim_out(out, r.overwrite)
    batches_per_epoch = max(1, len(train_files) // world.world_size // d.batch_size)
    plan = plan_stages(cfg, batches_per_epoch)

    ckpt = load_checkpoint(out / "last.pt") if r.resume else None
    torch.manual_seed(r.seed + world.rank)
    model_cfg = cfg.model_config()
    model = ARCHITECTURES[cfg.model.arch].build(model_cfg)
    if cfg.schedule.init is not None and ckpt is None:
        weights, init_config = _initial_weights(cfg.schedule.init)
        try:
            model.load_state_dict(weights)
        except RuntimeError as err:
            raise CheckpointError(_init_mismatch(cfg.schedule.init, init_config, model_cfg.to_dict(), err)) from None
        if getattr(model_cfg, "base_fill", "none") != "none" and init_config.get("base_fill", "none") == "none":
            model.start_at_fill()  # a direct model's weights, corrections from zero: the run starts at the fill
    model.to(device)
    if r.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = InpaintingLoss(_vgg(cfg, device, world), cfg.loss.weights)

    state = TrainState(run_id=uuid.uuid4().hex)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        state = ckpt["state"]
    if world.main:
        resolved = {
            **cfg.to_flat(),
            "model": model_cfg.to_dict(),
            "stages": [dataclasses.asdict(s) for s in plan],
            "world_size": world.world_size,
            "train_images": len(train_files),
            "val_images": len(val_files),
        }
        atomic_write_bytes(out / "config.json", json.dumps(resolved, indent=2) + "\n")
    logs = (
        RunLogs(
            out,
            _global_step(plan, state) if ckpt is not None else None,
            wandb=r.wandb,
            wandb_config=cfg.to_flat(),
            run_id=state.run_id,
            wandb_group=r.wandb_group,
        )
        if world.main
        else None
    )

    dataset = InpaintingDataset(train_files, d.size, masks, seed=r.seed, crop_scale=d.crop_scale)
    sampler = EpochSampler(
        len(dataset), r.seed, start=state.batches * d.batch_size, rank=world.rank, world_size=world.world_size
    )
    loader = DataLoader(
        dataset,
        d.batch_size,
        sampler=sampler,
        num_workers=d.workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init,
        prefetch_factor=4 if d.workers else None,
        persistent_workers=d.workers > 0,
    )
    val_loader = None
    if val_files and world.main:
        val_set = InpaintingDataset(val_files, d.size, train=False, seed=r.seed, val_masks=r.val_masks)
        val_loader = DataLoader(
            val_set,
            d.batch_size,
            num_workers=min(d.workers, len(val_files)),
            collate_fn=collate,
            worker_init_fn=worker_init,
        )
    fixed = next(iter(val_loader)) if val_loader is not None else None

    wrapped: nn.Module = model
    if world.world_size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if r.compile:
        wrapped = torch.compile(wrapped)

    batches = iter(loader)
    if ckpt is not None:  # after everything above has drawn its random numbers, as in the first run
        if world.main:
            restore_rng(ckpt, device)
        else:
            torch.manual_seed(r.seed + world.rank + 7919 * state.batches)
    run = _Run(
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
        StopRequest(),
        time.perf_counter() - state.seconds,
        set(state.skipped),
        on_validate,
    )
    try:
        with run.stop.installed():
            try:
                while state.stage_index < len(plan):
                    train_stage(
                        run,
                        plan[state.stage_index],
                        ckpt if ckpt is not None and ckpt["state"].stage_index == state.stage_index else None,
                    )
                    ckpt = None
            except _Stopped:
                raise
            except KeyboardInterrupt:
                if world.main:
                    print(
                        f"\ninterrupted at once: not saved; {out / 'last.pt'} holds the last checkpoint "
                        f"(continue with --resume --out {out})",
                        file=sys.stderr,
                    )
                raise

        summary = {
            "steps": state.batches,
            "seconds": time.perf_counter() - run.start_time,
            "skipped": len(run.seen_skipped),
            "best_psnr": state.best if val_files else None,
        }
        if world.main:
            summary.update(_release(run, model_cfg, masks))
    finally:  # also when stopped, interrupted, pruned by a sweep or failed: no log file left open
        if logs is not None:
            logs.close()
    if world.world_size > 1:
        dist.barrier()
    return summary


def train_stage(run: _Run, stage: Stage, ckpt: dict | None) -> None:
    """Run one stage from ``run.state`` to its end (or an early stop, or a stop request)."""
    cfg, state, world, model = run.cfg, run.state, run.world, run.model
    if state.stage_step == 0:
        state.best, state.bad_evals = -math.inf, 0  # each stage picks its own best; the release comes from the last
    model.freeze_encoder_bn(stage.name == "finetune")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=stage.lr, weight_decay=cfg.schedule.weight_decay)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp_dtype == torch.float16)
    if ckpt is not None and ckpt["optimizer"] is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
    if state.stage_step > stage.steps and world.main:
        tqdm.write(
            f"{stage.name}: resumed at step {state.stage_step}, past its new length of "
            f"{stage.steps}; the stage ends here",
            file=sys.stderr,
        )
    deep_weight = cfg.model.deep_weight if ARCHITECTURES[cfg.model.arch].deep_supervision else None
    bar = tqdm(
        total=stage.steps,
        initial=min(state.stage_step, stage.steps),
        desc=stage.name,
        unit="step",
        disable=not world.main,
        dynamic_ncols=True,
    )
    tick, tick_step = time.perf_counter(), state.stage_step
    try:
        while state.stage_step < stage.steps:
            s = cfg.schedule
            lr = lr_at(stage.lr, state.stage_step, stage.steps, s.lr_milestones, s.lr_gamma, s.lr_schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                batch = next(run.batches)
            except UnreadableData as err:  # from a loader worker, the message carries the worker's traceback
                shutdown = getattr(run.batches, "_shutdown_workers", None)
                if shutdown is not None:  # end the workers now, not at interpreter exit
                    shutdown()
                raise InputError(str(err).strip().splitlines()[-1].split("UnreadableData: ")[-1]) from None
            _report_skipped(run, batch["skipped"])
            image, mask = _to_device(batch, run.device, cfg.run.channels_last)
            terms = train_step(run.wrapped, run.loss_fn, optimizer, scaler, image, mask, run.amp_dtype, deep_weight)
            if not math.isfinite(terms["total"]):
                raise FloatingPointError(
                    f"the loss became {terms['total']} at step {state.stage_step} "
                    f"of {stage.name}; lower --lr or check the data"
                )
            state.stage_step += 1
            state.batches += 1
            step = state.stage_step
            bar.update(1)
            if world.main and (step % cfg.run.log_every == 0 or step == stage.steps):
                now = time.perf_counter()
                speed = (step - tick_step) * cfg.data.batch_size * world.world_size / max(now - tick, 1e-9)
                tick, tick_step = now, step
                bar.set_postfix(loss=f"{terms['total']:.4f}", img_s=f"{speed:.1f}")
                run.logs.row(
                    "log.csv",
                    {"step": run.global_step(), "stage": stage.name, "lr": lr, **terms, "images_per_s": speed},
                )
            if world.main and cfg.run.sample_every and step % cfg.run.sample_every == 0:
                _write_samples(run, batch)
            if cfg.data.val and (step % cfg.run.val_every == 0 or step == stage.steps):
                improved, stop = _validate_and_track(run, stage)
                if improved:
                    state.best_stage = state.stage_index
                    run.checkpoint("best.pt", optimizer, scaler)
                if stop:
                    if world.main:
                        tqdm.write(
                            f"early stop: no better validation PSNR in {cfg.schedule.early_stop} "
                            f"evaluations; ending {stage.name} at step {step}"
                        )
                    break
            if _stop_requested(run):
                run.checkpoint("last.pt", optimizer, scaler)
                if world.main:
                    tqdm.write(
                        f"stopped: saved {run.out / 'last.pt'} at step {run.global_step()}; continue with "
                        f"--resume --out {run.out}",
                        file=sys.stderr,
                    )
                raise _Stopped
            if step % cfg.run.checkpoint_every == 0 and step < stage.steps:
                run.checkpoint("last.pt", optimizer, scaler)
    finally:
        bar.close()
    state.stage_index += 1
    state.stage_step = 0
    run.checkpoint("last.pt", None, scaler)  # the stage boundary: a resume starts the next stage


class _Stopped(KeyboardInterrupt):
    """Raised after a requested stop has been saved."""


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
    image, mask = _to_device(
        {k: v[:4] for k, v in source.items() if k != "skipped"}, run.device, run.cfg.run.channels_last
    )
    run.logs.grid(run.global_step(), sample_grid(image, mask, eval_forward(run.model, image, mask, run.amp_dtype)))


def _validate_and_track(run: _Run, stage: Stage) -> tuple[bool, bool]:
    """Validate on rank 0, share the verdict with every rank: ``(improved, stop early)``."""
    verdict = [False, False]
    state = run.state
    if run.world.main and run.val_loader is not None:
        metrics = validate(run.model, run.val_loader, run.device, run.amp_dtype, run.cfg.run.channels_last)
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


def _release(run: _Run, model_cfg: object, masks: MaskSource) -> dict:
    """Write ``model.safetensors``: this run's ``best.pt`` when it was written in the last stage,
    else the final weights."""
    best_path = run.out / "best.pt"
    release = ARCHITECTURES[run.cfg.model.arch].build(model_cfg)
    source = "last"
    if run.state.best_stage == len(run.plan) - 1 and best_path.is_file():
        best = load_checkpoint(best_path)
        if best["state"].run_id == run.state.run_id:
            release.load_state_dict(best["model"])
            source = "best"
    if source == "last":
        release.load_state_dict(run.model.state_dict())
    cfg = run.cfg
    extra = {
        "training": json.dumps(
            {
                "stages": [dataclasses.asdict(s) for s in run.plan],
                "batch_size": cfg.data.batch_size,
                "size": cfg.data.size,
                "hole_depth": round(training_hole_depth(masks), 1),
                "mask_kind": cfg.data.mask_kind,
                "mask_ratio": cfg.data.mask_ratio,
                "crop_scale": list(cfg.data.crop_scale),
                "world_size": run.world.world_size,
                "weights": source,
                "seconds": round(time.perf_counter() - run.start_time, 1),
            }
        )
    }
    sha = save_model(release, run.out / "model.safetensors", extra=extra)
    return {"sha256": sha, "release": str(run.out / "model.safetensors"), "weights": source}


def _global_step(plan: list[Stage], state: TrainState) -> int:
    return sum(s.steps for s in plan[: state.stage_index]) + state.stage_step


def _claim_out(out: Path, overwrite: bool) -> None:
    """A fresh run needs an --out without another run's files, or --overwrite (which removes them)."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found:
        return
    if not any(name in WEIGHT_FILES for name in found):
        print(f"note: {out} holds a run that stopped before it saved any weights; starting over there", file=sys.stderr)
    elif not overwrite:
        raise ConfigError(
            f"{out} holds another run ({', '.join(found)}); continue it with --resume, "
            "start over with --overwrite, or choose another --out"
        )
    for name in found:
        (out / name).unlink()
    for folder in ("samples", "tensorboard", "wandb"):
        shutil.rmtree(out / folder, ignore_errors=True)


def amp_dtype_for(amp: str, device: torch.device, warn: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``--amp``: CUDA bf16 (else fp16); on a CPU bf16 only where it is
    native (AVX512-BF16 or AMX), since elsewhere bf16 convolutions are many times slower."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if not cpu_has_native_bf16():
        if warn:
            print(
                "warning: --amp on: this CPU has no native bfloat16 (no AVX512-BF16 or AMX), where bf16 "
                "autocast is many times slower than float32; training in float32",
                file=sys.stderr,
            )
        return None
    return torch.bfloat16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def _initial_weights(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Model weights and their model configuration from a release file or a training checkpoint
    (for ``--init``)."""
    if path.endswith(".safetensors"):
        try:
            model = load_model(path)
        except (FileNotFoundError, ValueError) as err:
            raise CheckpointError(str(err)) from None
        return model.state_dict(), model.config.to_dict()
    if not Path(path).is_file():
        raise CheckpointError(f"initial weights not found: {path}")
    ckpt = load_checkpoint(path)
    return ckpt["model"], ckpt.get("model_config") or {}


def _init_mismatch(path: str, saved: dict, wanted: dict, err: RuntimeError) -> str:
    """Why ``--init`` weights do not load: the architecture options that differ, as flags to pass."""
    differ = [k for k in ("depth", "base_width", "dropout") if k in saved and saved[k] != wanted.get(k)]
    if differ:
        flags = " ".join(f"--{k.replace('_', '-')} {saved[k]}" for k in differ)
        return f"--init {path} is a model with {flags.replace('--', '')}; pass {flags} to start from it"
    return f"--init {path} does not fit this architecture: {str(err).strip().splitlines()[0]}"


def _vgg(cfg: TrainConfig, device: torch.device, world: World) -> VGG16Features | None:
    """The VGG16 feature extractor of the perceptual and style terms (``None`` when both weigh 0)."""
    if not cfg.loss.weights.needs_vgg:
        return None
    name = cfg.loss.vgg_weights
    try:
        if name == "none" and world.main:
            print(
                "warning: --vgg-weights none: the perceptual and style terms compare random VGG16 features",
                file=sys.stderr,
            )
        with warnings.catch_warnings():  # random features were asked for, and warned about above
            warnings.simplefilter("ignore")
            return VGG16Features(None if name == "none" else name).to(device)
    except (RuntimeError, FileNotFoundError, KeyError, ValueError) as err:
        raise ConfigError(str(err).strip("'\"")) from None
