"""The reference checkpoints of lecture 09 reload and reproduce their recorded scores."""

from __future__ import annotations

import json

import pytest
import torch

from metaedu.algorithms import memorization_reference as ref

NAMES = sorted(ref.catalogue())


def test_every_model_of_the_catalogue_is_stored_with_current_settings():
    missing = [n for n in NAMES if ref.stored(n) is None]
    assert not missing, f"stale or missing reference models {missing}: run python -m metaedu.algorithms.memorization_reference"
    manifest = json.loads((ref.REFERENCE_DIR / "manifest.json").read_text())
    assert set(NAMES) <= set(manifest)


def test_the_references_stay_small():
    size = sum(p.stat().st_size for p in ref.REFERENCE_DIR.glob("*.pt"))
    assert size < 8 * 2**20, f"the lecture's reference models take {size / 2**20:.1f} MiB"


@pytest.mark.parametrize("name", NAMES)
def test_a_reference_reproduces_its_recorded_score(name, glyphs):
    torch.manual_seed(0)
    model, record = ref.load(name)
    again = ref.score(name, model, glyphs)
    assert abs(again - record["score"]) <= 1e-3 * max(1.0, abs(record["score"])), (name, again, record["score"])


def test_unknown_or_stale_references_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no reference model"):
        ref.settings_of("pose_protonet")
    with pytest.raises(FileNotFoundError, match="memorization_reference"):
        ref.load("pose_maml", ref_dir=tmp_path)
