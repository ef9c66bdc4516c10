"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def test_photos() -> list[Path]:
    """The held-out real photos the project ships (never trained on)."""
    return sorted((REPO / "data" / "photos" / "test").glob("*.jpg"))
