"""Sub-commands that live in their own modules (each registers itself here)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the optional sub-commands whose modules exist."""
    import importlib

    for module in ("metaedu.notebooks", "metaedu.grading.cli", "metaedu.lab"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        mod.add_commands(sub)
