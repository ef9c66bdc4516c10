"""Two-stage training of an inpainting network on folders of images (``python train.py``).

Stage 1 (``pretrain``) trains with BatchNorm everywhere; stage 2 (``finetune``) freezes the
encoder's BatchNorm and lowers the learning rate, as in Liu et al. 2018, section 4.1. The loop
reads top to bottom in :func:`train`; ``main(argv)`` is the command line.

Outputs in ``--out RUN_DIR``: ``config.json``, ``last.pt`` / ``best.pt`` checkpoints (atomic;
``--resume RUN_DIR`` continues exactly), ``model.safetensors`` (the release file),
``log.csv``, ``val.csv``, ``samples/step_*.png`` and TensorBoard scalars when tensorboard is
installed. Multi-GPU or multi-machine: launch the same command with ``torchrun``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from pconv.cli import UsageError, resolve_device, run_main
from pconv.data import EpochSampler, InpaintingDataset, MaskSource, collate, find_images
from pconv.io import ARCHITECTURES, load_model, save_model
from pconv.losses import InpaintingLoss, LossWeights, composite, hole_valid_losses
from pconv.masks import DEFAULT_MIX, KINDS, MIXES, parse_kind, parse_ratio
from pconv.metrics import score
from pconv.unet import PConvUNetConfig
from pconv.unet3plus import UNet3Plus, UNet3PlusConfig
from pconv.vgg import VGG16Features

__all__ = ["TrainConfig", "main", "train"]

CHECKPOINT_VERSION = 1
STAGES = ("pretrain", "finetune", "both")
# Options that may change when a run is resumed; any other must match the saved run.
RESUMABLE = {"steps", "epochs", "finetune_steps", "finetune_epochs", "workers", "device", "val_every",
             "log_every", "sample_every", "checkpoint_every", "early_stop", "compile", "resume"}


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` and in every checkpoint."""

    train: str = ""
    val: str | None = None
    out: str = "runs/pconv"
    size: int = 512
    batch_size: int = 6
    workers: int = min(4, os.cpu_count() or 1)
    masks: str | None = None
    invert_masks: bool = False
    mask_kind: str = DEFAULT_MIX
    mask_ratio: str | None = None
    crop_scale: tuple[float, float] = (0.25, 1.0)
    # model
    arch: str = "pconv_unet"
    depth: int | None = None
    base_width: int = 64
    dropout: float = 0.0
    conv: str = "partial"
    deep_weight: float = 0.25
    # schedule
    stage: str = "both"
    steps: int | None = None
    epochs: float | None = None
    finetune_steps: int | None = None
    finetune_epochs: float | None = None
    lr: float = 2e-4
    finetune_lr: float = 5e-5
    weight_decay: float = 0.0
    lr_milestones: list[float] = field(default_factory=list)
    lr_gamma: float = 0.1
    early_stop: int | None = None
    init: str | None = None
    # loss
    vgg_weights: str = "imagenet"
    loss_valid: float = LossWeights.valid
    loss_hole: float = LossWeights.hole
    loss_perceptual: float = LossWeights.perceptual
    loss_style: float = LossWeights.style
    loss_tv: float = LossWeights.tv
    # bookkeeping
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = False
    compile: bool = False
    val_every: int = 1000
    val_masks: int = 1
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500
    resume: bool = False

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(self.loss_valid, self.loss_hole, self.loss_perceptual, self.loss_style, self.loss_tv)

    def model_config(self) -> object:
        """The architecture's configuration dataclass for this run."""
        if self.arch == "unet3plus":
            return UNet3PlusConfig(depth=self.depth or 4, base_width=self.base_width, conv=self.conv,
                                   dropout=self.dropout)
        depth = self.depth if self.depth is not None else max(2, min(8, int(math.log2(self.size)) - 1))
        return PConvUNetConfig(depth=depth, base_width=self.base_width, dropout=self.dropout)


@dataclass
class _Stage:
    name: str
    steps: int
    lr: float


def _stages(cfg: TrainConfig, batches_per_epoch: int) -> list[_Stage]:
    def length(steps: int | None, epochs: float | None, default: int, what: str) -> int:
        if steps is not None and epochs is not None:
            raise UsageError(f"give the {what} length in steps or in epochs, not both")
        n = math.ceil(epochs * batches_per_epoch) if epochs is not None else steps if steps is not None else default
        if n < 1:
            raise UsageError(f"the {what} stage needs at least one step")
        return n

    plan = []
    if cfg.stage in ("pretrain", "both"):
        plan.append(_Stage("pretrain", length(cfg.steps, cfg.epochs, 10_000, "pretrain"), cfg.lr))
    if cfg.stage in ("finetune", "both"):
        plan.append(_Stage("finetune", length(cfg.finetune_steps, cfg.finetune_epochs, 5_000, "finetune"), cfg.finetune_lr))
    return plan


def lr_at(base: float, step: int, total: int, milestones: Sequence[float], gamma: float) -> float:
    """Step decay: ``base * gamma**k`` after the k-th milestone (fractions of ``total`` if all <= 1)."""
    points = [m * total if all(v <= 1 for v in milestones) else m for m in milestones]
    return base * gamma ** sum(step >= p for p in points)


# ----------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> _Dist:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    info = _Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = resolve_device(device_name).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


# ----------------------------------------------------------------------------- checkpoints


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint, loaded with ``weights_only=True``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise UsageError(f"cannot read checkpoint {path}: {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise UsageError(f"{path} is not a pconv training checkpoint")
    return ckpt


def _initial_weights(path: str) -> dict[str, torch.Tensor]:
    """Model weights from a release file or a training checkpoint (for ``--init``)."""
    if path.endswith(".safetensors"):
        try:
            return load_model(path).state_dict()
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None
    if not Path(path).is_file():
        raise UsageError(f"initial weights not found: {path}")
    return load_checkpoint(path)["model"]


# ----------------------------------------------------------------------------- logging


class _Logs:
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


# ----------------------------------------------------------------------------- steps


def _forward_loss(model: nn.Module, loss_fn: InpaintingLoss, image: torch.Tensor, mask: torch.Tensor,
                  amp_dtype: torch.dtype | None, deep_weight: float | None) -> dict[str, torch.Tensor]:
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


def _train_step(model: nn.Module, loss_fn: InpaintingLoss, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, image: torch.Tensor, mask: torch.Tensor,
                amp_dtype: torch.dtype | None, deep_weight: float | None = None) -> dict[str, float]:
    """One optimisation step; returns every loss term as a float."""
    terms = _forward_loss(model, loss_fn, image, mask, amp_dtype, deep_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["total"]).backward()
    scaler.step(optimizer)
    scaler.update()
    return {k: float(v.detach()) for k, v in terms.items()}


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None,
             channels_last: bool = False) -> dict[str, float]:
    """Mean L1 (%), PSNR, SSIM and hole PSNR of the composited results over the validation set."""
    totals: dict[str, float] = {}
    count = 0
    for batch in loader:
        image, mask = _to_device(batch, device, channels_last)
        pred = _eval_forward(model, image, mask, amp_dtype)
        comp = composite(pred.clamp(0, 1), image, mask).permute(0, 2, 3, 1).cpu().numpy()
        truth = image.permute(0, 2, 3, 1).cpu().numpy()
        known = mask[:, 0].bool().cpu().numpy()
        for c, t, k in zip(comp, truth, known):
            for name, value in score(c, t, k).items():
                totals[name] = totals.get(name, 0.0) + value
            count += 1
    return {name: value / count for name, value in totals.items()}


@torch.no_grad()
def _eval_forward(model: nn.Module, image: torch.Tensor, mask: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """The prediction in eval mode (float32), leaving the model in the mode it was in."""
    was_training = model.training
    model.eval()
    with torch.autocast(image.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        pred = model(image, mask).float()
    model.train(was_training)
    return pred


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    image = batch["image"].to(device, non_blocking=True)
    mask = batch["mask"].to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return image, mask


def _worker_init(worker_id: int) -> None:
    """Loader workers: one thread each (the processes already run in parallel)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- the run


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as ``cfg`` says; returns a summary dict (rank 0's view)."""
    world = _init_distributed(cfg.device)
    try:
        return _train(cfg, world)
    finally:
        if world.world_size > 1:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, world: _Dist) -> dict:
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world.world_size > 1:
        device = torch.device("cuda", world.local_rank)
    amp_dtype = _amp_dtype(cfg.amp, device)

    # Data first: a missing or empty folder stops the run before anything else starts.
    try:
        train_files = find_images(cfg.train, "training image")
        val_files = find_images(cfg.val, "validation image") if cfg.val else []
        masks = MaskSource(cfg.size, cfg.mask_kind, parse_ratio(cfg.mask_ratio) if cfg.mask_ratio else None,
                           cfg.masks, cfg.invert_masks)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    if cfg.early_stop is not None and not val_files:
        raise UsageError("--early-stop needs a validation folder (--val)")
    if cfg.stage == "finetune" and cfg.init is None and not cfg.resume:
        raise UsageError("--stage finetune starts from trained weights: give --init FILE (a release file or checkpoint)")
    batches_per_epoch = max(1, len(train_files) // world.world_size // cfg.batch_size)
    plan = _stages(cfg, batches_per_epoch)

    ckpt = load_checkpoint(out / "last.pt") if cfg.resume else None
    torch.manual_seed(cfg.seed + world.rank)
    model_cfg = cfg.model_config()
    model_cls, _ = ARCHITECTURES[cfg.arch]
    model = model_cls(model_cfg)
    if cfg.init is not None and ckpt is None:
        try:
            model.load_state_dict(_initial_weights(cfg.init))
        except RuntimeError as err:
            raise UsageError(f"--init {cfg.init} does not fit this architecture: {str(err).splitlines()[0]}") from None
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    weights = cfg.loss_weights
    vgg = None
    if weights.needs_vgg:
        try:
            if cfg.vgg_weights == "none" and world.main:
                print("warning: --vgg-weights none: the perceptual and style terms compare random VGG16 features",
                      file=sys.stderr)
            with warnings.catch_warnings():  # random features were asked for, and warned about above
                warnings.simplefilter("ignore")
                vgg = VGG16Features(None if cfg.vgg_weights == "none" else cfg.vgg_weights).to(device)
        except (RuntimeError, FileNotFoundError, KeyError) as err:
            raise UsageError(str(err).strip("'\"")) from None
    loss_fn = InpaintingLoss(vgg, weights)

    state = {"stage_index": 0, "stage_step": 0, "batches": 0, "best": -math.inf, "bad_evals": 0,
             "seconds": 0.0, "skipped": []}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        state.update(ckpt["state"])

    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        resolved = {**_config_dict(cfg), "model": model_cfg.to_dict(),
                    "stages": [dataclasses.asdict(s) for s in plan], "world_size": world.world_size,
                    "train_images": len(train_files), "val_images": len(val_files)}
        (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    logs = _Logs(out, _global_step(plan, state) if ckpt is not None else None) if world.main else None

    dataset = InpaintingDataset(train_files, cfg.size, masks, seed=cfg.seed, crop_scale=cfg.crop_scale)
    sampler = EpochSampler(len(dataset), cfg.seed, start=state["batches"] * cfg.batch_size,
                           rank=world.rank, world_size=world.world_size)
    loader = DataLoader(dataset, cfg.batch_size, sampler=sampler, num_workers=cfg.workers, collate_fn=collate,
                        pin_memory=device.type == "cuda", worker_init_fn=_worker_init,
                        prefetch_factor=4 if cfg.workers else None, persistent_workers=cfg.workers > 0)
    val_loader = None
    if val_files and world.main:
        val_set = InpaintingDataset(val_files, cfg.size, train=False, seed=cfg.seed, val_masks=cfg.val_masks)
        val_loader = DataLoader(val_set, cfg.batch_size, num_workers=min(cfg.workers, len(val_files)),
                                collate_fn=collate, worker_init_fn=_worker_init)
    fixed = next(iter(val_loader)) if val_loader is not None else None

    wrapped: nn.Module = model
    if world.world_size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        wrapped = torch.compile(wrapped)

    batches = iter(loader)
    if ckpt is not None:  # after everything above has drawn its random numbers, as in the first run
        if world.main:
            torch.set_rng_state(ckpt["torch_rng"])
            if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        else:
            torch.manual_seed(cfg.seed + world.rank + 7919 * state["batches"])
    rng_snapshot = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
    seen_skipped = set(state["skipped"])
    start_time = time.perf_counter() - state["seconds"]
    optimizer: torch.optim.Optimizer | None = None

    def checkpoint(name: str) -> None:
        if not world.main:
            return
        assert optimizer is not None
        state["seconds"] = time.perf_counter() - start_time
        state["skipped"] = sorted(seen_skipped)
        _atomic_save({
            "version": CHECKPOINT_VERSION, "config": _config_dict(cfg), "model_config": model_cfg.to_dict(),
            "model": model.state_dict(),
            # at a stage boundary the next stage starts a fresh optimiser
            "optimizer": optimizer.state_dict() if state["stage_step"] else None,
            "scaler": scaler.state_dict(), "state": dict(state),
            "torch_rng": rng_snapshot[0], "cuda_rng": rng_snapshot[1],
        }, out / name)

    bar: tqdm | None = None
    try:
        while state["stage_index"] < len(plan):
            stage = plan[state["stage_index"]]
            model.freeze_encoder_bn(stage.name == "finetune")
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.Adam(params, lr=stage.lr, weight_decay=cfg.weight_decay)
            scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
            if ckpt is not None and ckpt["optimizer"] is not None and ckpt["state"]["stage_index"] == state["stage_index"]:
                optimizer.load_state_dict(ckpt["optimizer"])
                scaler.load_state_dict(ckpt["scaler"])
                ckpt = None
            if state["stage_step"] > stage.steps and world.main:
                tqdm.write(f"{stage.name}: resumed at step {state['stage_step']}, past its new length of "
                           f"{stage.steps}; the stage ends here", file=sys.stderr)
            bar = tqdm(total=stage.steps, initial=min(state["stage_step"], stage.steps), desc=stage.name, unit="step",
                       disable=not world.main, dynamic_ncols=True)
            tick, tick_step = time.perf_counter(), state["stage_step"]
            while state["stage_step"] < stage.steps:
                lr = lr_at(stage.lr, state["stage_step"], stage.steps, cfg.lr_milestones, cfg.lr_gamma)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = next(batches)
                rng_snapshot = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
                for report in batch["skipped"]:
                    if report not in seen_skipped:
                        seen_skipped.add(report)
                        if world.main:
                            tqdm.write(f"warning: skipped unreadable image {report}", file=sys.stderr)
                image, mask = _to_device(batch, device, cfg.channels_last)
                terms = _train_step(wrapped, loss_fn, optimizer, scaler, image, mask, amp_dtype,
                                    cfg.deep_weight if isinstance(model, UNet3Plus) else None)
                if not math.isfinite(terms["total"]):
                    raise FloatingPointError(f"the loss became {terms['total']} at step {state['stage_step']} "
                                             f"of {stage.name}; lower --lr or check the data")
                state["stage_step"] += 1
                state["batches"] += 1
                step = state["stage_step"]
                bar.update(1)
                if world.main and (step % cfg.log_every == 0 or step == stage.steps):
                    now = time.perf_counter()
                    speed = (step - tick_step) * cfg.batch_size * world.world_size / max(now - tick, 1e-9)
                    tick, tick_step = now, step
                    bar.set_postfix(loss=f"{terms['total']:.4f}", img_s=f"{speed:.1f}")
                    logs.row("log.csv", {"step": _global_step(plan, state), "stage": stage.name, "lr": lr,
                                         **terms, "images_per_s": speed})
                if world.main and cfg.sample_every and step % cfg.sample_every == 0:
                    _write_samples(model, fixed if fixed is not None else batch, device, amp_dtype, cfg, logs,
                                   _global_step(plan, state))
                if cfg.val and (step % cfg.val_every == 0 or step == stage.steps):
                    improved, stop = _validate_and_track(model, val_loader, device, amp_dtype, cfg, state,
                                                         logs, plan, world, stage)
                    if improved:
                        checkpoint("best.pt")
                    if stop:
                        if world.main:
                            tqdm.write(f"early stop: no better validation PSNR in {cfg.early_stop} "
                                       f"evaluations; ending {stage.name} at step {step}")
                        break
                if step % cfg.checkpoint_every == 0 and step < stage.steps:
                    checkpoint("last.pt")
            bar.close()
            state["stage_index"] += 1
            state["stage_step"] = 0
            state["bad_evals"] = 0
            checkpoint("last.pt")  # the stage boundary: a resume starts the next stage
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if optimizer is not None:
            checkpoint("last.pt")
        if world.main:
            print(f"\ninterrupted: saved {out / 'last.pt'}; continue with --resume --out {out}", file=sys.stderr)
        raise

    summary = {"steps": state["batches"], "seconds": time.perf_counter() - start_time,
               "skipped": len(seen_skipped), "best_psnr": state["best"] if val_files else None}
    if world.main:
        release = model_cls(model_cfg)
        best = out / "best.pt"
        release.load_state_dict(load_checkpoint(best)["model"] if best.exists() else model.state_dict())
        extra = {"training": json.dumps({"stages": [dataclasses.asdict(s) for s in plan], "batch_size": cfg.batch_size,
                                         "size": cfg.size, "hole_depth": round(training_hole_depth(masks), 1),
                                         "crop_scale": list(cfg.crop_scale), "world_size": world.world_size,
                                         "weights": "best" if best.exists() else "last",
                                         "seconds": round(summary["seconds"], 1)})}
        summary["sha256"] = save_model(release, out / "model.safetensors", extra=extra)
        summary["release"] = str(out / "model.safetensors")
        logs.close()
    if world.world_size > 1:
        dist.barrier()
    return summary


def training_hole_depth(masks: MaskSource, count: int = 200, seed: int = 12345) -> float:
    """The 90th percentile, over ``count`` training masks, of each mask's deepest hole (largest
    distance from a hole pixel to a known one): what the model learns to fill at its own scale.
    Recorded in the release file; ``pconv.inpaint`` picks its working scale from it."""
    import cv2

    rng = np.random.default_rng(seed)
    depths = [cv2.distanceTransform((~masks.sample(rng)).astype(np.uint8), cv2.DIST_L2, 5).max() for _ in range(count)]
    return float(np.percentile(depths, 90))


def _global_step(plan: list[_Stage], state: dict) -> int:
    return sum(s.steps for s in plan[: state["stage_index"]]) + state["stage_step"]


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def _config_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["crop_scale"] = list(cfg.crop_scale)
    return d


def _write_samples(model: nn.Module, batch: dict, device: torch.device, amp_dtype: torch.dtype | None,
                   cfg: TrainConfig, logs: _Logs, step: int) -> None:
    image, mask = _to_device({k: v[:4] for k, v in batch.items() if k != "skipped"}, device, cfg.channels_last)
    logs.grid(step, sample_grid(image, mask, _eval_forward(model, image, mask, amp_dtype)))


def _validate_and_track(model: nn.Module, val_loader: DataLoader | None, device: torch.device,
                        amp_dtype: torch.dtype | None, cfg: TrainConfig, state: dict, logs: _Logs | None,
                        plan: list[_Stage], world: _Dist, stage: _Stage) -> tuple[bool, bool]:
    """Validate on rank 0, share the verdict with every rank: ``(improved, stop early)``."""
    verdict = [False, False]
    if world.main and val_loader is not None:
        metrics = validate(model, val_loader, device, amp_dtype, cfg.channels_last)
        step = _global_step(plan, state)
        logs.row("val.csv", {"step": step, "stage": stage.name, **metrics})
        tqdm.write(f"{stage.name} step {state['stage_step']}: val PSNR {metrics['psnr']:.2f} dB, "
                   f"SSIM {metrics['ssim']:.4f}, L1 {metrics['l1']:.2f}%")
        if metrics["psnr"] > state["best"]:
            state["best"], state["bad_evals"] = metrics["psnr"], 0
            verdict[0] = True
        else:
            state["bad_evals"] += 1
        verdict[1] = cfg.early_stop is not None and state["bad_evals"] >= cfg.early_stop
    if world.world_size > 1:
        dist.broadcast_object_list(verdict, src=0)
    return verdict[0], verdict[1]


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """Flags derived from :class:`TrainConfig`; defaults are suppressed so given flags are known."""
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0],
                                argument_default=argparse.SUPPRESS,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--train", metavar="DIR", help="training images, searched recursively")
    data.add_argument("--val", metavar="DIR", help="validation images (fixed masks, one per image)")
    data.add_argument("--out", metavar="RUN_DIR", help=f"output folder (default {d.out})")
    data.add_argument("--size", type=int, help=f"square crop side in pixels (default {d.size})")
    data.add_argument("--batch-size", type=int, help=f"images per step per process (default {d.batch_size})")
    data.add_argument("--workers", type=int, help=f"data loader processes (default {d.workers})")
    data.add_argument("--masks", metavar="DIR", help="hole masks from this folder (white = hole) instead of the generator")
    data.add_argument("--invert-masks", action="store_true", help="the mask files use white = known")
    data.add_argument("--mask-kind", metavar="KIND|MIX",
                      help=f"generated hole shapes: one of {', '.join(KINDS)}; a mixture ({', '.join(MIXES)}: "
                           f"{', '.join(f'{k}={v:g}' for k, v in MIXES[DEFAULT_MIX].items())}); or your own, "
                           f"e.g. strokes=1,solid=2 (default {d.mask_kind})")
    data.add_argument("--mask-ratio", metavar="LO-HI", help="hole-ratio range of generated masks, e.g. 0.1-0.5")
    data.add_argument("--crop-scale", type=float, nargs=2, metavar=("MIN", "MAX"),
                      help=f"area fraction range of random crops (default {d.crop_scale})")
    model = p.add_argument_group("model")
    model.add_argument("--arch", choices=sorted(ARCHITECTURES), help=f"architecture (default {d.arch})")
    model.add_argument("--depth", type=int, help="encoder levels (default: pconv_unet 8 at 512 px, 7 at 256 px, ...; unet3plus 4)")
    model.add_argument("--base-width", type=int, help=f"channels of the first level (default {d.base_width})")
    model.add_argument("--dropout", type=float, help="dropout probability (for Monte Carlo uncertainty)")
    model.add_argument("--conv", choices=("partial", "plain"),
                       help="unet3plus: partial convolutions, or plain ones with the mask as an input channel (default partial)")
    model.add_argument("--deep-weight", type=float,
                       help=f"unet3plus: weight of the deep-supervision outputs' L1 terms (default {d.deep_weight})")
    sched = p.add_argument_group("schedule")
    sched.add_argument("--stage", choices=STAGES, help=f"which stages to run (default {d.stage})")
    sched.add_argument("--stages", dest="stage", choices=STAGES, help="same as --stage")
    sched.add_argument("--steps", type=int, help="stage 1 length in steps (default 10000)")
    sched.add_argument("--epochs", type=float, help="stage 1 length in epochs (instead of --steps)")
    sched.add_argument("--finetune-steps", type=int, help="stage 2 length in steps (default 5000)")
    sched.add_argument("--finetune-epochs", type=float, help="stage 2 length in epochs")
    sched.add_argument("--lr", type=float, help=f"stage 1 learning rate (default {d.lr})")
    sched.add_argument("--finetune-lr", type=float, help=f"stage 2 learning rate (default {d.finetune_lr})")
    sched.add_argument("--weight-decay", type=float, help="L2 weight decay (default 0)")
    sched.add_argument("--lr-milestones", type=float, nargs="+", metavar="M",
                       help="multiply the learning rate by --lr-gamma at these steps (or fractions of the stage, e.g. 0.9 0.95)")
    sched.add_argument("--lr-gamma", type=float, help=f"step decay factor (default {d.lr_gamma})")
    sched.add_argument("--early-stop", type=int, metavar="PATIENCE",
                       help="end a stage after this many validations without a better PSNR")
    sched.add_argument("--init", metavar="FILE", help="start from these weights (release file or checkpoint)")
    loss = p.add_argument_group("loss")
    loss.add_argument("--vgg-weights", metavar="imagenet|hed|PATH|none",
                      help="VGG16 for the perceptual/style terms: imagenet (torchvision's, downloaded once), hed "
                           "(real VGG16 features shipped in weights/, from the HED edge detector), a file, or "
                           "none = random frozen features (default imagenet)")
    for term in ("valid", "hole", "perceptual", "style", "tv"):
        loss.add_argument(f"--loss-{term}", type=float, help=f"weight of the {term} term (default {getattr(d, 'loss_' + term)})")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, help="random seed (default 0)")
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    run.add_argument("--amp", choices=("auto", "on", "off"), help="mixed precision (default auto: on with CUDA)")
    run.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    run.add_argument("--compile", action="store_true", help="torch.compile the model")
    run.add_argument("--val-every", type=int, help=f"validate every N steps (default {d.val_every})")
    run.add_argument("--val-masks", type=int, metavar="N",
                     help="masks per validation image, cycling the six hole-ratio bins; more gives a steadier "
                          f"best.pt on a small validation folder (default {d.val_masks})")
    run.add_argument("--log-every", type=int, help=f"log every N steps (default {d.log_every})")
    run.add_argument("--sample-every", type=int, help=f"write a sample grid every N steps, 0 = never (default {d.sample_every})")
    run.add_argument("--checkpoint-every", type=int, help=f"save last.pt every N steps (default {d.checkpoint_every})")
    run.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    return p


def config_from_args(argv: Sequence[str] | None) -> TrainConfig:
    """Parse the command line; with ``--resume`` the saved run's configuration is the base."""
    given = vars(build_parser().parse_args(argv))
    if given.get("resume"):
        out = Path(given.get("out", TrainConfig.out))
        saved = out / "config.json"
        if not (out / "last.pt").is_file() or not saved.is_file():
            raise UsageError(f"nothing to resume in {out} (no last.pt and config.json)")
        base = json.loads(saved.read_text())
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        base = {k: v for k, v in base.items() if k in known}
        changed = sorted(k for k, v in given.items() if k not in RESUMABLE | {"out"} and _norm(base.get(k)) != _norm(v))
        if changed:
            raise UsageError(f"--resume continues the saved run; these options differ from it: {', '.join(changed)}")
        base.update(given)
        base["crop_scale"] = tuple(base["crop_scale"])
        return TrainConfig(**base)
    if "train" not in given:
        raise UsageError("--train DIR is required")
    if "crop_scale" in given:
        given["crop_scale"] = tuple(given["crop_scale"])
    cfg = TrainConfig(**given)
    _check(cfg)
    return cfg


def _norm(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _check(cfg: TrainConfig) -> None:
    if cfg.size < 16 or cfg.batch_size < 1 or cfg.workers < 0:
        raise UsageError("--size must be at least 16, --batch-size at least 1 and --workers at least 0")
    if cfg.val_masks < 1:
        raise UsageError(f"--val-masks must be at least 1, got {cfg.val_masks}")
    if not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
        raise UsageError(f"--crop-scale must satisfy 0 < MIN <= MAX <= 1, got {cfg.crop_scale}")
    try:
        parse_kind(cfg.mask_kind)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if cfg.mask_ratio is not None:
        try:
            parse_ratio(cfg.mask_ratio)
        except ValueError as err:
            raise UsageError(str(err)) from None
    if cfg.masks is not None and cfg.mask_ratio is not None:
        raise UsageError("--mask-ratio applies to generated masks, not to --masks DIR")
    try:
        cfg.model_config()
    except ValueError as err:
        raise UsageError(str(err)) from None


def _main(argv: Sequence[str] | None) -> int:
    cfg = config_from_args(argv)
    try:
        summary = train(cfg)
    except KeyboardInterrupt:
        return 130
    if summary.get("release"):
        best = f", best validation PSNR {summary['best_psnr']:.2f} dB" if summary["best_psnr"] is not None else ""
        print(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s{best}; "
              f"{summary['skipped']} unreadable image(s) skipped")
        print(f"release file: {summary['release']} (sha256 {summary['sha256']})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python train.py``, ``pconv-train``)."""
    return run_main(_main, argv, "train.py")


if __name__ == "__main__":
    sys.exit(main())
