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
    return f"reference: {record['steps']} steps, {_took(record['seconds'])} on {record['device']}"


def _took(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def sessions(record: dict) -> str:
    """The training sessions behind a record, in one sentence: steps, time and machine of each, and the settings
    a session changed (``--set``). A record of one session gives ``trained``'s words."""
    runs = record.get("sessions")
    if not runs:
        return trained(record).removeprefix("reference: ")
    parts = []
    for i, run in enumerate(runs):
        n = run["steps"]
        part = f"{n} {'more ' if i else ''}meta-update{'s' * (n != 1)} in {_took(run['seconds'])} on {run['device']}"
        if run.get("set"):
            part += " with " + ", ".join(f"{key} = {value}" for key, value in run["set"].items())
        parts.append(part)
    return f"{record['steps']} meta-updates in {len(runs)} sessions: " + "; then ".join(parts)


def setting(record: dict) -> str:
    test = record["test"]
    return f"{test['n_way']}-way {test['k_shot']}-shot" if test["n_way"] else test["what"]


def row(record: dict, method: str, paper="—", note: str = "") -> dict:
    """A row for :func:`metaedu.evaluation.show_grid` / ``show_table``: the recorded score on its episodes."""
    return {"method": method, "setting": setting(record), "ours": recorded_score(record), "paper": paper,
            "note": "; ".join(x for x in (note, trained(record)) if x)}


__all__ = ["shipped", "trained", "sessions", "setting", "row", "recorded_per_episode", "recorded_score"]
