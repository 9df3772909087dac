"""Sub-commands that live in their own modules."""

from __future__ import annotations

import argparse
import importlib

#: Modules with an ``add_commands(subparsers)`` function, in help order.
COMMAND_MODULES = (
    "metaedu.notebooks", "metaedu.book", "metaedu.train_command", "metaedu.reference", "metaedu.grading.cli", "metaedu.lab", "metaedu.bench",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add each module's sub-commands (a module not yet written is left out of the help)."""
    for module in COMMAND_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        mod.add_commands(sub)
