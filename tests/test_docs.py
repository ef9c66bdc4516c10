"""The examples in the library's docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import pconv

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(pconv.__path__, "pconv.") if m.name not in {"pconv.masks.__main__"}
)
WITH_EXAMPLES = {"pconv.convert", "pconv.fill", "pconv.partialconv", "pconv.unet"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
    assert (result.attempted > 0) == (name in WITH_EXAMPLES), f"{name}: {result.attempted} examples"
