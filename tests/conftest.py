"""Shared test set-up: a private cache, one thread, strict exercise checks, the gpu marker."""

from __future__ import annotations

import os

import pytest
import torch

# exercise checks raise in tests (a broken reference solution must fail loudly)
os.environ.setdefault("METAEDU_STRICT_CHECKS", "1")
# MAML's plan="auto" takes the fixed rule instead of measuring: float32 results then do not hang on timings
# (tests/test_maml_plan.py measures, with the variable removed)
os.environ.setdefault("METAEDU_MAML_PLAN", "fixed")
torch.set_num_threads(int(os.environ.get("METAEDU_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    # the book is built from the notebooks the notebook tests executed: its tests run last
    items.sort(key=lambda item: "book" in item.keywords)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def glyphs():
    """The default glyph alphabets (built once into the cache, then loaded)."""
    from metaedu.data.glyphs import load_glyphs

    return load_glyphs()
