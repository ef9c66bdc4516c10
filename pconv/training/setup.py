"""Setting up a run: its data, model, loaders and output folder, each checked with one clear
error before any step runs."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pconv.data import EpochSampler, InpaintingDataset, MaskSource, collate, find_images
from pconv.errors import CheckpointError, ConfigError, InputError, require
from pconv.files import atomic_write_bytes, check_writable, remove_stale_temporaries
from pconv.io import load_model
from pconv.masks import parse_ratio
from pconv.models import ARCHITECTURES
from pconv.training.checkpoint import TrainState, load_checkpoint
from pconv.training.config import TrainConfig
from pconv.training.distributed import World
from pconv.training.logs import RunLogs
from pconv.training.schedule import Stage, global_step
from pconv.training.surgery import grow_weights, start_at_fill, train_gate_only
from pconv.vgg import VGG16Features

__all__ = [
    "RUN_FILES",
    "WEIGHT_FILES",
    "TrainData",
    "build_model",
    "claim_out",
    "find_data",
    "make_loaders",
    "open_logs",
    "training_hole_depth",
    "vgg_for",
    "worker_init",
    "write_config",
]

# Files a run writes in --out: a fresh run refuses a folder that holds weights of another run, and
# takes over one whose run stopped before it saved any (only its configuration and logs are there).
WEIGHT_FILES = ("last.pt", "best.pt", "model.safetensors")
RUN_FILES = (*WEIGHT_FILES, "config.json", "log.csv", "val.csv")


@dataclass(frozen=True)
class TrainData:
    """The image files of a run and where its holes come from."""

    train_files: list[Path]
    val_files: list[Path]
    masks: MaskSource


def find_data(cfg: TrainConfig) -> TrainData:
    """The run's images and mask source: a missing or empty folder stops the run before anything
    else starts."""
    d = cfg.data
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
    if cfg.schedule.stage == "finetune" and cfg.schedule.init is None and not cfg.run.resume:
        raise ConfigError(
            "--stage finetune starts from trained weights: give --init FILE (a release file or checkpoint)"
        )
    return TrainData(train_files, val_files, masks)


def prepare_out(cfg: TrainConfig, world: World) -> Path:
    """The run folder, checked writable and claimed for a fresh run (see :func:`claim_out`)."""
    out = Path(cfg.run.out)
    if world.main:  # a killed run's half-written checkpoints and logs
        for folder in (out, out / "samples"):
            remove_stale_temporaries(folder)
    if not cfg.run.resume and world.main:
        try:
            check_writable(out)
        except OSError as err:
            raise ConfigError(str(err)) from None
        claim_out(out, cfg.run.overwrite)
    return out


def build_model(cfg: TrainConfig, device: torch.device, ckpt: dict | None) -> nn.Module:
    """The run's model: from the checkpoint when resuming, else from ``--init`` or at random."""
    model_cfg = cfg.model_config()
    model = ARCHITECTURES[cfg.model.arch].build(model_cfg)
    if ckpt is not None:
        _migrated(cfg.model.arch, ckpt.get("model_config") or {}, f"{cfg.run.out}/last.pt")
        model.load_state_dict(ckpt["model"])
    elif cfg.schedule.init is not None:
        weights, init_config = _initial_weights(cfg.schedule.init)
        if getattr(model_cfg, "base_fill", "none") != "none":
            weights = grow_weights(model, weights)  # a gate or gate head the file lacks starts at zero
        try:
            model.load_state_dict(weights)
        except RuntimeError as err:
            raise CheckpointError(_init_mismatch(cfg.schedule.init, init_config, model_cfg.to_dict(), err)) from None
        if getattr(model_cfg, "base_fill", "none") != "none" and init_config.get("base_fill", "none") == "none":
            start_at_fill(model)  # a direct model's weights, the gate at zero: the run starts at the fill
    if cfg.model.gate_only:
        train_gate_only(model)
    model.to(device)
    if cfg.run.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def write_config(cfg: TrainConfig, out: Path, plan: list[Stage], data: TrainData, world: World) -> None:
    """``config.json``: the flat configuration and what was resolved from it."""
    resolved = {
        **cfg.to_flat(),
        "model": cfg.model_config().to_dict(),
        "stages": [dataclasses.asdict(s) for s in plan],
        "world_size": world.world_size,
        "train_images": len(data.train_files),
        "val_images": len(data.val_files),
    }
    atomic_write_bytes(out / "config.json", json.dumps(resolved, indent=2) + "\n")


def make_loaders(
    cfg: TrainConfig, data: TrainData, state: TrainState, world: World, device: torch.device
) -> tuple[DataLoader, DataLoader | None]:
    """The training loader (continuing at ``state.batches``) and, on rank 0, the validation loader."""
    d, r = cfg.data, cfg.run
    dataset = InpaintingDataset(data.train_files, d.size, data.masks, seed=r.seed, crop_scale=d.crop_scale)
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
    if data.val_files and world.main:
        val_set = InpaintingDataset(data.val_files, d.size, train=False, seed=r.seed, val_masks=r.val_masks)
        val_loader = DataLoader(
            val_set,
            d.batch_size,
            num_workers=min(d.workers, len(data.val_files)),
            collate_fn=collate,
            worker_init_fn=worker_init,
        )
    return loader, val_loader


def worker_init(worker_id: int) -> None:
    """Loader workers: one thread each (the processes already run in parallel), and deaf to
    Ctrl-C and SIGTERM, which reach the whole process group: the main process decides when to
    stop (after saving), and a worker killed under it would abort the step under way."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def training_hole_depth(masks: MaskSource, count: int = 200, seed: int = 12345) -> float:
    """The 90th percentile, over ``count`` training masks, of each mask's deepest hole (largest
    distance from a hole pixel to a known one): what the model learns to fill at its own scale.
    Recorded in the release file; ``pconv.inpaint`` picks its working scale from it."""
    import cv2

    rng = np.random.default_rng(seed)
    depths = [cv2.distanceTransform((~masks.sample(rng)).astype(np.uint8), cv2.DIST_L2, 5).max() for _ in range(count)]
    return float(np.percentile(depths, 90))


def claim_out(out: Path, overwrite: bool) -> None:
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
    arch = (ckpt.get("config") or {}).get("arch", "pconv_unet")
    return ckpt["model"], _migrated(arch, ckpt.get("model_config") or {}, path)


def _migrated(arch: str, stored: dict, path: str) -> dict:
    """A checkpoint's stored model configuration as today's fields (see
    :meth:`pconv.models.Architecture.stored_config`).

    Raises:
        CheckpointError: an unknown architecture or a configuration this version does not build.
    """
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path} holds an unknown architecture {arch!r}")
    try:
        return ARCHITECTURES[arch].stored_config(stored).to_dict() if stored else {}
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from None


# Architecture options an --init file decides, unless a flag grows the model from it (a gate or a
# gate head added to a model without; dropout, weight-free).
INIT_OPTIONS = ("arch", "depth", "base_width", "conv", "base_fill", "gate_head", "dropout")


def init_architecture(path: str) -> dict[str, object]:
    """The ``train.py`` architecture options of an ``--init`` file (release file or checkpoint),
    read from its metadata or its saved configuration, without building the model.

    Raises:
        CheckpointError: the file is missing or is neither.
    """
    if not Path(path).is_file():
        raise CheckpointError(f"initial weights not found: {path}")
    if path.endswith(".safetensors"):
        from pconv.io import read_metadata

        try:
            metadata = read_metadata(path)
            config = json.loads(metadata.get("config", "{}"))
            arch = metadata.get("architecture")
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable release file: {err}") from None
    else:
        ckpt = load_checkpoint(path)
        config, arch = ckpt.get("model_config") or {}, (ckpt.get("config") or {}).get("arch", "pconv_unet")
    if not isinstance(config, dict) or arch not in ARCHITECTURES:
        raise CheckpointError(f"{path} does not say which architecture it holds")
    options: dict[str, object] = {"arch": arch}
    options.update({k: v for k, v in _migrated(arch, config, path).items() if k in INIT_OPTIONS})
    return options


def inherit_init_architecture(given: dict[str, object]) -> dict[str, object]:
    """``given`` (the options on the command line) with the architecture of its ``--init`` file (or
    trained model's name, replaced by its file) where no flag names it; a flag may grow the model
    (see :data:`INIT_OPTIONS`), not contradict it.

    Raises:
        ConfigError: a flag that contradicts the file (another depth, width or architecture, or one
            that would remove the file's fill, gate or head).
    """
    out = dict(given)
    if not Path(str(given["init"])).is_file():
        from pconv.registry import MODELS, weights_of

        if str(given["init"]) in MODELS:  # a trained model's name: its shipped file
            out["init"] = str(weights_of(str(given["init"])))
    saved = init_architecture(str(out["init"]))
    for key, value in saved.items():
        if key not in given:
            out[key] = value
            continue
        wanted = given[key]
        grows = key == "dropout" or (key == "base_fill" and value == "none") or (key == "gate_head" and not value)
        if wanted != value and not grows:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} {wanted} contradicts --init {given['init']}, a model with {key} {value}")
    return out


def _init_mismatch(path: str, saved: dict, wanted: dict, err: RuntimeError) -> str:
    """Why ``--init`` weights do not load: the architecture options that differ, as flags to pass."""
    options = ("depth", "base_width", "dropout", "base_fill", "gate_head")
    differ = [k for k in options if saved.get(k) and saved[k] != wanted.get(k)]
    if differ:
        flags = " ".join(f"--{k.replace('_', '-')}" + ("" if saved[k] is True else f" {saved[k]}") for k in differ)
        return f"--init {path} is a model with {flags.replace('--', '')}; pass {flags} to start from it"
    return f"--init {path} does not fit this architecture: {str(err).strip().splitlines()[0]}"


def vgg_for(cfg: TrainConfig, device: torch.device, world: World) -> VGG16Features | None:
    """The VGG16 feature extractor of the perceptual and style terms (``None`` when both weigh 0)."""
    if not cfg.loss.weights.needs_vgg:
        return None
    name = cfg.loss.vgg_weights
    if name == "auto":
        from pconv.vgg import imagenet_cached

        name = "imagenet" if imagenet_cached() else "hed"
        if name == "hed" and world.main:
            print(
                "note: --vgg-weights auto: the ImageNet VGG16 is not downloaded, so the perceptual and style "
                "terms use the HED VGG16 this package ships (--vgg-weights imagenet downloads the other)",
                file=sys.stderr,
            )
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


def open_logs(cfg: TrainConfig, out: Path, plan: list[Stage], state: TrainState, resumed: bool) -> RunLogs:
    """The run's CSV logs (and TensorBoard, W&B), continuing at the saved step when resumed."""
    r = cfg.run
    return RunLogs(
        out,
        global_step(plan, state) if resumed else None,
        wandb=r.wandb,
        wandb_config=cfg.to_flat(),
        run_id=state.run_id,
        wandb_group=r.wandb_group,
    )
