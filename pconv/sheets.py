"""Pictures side by side with a label above each: the sheets that ``predict.py --compare`` and
``python -m pconv.evaluate`` write, so a user sees the methods before choosing one."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["MAX_SHEET_WIDTH", "example_grid", "example_row", "label_bar", "labelled_sheet"]

# Sheets wider than this are scaled down (a 24 MP photo shown five times would be unreadable anyway).
MAX_SHEET_WIDTH = 3072
_GAP = 8


def label_bar(width: int, labels: list[str], cell: float, height: int = 28) -> np.ndarray:
    """A white ``(height, width, 3)`` bar with ``labels[i]`` written from ``i * cell``; a label too
    long for its cell shrinks to fit."""
    bar = np.full((height, width, 3), 255, np.uint8)
    size = 0.55 * height / 28
    for i, text in enumerate(labels):
        text_width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 1)[0][0]
        scale = size * min(1.0, (cell - 12) / max(text_width, 1))
        origin = (int(i * cell) + 6, int(height * 20 / 28))
        cv2.putText(bar, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def labelled_sheet(
    panels: list[np.ndarray], labels: list[str], max_width: int = MAX_SHEET_WIDTH, columns: int = 4
) -> np.ndarray:
    """``panels`` (each ``(H, W, C)`` uint8, one size) with white gaps and each one's label above it,
    at most ``columns`` to a row (rows as even as can be), as an RGB image at most ``max_width`` wide."""
    if len(panels) != len(labels) or not panels:
        raise ValueError(f"expected one label per panel, got {len(panels)} panels and {len(labels)} labels")
    height, width = panels[0].shape[:2]
    rows = -(-len(panels) // columns)
    per_row = -(-len(panels) // rows)
    rgb = [np.repeat(p, 3, axis=2) if p.shape[2] == 1 else p[..., :3] for p in panels]
    rgb += [np.full_like(rgb[0], 255)] * (rows * per_row - len(rgb))
    labels = labels + [""] * (rows * per_row - len(labels))
    full = per_row * width + (per_row - 1) * _GAP
    scale = min(1.0, max_width / full)
    out_width = max(1, round(full * scale))
    bar_height = max(20, min(48, round(height * scale) // 12))
    gap = np.full((height, _GAP, 3), 255, np.uint8)
    blocks = []
    for r in range(rows):
        tiles = rgb[r * per_row : (r + 1) * per_row]
        row = np.concatenate([x for p in tiles for x in (p, gap)][:-1], axis=1)
        if scale < 1:
            row = cv2.resize(row, (out_width, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        cell = (width + _GAP) * scale
        blocks += [label_bar(out_width, labels[r * per_row : (r + 1) * per_row], cell, bar_height), row]
    return np.concatenate(blocks, axis=0)


def example_row(
    image: np.ndarray, known: np.ndarray, results: dict[str, np.ndarray], side: int = 192
) -> list[np.ndarray]:
    """Holes (white) | each method's result | ground truth, each scaled to ``side`` on its long side."""
    holes = image.copy()
    holes[~known] = 255
    tiles = [holes, *results.values(), image]
    scale = side / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return [cv2.resize(np.ascontiguousarray(t), size, interpolation=cv2.INTER_AREA) for t in tiles]


def example_grid(examples: dict[str, list[np.ndarray]], names: list[str]) -> np.ndarray:
    """One :func:`example_row` per example under a label bar: holes | each method | ground truth."""
    header = ["holes", *names, "ground truth"]
    rows = [
        np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], axis=1)
        for tiles in examples.values()
    ]
    grid = np.concatenate(rows, axis=0)
    bar = label_bar(grid.shape[1], header, grid.shape[1] / len(header))
    return np.concatenate([bar, grid], axis=0)
