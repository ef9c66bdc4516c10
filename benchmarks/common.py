"""Shared helpers for the benchmarks: interleaved timing and saved-activation memory."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2, min_seconds: float = 0.0
) -> dict[str, float]:
    """Best-of-repeats seconds per call (robust to a noisy machine), calls interleaved so drift hits all alike.

    ``min_seconds``: each sample runs a function as many times as it takes (measured in the warm-up)
    to last at least this long, and counts the mean per call: a call of a few milliseconds is
    otherwise at the mercy of the timer and of one interruption.
    """
    calls = dict.fromkeys(fns, 1)
    for _ in range(warmup):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            once = time.perf_counter() - start
            calls[name] = max(calls[name], math.ceil(min_seconds / max(once, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return {name: min(s) for name, s in samples.items()}


def saved_bytes(
    fn: Callable[[], torch.Tensor], inputs: Iterable[torch.Tensor] = (), params: Iterable[torch.Tensor] = ()
) -> int:
    """Bytes of the distinct tensors alive for backward: the inputs, what autograd saves, the output.

    This is the activation memory a training step holds (parameters excluded); unlike
    process peak memory on CPU it is exact and repeatable.
    """
    skip = {p.untyped_storage().data_ptr() for p in params}
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in inputs}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    storage = out.untyped_storage()
    storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())
