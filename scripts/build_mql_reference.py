"""Build lecture 10's Meta-Q-Learning model (quick preset, one CPU thread, about a minute of CPU).

    python scripts/build_mql_reference.py

Writes ``metaedu/pretrained/mql_navigation.{pt,json}`` (``metaedu.rl.mql_reference``);
``tests/test_rl_mql_experiment.py`` reloads it and reproduces its recorded score.
"""

from __future__ import annotations

import json

import torch

from metaedu.rl import mql_reference

if __name__ == "__main__":
    torch.set_num_threads(1)
    record = mql_reference.build()
    print(json.dumps({k: v for k, v in record.items() if k != "curve"}, indent=1))
