"""Grading a large class in shards (issue 27): ``--shard I/N`` picks a share, ``--merge`` joins them.

A shard is an ordinary grading run (:mod:`metaedu.grading.gradebook`) over every ``N``-th
submission of the folder in sorted file-name order, starting with the ``I``-th (``I`` counts from
1, as ``sbatch --array=1-N`` numbers its tasks). The shards of one class must share the hidden
tests' seed, so ``--shard`` needs ``--seed``. Before grading anything, each shard records in its
``run.json`` which share it is and the whole sorted list of submissions it saw, so that a merge
knows every submission that should have a row -- also those of a shard that died or never ran.

:func:`merge` joins shard folders into one output folder of the same layout. It refuses folders
that are not shards of one class (another assignment, tests or seed, another number of shards,
another list of submissions), a shard given twice and a submission graded in two folders. A
submission without a result gets a row with status ``not_graded``, an empty score and a reason
naming its shard, never silently no row; the merge then reports them (exit status 1).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from metaedu.grading.gradebook import Run, key, shown
from metaedu.grading.spec import load


def parse(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``1 <= I <= N``."""
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not found:
        raise ValueError(f"--shard takes I/N (the I-th of N shares, I from 1 to N), got {text!r}")
    index, count = int(found.group(1)), int(found.group(2))
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text}: I must be between 1 and N (shares count from 1), got I={index}, N={count}")
    return index, count


def pick(names: list[str], index: int, count: int) -> list[str]:
    """The share ``index`` of ``count`` of ``names``: every ``count``-th in sorted order, from the ``index``-th."""
    return sorted(names)[index - 1 :: count]


def record(names: list[str], index: int, count: int) -> dict:
    """What a shard writes into its ``run.json``: its share and every submission of the folder."""
    return {"index": index, "count": count, "submissions": [[key(n), shown(n)] for n in sorted(names)]}


def _state(folder: Path) -> dict:
    path = folder / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no grading run (no run.json)")
    state = json.loads(path.read_text())
    if not isinstance(state.get("shard"), dict):
        raise ValueError(f"{folder} was not graded as a shard (metaedu grade ... --shard I/N --seed S)")
    return state


def merge(folders: list[str | Path], out: str | Path) -> dict:
    """Join the shard folders into ``out`` (new or empty); returns a summary with the missing rows.

    The summary: ``{"graded": n, "missing": [(name, shard index), ...], "shards_absent": [...], "count": N}``.
    The result does not depend on the order of ``folders``.
    """
    folders = sorted({Path(f).resolve() for f in folders}, key=str)
    if len(folders) == 0:
        raise ValueError("--merge needs at least one shard folder")
    states = {folder: _state(folder) for folder in folders}
    first_folder, first = folders[0], states[folders[0]]
    fields = ("assignment", "assignment_hash", "seed")
    by_index: dict[int, Path] = {}
    for folder, state in states.items():
        for field in fields:
            if state.get(field) != first.get(field):
                raise ValueError(
                    f"{folder} and {first_folder} are not shards of one class: "
                    f"{field} {state.get(field)!r} != {first.get(field)!r}"
                )
        shard = state["shard"]
        if shard["count"] != first["shard"]["count"]:
            raise ValueError(f"{folder} is a shard of {shard['count']}, {first_folder} of {first['shard']['count']}")
        if shard["submissions"] != first["shard"]["submissions"]:
            raise ValueError(f"{folder} and {first_folder} were graded from different folders of submissions")
        if shard["index"] in by_index:
            raise ValueError(
                f"shard {shard['index']}/{shard['count']} given twice: {by_index[shard['index']]} and {folder}"
            )
        by_index[shard["index"]] = folder
    count, everyone = first["shard"]["count"], first["shard"]["submissions"]
    assignment = load(first["assignment"])
    if assignment.fingerprint() != first["assignment_hash"]:
        raise ValueError(f"the tests of {assignment.name!r} changed since the shards were graded; grade again")

    owner = {k: position % count + 1 for position, (k, _) in enumerate(everyone)}  # key -> its shard
    found: dict[str, dict] = {}  # shares are disjoint, so a result outside its folder's share is a duplicate
    for folder in folders:
        index = states[folder]["shard"]["index"]
        for k, result in Run.load_results(folder, first["seed"], first["assignment_hash"]).items():
            if owner.get(k) != index:
                raise ValueError(
                    f"{folder} (shard {index}/{count}) holds a result for {result['submission']!r}, "
                    f"which is not in its share" + (f" but in shard {owner[k]}/{count}'s" if k in owner else "")
                )
            found[k] = result

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} is not an empty folder; merge into a new one")
    merged = Run(out, assignment, first["seed"], extra={"merged_from": [str(f) for f in folders], "shards": count})
    for k in sorted(found):
        merged.store(k, found[k])
    missing = []
    for position, (k, name) in enumerate(everyone):
        if k not in found:
            index = position % count + 1
            why = "its folder was not given" if index not in by_index else "its run stopped before grading it"
            merged.missing[k] = (name, f"no result: shard {index}/{count} did not grade it ({why})")
            missing.append((name, index))
    merged.write_gradebook()
    absent = [i for i in range(1, count + 1) if i not in by_index]
    return {"graded": len(found), "missing": missing, "shards_absent": absent, "count": count}
