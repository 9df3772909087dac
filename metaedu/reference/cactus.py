"""Lecture 11's references: CACTUs in the paper's Omniglot setting (P = 100 partitions, k = 500 clusters).

Two references differ only in step 1, the embedding learned without labels: ``cactus-5way`` uses the
contrastive Conv4 (two augmented views of a drawing), ``cactus-5way-ae`` the convolutional
autoencoder, the regime of the paper's own embeddings (ACAI, BiGAN). One model holds the three trained
pieces of the pipeline (``nn.ModuleDict``): ``encoder`` (step 1), ``protonet`` and ``maml`` (step 3,
trained on the tasks built from the partitions of step 2). A time budget is split between the three
training stages (:data:`SHARES`); the clustering in between is not budgeted (it runs on all cores, a
few seconds per partition).
The score is CACTUs-ProtoNets' 5-way 1-shot accuracy on the fixed test episodes; the record's
extras hold every method of the lecture's table on the same episodes (1- and 5-shot), so that the
lecture can show paired differences against nearest neighbour on the same embedding.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from metaedu.reference.spec import EVAL_SEED, Spec, glyphs

# of a time budget, per training stage; the autoencoder's reconstruction loss levels off sooner than the
# contrastive loss, and MAML (a second-order step per 32 tasks) is the slowest stage to train
SHARES = {"contrastive": {"embedding": 0.3, "protonet": 0.3, "maml": 0.4},
          "autoencoder": {"embedding": 0.2, "protonet": 0.3, "maml": 0.5}}
SHOTS = (1, 5)


def _settings(embedding: str = "contrastive"):
    from metaedu.algorithms import cactus

    return dataclasses.replace(cactus.CactusSettings.full(), embedding=embedding, checkpoint=False)


def _parts(settings, device) -> nn.ModuleDict:
    """The untrained pieces, built exactly as the cactus module's trainers build them."""
    from metaedu.algorithms import maml, protonet
    from metaedu.algorithms.cactus import EMBEDDING_MODELS
    from metaedu.runtime import seeded

    with seeded(0):
        encoder = EMBEDDING_MODELS[settings.embedding](settings.embed_hidden, settings.embed_head).encoder
    with seeded(0):
        proto = protonet.ProtoNet(settings.protonet, 1, 28)
    with seeded(0):
        learner = maml.glyph_learner(settings.maml, 1, 28)
    return nn.ModuleDict({"encoder": encoder, "protonet": proto, "maml": learner}).to(device)


def images(settings) -> tuple[torch.Tensor, torch.Tensor]:
    """The unlabelled drawings CACTUs embeds and clusters (background alphabets) and their characters,
    which only :func:`~metaedu.algorithms.cactus.cluster_purity` reads."""
    background = glyphs().split("background")
    g = torch.Generator().manual_seed(0)
    keep = torch.randperm(len(background.images), generator=g)[: settings.cluster_images or len(background.images)]
    return background.images[keep], background.targets[keep]


def _train(model: nn.ModuleDict, settings, device, seed, max_seconds=None):
    from metaedu.algorithms import cactus

    budget = {k: (v * max_seconds if max_seconds else None) for k, v in SHARES[settings.embedding].items()}
    drawings, labels = images(settings)
    timing = {}
    start = time.perf_counter()
    encoder, history = cactus.train_embedding(settings, drawings, device, seed=seed, progress=False,
                                              max_seconds=budget["embedding"])
    model["encoder"].load_state_dict(encoder.state_dict())
    settings = dataclasses.replace(settings, embed_steps=history.steps_done)
    timing["embedding"] = time.perf_counter() - start

    start = time.perf_counter()
    z = cactus.embed(model["encoder"], drawings, device)
    assignments = cactus.cluster_partitions(z, settings.partitions, settings.clusters, seed=seed, n_jobs=-1)
    timing["clustering"] = time.perf_counter() - start

    p, m = settings.protonet, settings.maml
    start = time.perf_counter()
    tasks = cactus.tasks_for(drawings, assignments, p.train_way, p.train_shot, p.train_query, device, seed)
    proto, history = cactus.train_protonet(p, tasks, device, seed=seed, progress=False, max_seconds=budget["protonet"])
    model["protonet"].load_state_dict(proto.state_dict())
    p = dataclasses.replace(p, steps=history.steps_done)
    timing["protonet"] = time.perf_counter() - start

    start = time.perf_counter()
    tasks = cactus.tasks_for(drawings, assignments, m.n_way, m.k_shot, m.n_query, device, seed)
    learner, history = cactus.train_maml(m, tasks, device, seed=seed, progress=False, max_seconds=budget["maml"])
    model["maml"].load_state_dict(learner.state_dict())
    m = dataclasses.replace(m, steps=history.steps_done)
    timing["maml"] = time.perf_counter() - start

    purity = cactus.cluster_purity(assignments[0], labels)
    model.stages = {"seconds": {k: round(v, 1) for k, v in timing.items()},  # for the record's extras
                    "purity": round(float(purity.nanmean()), 4), "images": len(drawings)}
    return dataclasses.replace(settings, protonet=p, maml=m)


def sampler(k_shot: int, device):
    """The fixed 5-way ``k_shot`` test episodes of the evaluation alphabets (seed :data:`EVAL_SEED`)."""
    from metaedu.tasks.episodes import EpisodeSampler

    return EpisodeSampler(glyphs().split("evaluation"), 5, k_shot, 5, device=device, seed=EVAL_SEED)


def _methods(model: nn.ModuleDict, settings) -> dict:
    from metaedu.algorithms import cactus
    from metaedu.algorithms.metric import predict

    steps = settings.maml.test_inner_steps
    return {
        "embedding + kNN": lambda e: cactus.knn_predict(model["encoder"], e),
        "embedding + linear": lambda e: cactus.linear_probe_predict(model["encoder"], e, steps=50),
        "CACTUs-ProtoNets": lambda e: predict(model["protonet"], e),
        "CACTUs-MAML": lambda e: model["maml"].predict(e.x_support, e.y_support, e.x_query, steps),
    }


def _per_episode(model, settings, device, episodes) -> torch.Tensor:
    from metaedu.evaluation import episode_accuracies

    model.eval()
    predict = _methods(model, settings)["CACTUs-ProtoNets"]
    return episode_accuracies(predict, sampler(1, device), episodes, batch=50)


def _extras(model, settings, device) -> dict:
    """Every method of the lecture's table on the fixed 5-way episodes: accuracy (%) per episode."""
    from metaedu.evaluation import episode_accuracies

    model.eval()
    out = {"stages": getattr(model, "stages", {}), "per_episode": {}}  # what training measured on the way
    for k_shot in SHOTS:
        for name, predict in _methods(model, settings).items():
            values = episode_accuracies(predict, sampler(k_shot, device), SPEC.episodes, batch=50)
            out["per_episode"][f"{name}, {k_shot}-shot"] = [round(float(v), 3) for v in values]
    return out


SPEC = Spec(
    "cactus-5way", "11", "CACTUs, Hsu et al.'s Omniglot setting (contrastive Conv4 embedding, P = 100 k-means "
    "partitions of k = 500 clusters, ProtoNets and MAML on the built tasks), scored on 5-way 1-shot glyph episodes",
    _settings, _parts, _train, _per_episode, 5, 1, episodes=400, check_episodes=50, steps_field="embed_steps",
    test="CACTUs-ProtoNets 5-way 1-shot accuracy", extras=_extras)
SPEC_AE = dataclasses.replace(
    SPEC, name="cactus-5way-ae", settings=lambda: _settings("autoencoder"),
    what="CACTUs with the paper's kind of embedding (convolutional autoencoder, P = 100 k-means partitions of "
         "k = 500 clusters, ProtoNets and MAML on the built tasks), scored on 5-way 1-shot glyph episodes")
SPECS = (SPEC, SPEC_AE)
