"""Build lecture 08's reference checkpoint: PLATIPUS and MAML on ambiguous lines-or-sines, trained longer.

    python scripts/build_platipus_reference.py

Trains both with ``metaedu.algorithms.platipus.reference.reference_settings()`` (the quick-mode
network and settings, ``REFERENCE_STEPS`` meta-updates, fixed seeds) on one CPU thread, scores them
on fixed test tasks, and writes ``metaedu/pretrained/platipus_lines_or_sines.{pt,json}``. On a 2-core
machine shared with other work it takes tens of minutes; ``tests/test_platipus.py`` reloads the
result and reproduces the recorded scores.
"""

from __future__ import annotations

import json

import torch

from metaedu.algorithms.platipus import reference

if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(reference.build(), indent=1))
