"""What a lecture needs to show its reference models: their records, and one table row per record.

A lecture trains nothing here: it reads the records of the shipped references (:func:`shipped`)
and puts their scores beside the live quick-mode ones and the paper's. A reference that is missing
or stale is named with the command that rebuilds it, never dropped silently.
"""

from __future__ import annotations

from metaedu.reference import StaleReference, read_record, recorded_per_episode, recorded_score


def shipped(*names: str, folder=None) -> dict[str, dict]:
    """The records of the references ``names`` that are shipped; one printed line for each that is not."""
    found = {}
    for name in names:
        try:
            found[name] = read_record(name, folder)
        except (FileNotFoundError, StaleReference) as problem:
            print(f"reference {name}: not shown ({problem})")
    return found


def trained(record: dict) -> str:
    """How a reference was trained, in a few words (for a table's note)."""
    minutes = record["seconds"] / 60
    took = f"{minutes:.0f} min" if minutes >= 1 else f"{record['seconds']:.0f} s"
    return f"reference: {record['steps']} steps, {took} on {record['device']}"


def setting(record: dict) -> str:
    test = record["test"]
    return f"{test['n_way']}-way {test['k_shot']}-shot" if test["n_way"] else test["what"]


def row(record: dict, method: str, paper="—", note: str = "") -> dict:
    """A row for :func:`metaedu.evaluation.show_grid` / ``show_table``: the recorded score on its episodes."""
    return {"method": method, "setting": setting(record), "ours": recorded_score(record), "paper": paper,
            "note": "; ".join(x for x in (note, trained(record)) if x)}


__all__ = ["shipped", "trained", "setting", "row", "recorded_per_episode", "recorded_score"]
