"""Whether code runs eagerly or is being traced (``torch.compile``, an export, a JIT trace).

Some of the project's tensor code takes a faster data-dependent path when it runs eagerly (a
branch on a value, a crop to where the holes are); a trace must record the path that holds
for every input, so those functions ask :func:`tracing` first.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["tracing"]


def tracing() -> bool:
    """Whether the caller runs under ``torch.compile``, an export or a JIT trace (not eagerly).

    ``torch.onnx`` is asked only once something imported it (no export runs without it): importing
    it costs a short ``predict.py`` run about 20 ms.
    """
    onnx = sys.modules.get("torch.onnx")
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or (onnx is not None and onnx.is_in_onnx_export())
