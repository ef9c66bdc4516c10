"""Hyperparameter sweeps over ``train.py`` with Optuna (``pconv-sweep``, ``python -m pconv.sweep``).

A search-space file (YAML or JSON) names what to search, what stays fixed and what to optimise:

    objective: hole_psnr          # any column of val.csv (psnr, ssim, l1, hole_psnr, edge)
    direction: maximize           # or minimize (default: the metric's own: minimize l1 and edge)
    trials: 30                    # finished trials to reach (complete or pruned)
    fixed:                        # train.py options, as in config.json (flag names with _)
      train: data/train
      val: data/val
      size: 256
      steps: 2000
      finetune_steps: 500
      val_every: 250
    params:
      lr: {low: 1.0e-5, high: 1.0e-3, log: true}
      dropout: {low: 0.0, high: 0.3}
      base_width: {choices: [16, 32, 64]}
      depth: {low: 3, high: 6, step: 1}

Sampling is TPE (Bayesian optimisation, seeded); poor trials are pruned from their
intermediate validation scores (median rule). The study lives in ``SWEEP_DIR/study.db``
(SQLite) unless ``--storage`` gives another database URL: a killed sweep resumes where it
stopped (trials that died are retried), and several processes, on one machine or, with a
PostgreSQL/MySQL URL, on many, share one study. Each trial is a normal run folder
``SWEEP_DIR/trial_NNNN``. Results: ``trials.csv`` (sorted, best first), ``best.txt`` (the best
configuration as a ready ``train.py`` command), ``importances.csv`` and ``history.png``,
``parallel.png``, ``importances.png``. With ``wandb: PROJECT`` among the fixed options every
trial also logs to Weights & Biases, grouped by the study's name.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pconv.cli import prog_name, run_main
from pconv.errors import ConfigError, PconvError, require
from pconv.files import atomic_save_image, atomic_write_bytes, atomic_write_csv
from pconv.metrics import METRICS

__all__ = ["SearchSpace", "load_space", "main", "run_sweep", "write_results"]


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file."""

    objective: str
    direction: str
    trials: int
    fixed: dict[str, Any]
    params: dict[str, dict[str, Any]]


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a YAML or JSON search-space file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search-space file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as err:  # yaml and json report syntax errors with their own types
        raise ConfigError(f"cannot parse {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise ConfigError(f"{path} needs a 'params' mapping with at least one parameter to search")
    objective = str(raw.get("objective", "hole_psnr"))
    if not isinstance(METRICS.get(objective, True), bool):
        raise ConfigError(f"{objective} is best at {METRICS[objective]}, not at either end: it cannot be an objective")
    direction = str(raw.get("direction", "maximize" if METRICS.get(objective, True) else "minimize"))
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction must be maximize or minimize, got {direction!r}")
    from pconv.training.config import TrainConfig

    known = set(TrainConfig().to_flat())
    fixed = dict(raw.get("fixed") or {})
    for name in [*fixed, *raw["params"]]:
        if name not in known:
            raise ConfigError(f"{name!r} is not a train.py option (see train.py --help; use _ for -)")
    for name, spec in raw["params"].items():
        if not isinstance(spec, dict) or not ("choices" in spec or ("low" in spec and "high" in spec)):
            raise ConfigError(f"parameter {name!r} needs 'choices' or 'low' and 'high'")
        _check_param(name, spec)
    trials = raw.get("trials", 20)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be a whole number of at least 1, got {trials!r}")
    if "train" not in fixed:
        raise ConfigError("the fixed options need 'train' (and 'val', which the objective is read from)")
    if "val" not in fixed:
        raise ConfigError("the objective comes from val.csv: give a 'val' folder in the fixed options")
    try:
        TrainConfig.from_flat(fixed)  # types checked now, not in the middle of a trial
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    return SearchSpace(objective, direction, trials, fixed, dict(raw["params"]))


def _check_param(name: str, spec: dict[str, Any]) -> None:
    """A parameter's range or choices can be sampled: finite numbers, low <= high, a positive step,
    a positive low for a log scale, at least one choice."""
    if "choices" in spec:
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(f"parameter {name!r}: choices must be a non-empty list, got {spec['choices']!r}")
        return
    low, high, step = spec["low"], spec["high"], spec.get("step", 1)
    numbers = (low, high, step)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in numbers):
        raise ConfigError(
            f"parameter {name!r}: low, high and step must be finite numbers, got {low!r}, {high!r}, {step!r}"
        )
    if low > high:
        raise ConfigError(f"parameter {name!r}: low {low} is above high {high}")
    if step <= 0:
        raise ConfigError(f"parameter {name!r}: step must be positive, got {step}")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"parameter {name!r}: a log scale needs a positive low, got {low}")


def _suggest(trial: Any, name: str, spec: dict[str, Any]) -> Any:
    if "choices" in spec:
        return trial.suggest_categorical(name, list(spec["choices"]))
    low, high = spec["low"], spec["high"]
    if isinstance(low, int) and isinstance(high, int):
        return trial.suggest_int(name, low, high, step=int(spec.get("step", 1)), log=bool(spec.get("log", False)))
    return trial.suggest_float(name, float(low), float(high), log=bool(spec.get("log", False)))


def _study(space: SearchSpace, out: Path, storage: str | None, name: str, seed: int, heartbeat: int) -> Any:
    import optuna
    from optuna import storages

    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    with warnings.catch_warnings():  # heartbeats are marked experimental; they are what resumes killed trials
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
            retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
        else:
            retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=2)}
        db = storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat, **retry)
    return optuna.create_study(
        study_name=name,
        storage=db,
        direction=space.direction,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )


def run_sweep(
    space: SearchSpace,
    out: Path,
    *,
    storage: str | None = None,
    name: str = "pconv",
    seed: int = 0,
    heartbeat: int = 60,
    quiet: bool = False,
) -> Any:
    """Run trials until the study holds ``space.trials`` finished (complete or pruned) ones."""
    import optuna
    from optuna.trial import TrialState

    from pconv.training import train
    from pconv.training.config import TrainConfig, check

    study = _study(space, out, storage, name, seed, heartbeat)
    if quiet:
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        params = {k: _suggest(trial, k, spec) for k, spec in space.params.items()}
        run_dir = out / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        extra = {"wandb_group": name} if space.fixed.get("wandb") else {}
        cfg = TrainConfig.from_flat({**space.fixed, **params, **extra, "out": str(run_dir), "overwrite": True})
        check(cfg)

        def report(step: int, metrics: dict[str, float]) -> None:
            value = metrics[space.objective]
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{space.objective} {value:.4f} at step {step}")

        train(cfg, on_validate=report)
        return _final_value(run_dir / "val.csv", space.objective)

    # A trial that fails (a diverged loss, a value the configuration refuses, a killed process) is
    # recorded as failed with its reason and the sweep goes on; it ends after `trials` finished
    # trials, or after as many failed ones, so a broken space cannot loop forever.
    def done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        states = [t.state for t in study.trials]
        finished = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
        if finished >= space.trials or states.count(TrialState.FAIL) >= space.trials:
            study.stop()

    study.optimize(objective, callbacks=[done], catch=(FloatingPointError, ValueError, PconvError))
    return study


def _final_value(path: Path, column: str) -> float:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or column not in rows[-1]:
        raise ConfigError(f"{path} has no {column!r} column (columns: {', '.join(rows[-1]) if rows else 'none'})")
    return float(rows[-1][column])


def write_results(study: Any, space: SearchSpace, out: Path) -> dict[str, Any]:
    """``trials.csv``, ``best.txt``, ``importances.csv`` and the plots; returns the best trial's params."""
    from optuna.trial import TrialState

    trials = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    names = list(space.params)
    sign = -1 if space.direction == "maximize" else 1

    def key(t: Any) -> tuple[int, float]:
        value = (
            t.value
            if t.value is not None
            else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else math.nan)
        )
        return (0 if t.state == TrialState.COMPLETE else 1, sign * value if value == value else math.inf)

    rows = []
    for t in sorted(trials, key=key):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
        value = t.value if t.value is not None else ""
        params = [t.params.get(n, "") for n in names]
        rows.append([t.number, t.state.name.lower(), value, *params, seconds, t.user_attrs.get("run_dir", "")])
    atomic_write_csv(out / "trials.csv", rows, ["trial", "state", space.objective, *names, "seconds", "run_dir"])
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return {}
    best = study.best_trial
    flags = {**space.fixed, **best.params}
    command = ["python", "train.py"]
    for k, v in flags.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            command += [flag] if v else []
        elif isinstance(v, (list, tuple)):
            command += [flag, *map(str, v)]
        elif v is not None:
            command += [flag, str(v)]
    atomic_write_bytes(
        out / "best.txt",
        f"# best trial {best.number}: {space.objective} {best.value:.4f}\n{shlex.join(command)} --out runs/best\n",
    )
    _plots(study, out, len(complete))
    return dict(best.params)


def _plots(study: Any, out: Path, complete: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as vis

    plots = {"history.png": vis.plot_optimization_history, "parallel.png": vis.plot_parallel_coordinate}
    if complete >= 2:
        importances = optuna.importance.get_param_importances(study)
        atomic_write_csv(out / "importances.csv", [list(kv) for kv in importances.items()], ["param", "importance"])
        plots["importances.png"] = vis.plot_param_importances
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = plot(study)
        except (ValueError, RuntimeError):  # e.g. one parameter: no parallel coordinates to draw
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        atomic_save_image(out / name, fig, dpi=100, bbox_inches="tight")
        plt.close(fig)


def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(
        prog=prog_name("python -m pconv.sweep"),
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("space", type=Path, help="search-space file (.yaml, .yml or .json)")
    p.add_argument("--out", type=Path, required=True, help="sweep folder (trials, study.db, results)")
    p.add_argument("--storage", help="database URL shared by several workers (default: sqlite in --out)")
    p.add_argument("--name", default="pconv", help="study name within the storage (default pconv)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        help="seconds between a running trial's heartbeats; a trial silent for twice that is retried",
    )
    args = p.parse_args(argv)
    require("sweep", "sweeps", "optuna", "yaml", "skimage", "matplotlib")
    space = load_space(args.space)
    study = run_sweep(space, args.out, storage=args.storage, name=args.name, seed=args.seed, heartbeat=args.heartbeat)
    best = write_results(study, space, args.out)
    if not best:
        print(f"no trial completed: all {len(study.trials)} failed (see {args.out / 'trials.csv'})", file=sys.stderr)
        return 1
    print(
        f"{len(study.trials)} trials in {args.out / 'trials.csv'}; best {space.objective} "
        f"{study.best_value:.4f} with {best}; command in {args.out / 'best.txt'}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``pconv-sweep``, ``python -m pconv.sweep``)."""
    return run_main(_main, argv, "python -m pconv.sweep")


if __name__ == "__main__":
    sys.exit(main())
