"""Lecture 11's CACTUs reference: trained end to end (at a toy size), written, read back and re-scored."""

from __future__ import annotations

import dataclasses

import pytest

from metaedu import reference
from metaedu.reference import cactus as cactus_reference


@pytest.fixture
def toy_cactus(monkeypatch):
    """The reference's pipeline at a size a CPU test affords (the shipped one is the paper's setting)."""
    spec = reference.SPECS["cactus-5way"]

    def small():
        s = spec.settings()
        return dataclasses.replace(
            s, embed_hidden=8, embed_head=16, embed_steps=2, embed_batch=16, cluster_images=400, partitions=2,
            clusters=20, protonet=dataclasses.replace(s.protonet, hidden=8, train_way=5, train_query=2, steps=2,
                                                      rotations=(0,)),
            maml=dataclasses.replace(s.maml, hidden=8, meta_batch=2, n_query=2, steps=2))

    monkeypatch.setitem(reference.SPECS, "cactus-5way", dataclasses.replace(spec, settings=small, episodes=20))
    monkeypatch.setattr(cactus_reference, "SPEC", reference.SPECS["cactus-5way"])
    return reference.SPECS["cactus-5way"]


def test_the_cactus_reference_trains_every_stage_and_loads_back(tmp_path, glyphs, toy_cactus):
    record = reference.pretrain("cactus-5way", "cpu", folder=tmp_path)
    settings = record["settings"]
    assert record["steps"] == settings["embed_steps"] == 2
    assert settings["protonet"]["steps"] == 2 and settings["maml"]["steps"] == 2 and settings["partitions"] == 2
    extras = record["extras"]
    assert set(extras["stages"]["seconds"]) == {"embedding", "clustering", "protonet", "maml"}
    assert 0 < extras["stages"]["purity"] <= 1 and extras["stages"]["images"] == 400
    names = {"embedding + kNN", "embedding + linear", "CACTUs-ProtoNets", "CACTUs-MAML"}
    assert set(extras["per_episode"]) == {f"{n}, {k}-shot" for n in names for k in (1, 5)}
    assert all(len(v) == 20 for v in extras["per_episode"].values())
    model, loaded_settings, loaded = reference.load("cactus-5way", "cpu", folder=tmp_path)
    assert loaded_settings.protonet.train_way == 5 and loaded_settings.maml.steps == 2  # nested settings restored
    again, per_episode = reference.score("cactus-5way", model, loaded_settings, "cpu")
    assert again.mean == pytest.approx(record["score"]["mean"], abs=1e-9)
    assert record["command"] == "metaedu pretrain cactus-5way --like metaedu/pretrained/cactus-5way.json"
    # the recorded score is the CACTUs-ProtoNets 1-shot column of the extras
    assert per_episode.tolist() == pytest.approx(extras["per_episode"]["CACTUs-ProtoNets, 1-shot"], abs=1e-3)


def test_parallel_partitions_equal_the_sequential_ones():
    import torch

    from metaedu.algorithms import cactus

    z = torch.randn(120, 6, generator=torch.Generator().manual_seed(3))
    one = cactus.cluster_partitions(z, 3, 7, seed=5)
    assert torch.equal(one, cactus.cluster_partitions(z, 3, 7, seed=5, n_jobs=2))


def test_like_retrains_with_a_records_settings(tmp_path, glyphs, toy_cactus):
    record = reference.pretrain("cactus-5way", "cpu", folder=tmp_path)
    changed = {**record, "settings": {**record["settings"], "clusters": 15,
                                      "maml": {**record["settings"]["maml"], "steps": 1}}}
    again = reference.pretrain("cactus-5way", "cpu", folder=tmp_path / "again", like=changed)
    assert again["settings"]["clusters"] == 15 and again["settings"]["maml"]["steps"] == 1
    assert again["settings"]["protonet"] == record["settings"]["protonet"]
