"""Build lecture 10's ten-seed record of the crippled-motor experiment (quick preset, one CPU thread).

    python scripts/build_grbal_seeds.py

Trains MB, GrBAL and ReBAL on each of ``metaedu.rl.grbal_seeds.SEEDS`` (ReBAL also four times longer on seed 0),
runs the crippled-motor test and writes ``metaedu/pretrained/grbal_seeds.json`` (about 3 minutes of CPU);
``tests/test_rl_grbal.py`` re-runs one seed and compares it with the file.
"""

from __future__ import annotations

import torch

from metaedu.rl import grbal_seeds

if __name__ == "__main__":
    torch.set_num_threads(1)
    record = grbal_seeds.build()
    print(f"{len(record['seeds'])} seeds in {record['cpu_seconds']:.0f} s of CPU")
