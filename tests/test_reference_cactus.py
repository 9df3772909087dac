"""Lecture 11's CACTUs reference: trained end to end (at a toy size), written, read back and re-scored."""

from __future__ import annotations

import dataclasses

import pytest

from metaedu import reference
from metaedu.reference import cactus as cactus_reference


def _toy(monkeypatch, name):
    """A reference's pipeline at a size a CPU test affords (the shipped ones are the paper's setting)."""
    spec = reference.SPECS[name]

    def small():
        s = spec.settings()
        return dataclasses.replace(
            s, embed_hidden=8, embed_head=16, embed_steps=2, embed_batch=16, cluster_images=400, partitions=2,
            clusters=20, protonet=dataclasses.replace(s.protonet, hidden=8, train_way=5, train_query=2, steps=2,
                                                      rotations=(0,)),
            maml=dataclasses.replace(s.maml, hidden=8, meta_batch=2, n_query=2, steps=2))

    monkeypatch.setitem(reference.SPECS, name, dataclasses.replace(spec, settings=small, episodes=20))
    monkeypatch.setattr(cactus_reference, "SPEC", reference.SPECS[name])  # the extras' episode count
    return reference.SPECS[name]


@pytest.fixture(params=("cactus-5way", "cactus-5way-ae"))
def toy_cactus(monkeypatch, request):
    return _toy(monkeypatch, request.param)


def test_the_cactus_references_train_every_stage_and_load_back(tmp_path, glyphs, toy_cactus):
    name = toy_cactus.name
    record = reference.pretrain(name, "cpu", folder=tmp_path)
    settings = record["settings"]
    assert settings["embedding"] == {"cactus-5way": "contrastive", "cactus-5way-ae": "autoencoder"}[name]
    assert record["steps"] == settings["embed_steps"] == 2
    assert settings["protonet"]["steps"] == 2 and settings["maml"]["steps"] == 2 and settings["partitions"] == 2
    extras = record["extras"]
    assert set(extras["stages"]["seconds"]) == {"embedding", "clustering", "protonet", "maml"}
    assert 0 < extras["stages"]["purity"] <= 1 and extras["stages"]["images"] == 400
    names = {"embedding + kNN", "embedding + linear", "CACTUs-ProtoNets", "CACTUs-MAML"}
    assert set(extras["per_episode"]) == {f"{n}, {k}-shot" for n in names for k in (1, 5)}
    assert all(len(v) == 20 for v in extras["per_episode"].values())
    model, loaded_settings, loaded = reference.load(name, "cpu", folder=tmp_path)
    assert loaded_settings.protonet.train_way == 5 and loaded_settings.maml.steps == 2  # nested settings restored
    assert loaded_settings.embedding == settings["embedding"]
    again, per_episode = reference.score(name, model, loaded_settings, "cpu")
    assert again.mean == pytest.approx(record["score"]["mean"], abs=1e-9)
    assert record["command"] == f"metaedu pretrain {name} --like metaedu/pretrained/{name}.json"
    # the recorded score is the CACTUs-ProtoNets 1-shot column of the extras
    assert per_episode.tolist() == pytest.approx(extras["per_episode"]["CACTUs-ProtoNets, 1-shot"], abs=1e-3)


def test_parallel_partitions_equal_the_sequential_ones():
    import torch

    from metaedu.algorithms import cactus

    z = torch.randn(120, 6, generator=torch.Generator().manual_seed(3))
    one = cactus.cluster_partitions(z, 3, 7, seed=5)
    assert torch.equal(one, cactus.cluster_partitions(z, 3, 7, seed=5, n_jobs=2))


def test_every_embedding_has_a_budget_split_of_the_whole_budget():
    from metaedu.algorithms.cactus import EMBEDDINGS

    assert set(cactus_reference.SHARES) == set(EMBEDDINGS)
    for shares in cactus_reference.SHARES.values():
        assert set(shares) == {"embedding", "protonet", "maml"} and sum(shares.values()) == pytest.approx(1)


def test_like_retrains_with_a_records_settings(tmp_path, glyphs, monkeypatch):
    _toy(monkeypatch, "cactus-5way")
    record = reference.pretrain("cactus-5way", "cpu", folder=tmp_path)
    changed = {**record, "settings": {**record["settings"], "clusters": 15,
                                      "maml": {**record["settings"]["maml"], "steps": 1}}}
    again = reference.pretrain("cactus-5way", "cpu", folder=tmp_path / "again", like=changed)
    assert again["settings"]["clusters"] == 15 and again["settings"]["maml"]["steps"] == 1
    assert again["settings"]["protonet"] == record["settings"]["protonet"]
