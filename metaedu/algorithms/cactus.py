"""CACTUs: Clustering to Automatically Construct Tasks for Unsupervised meta-learning (Hsu, Levine & Finn 2019).

Meta-learning needs many labelled tasks; CACTUs makes them from unlabelled images:

1. **Embed** the images with a model trained without labels (:func:`train_embedding`:
   contrastive or autoencoder, :mod:`metaedu.nn.unsupervised`), z = f(x).
2a. **Cluster** the embeddings P times with k-means into k clusters each (:func:`cluster_partitions`).
   The first partition uses z itself; each further one uses z with every dimension multiplied by a
   weight drawn uniformly from [0, 1], so the partitions differ (the paper's diversity trick).
2b. **Construct tasks**: an N-way K-shot episode takes N clusters of one partition and K + Q images
   of each; clusters smaller than K + Q are dropped (:class:`~metaedu.tasks.partitions.PartitionTasks`).
3. **Meta-learn** on those tasks with an unchanged meta-learner: Prototypical Networks
   (:func:`train_protonet`) or MAML (:func:`train_maml`).

At test time the meta-learner meets real, human-labelled episodes of new characters. Baselines on
the same unsupervised embedding: nearest neighbour and a linear classifier fitted to each episode's
support set (:func:`knn_predict`, :func:`linear_probe_predict`); the *oracle* is the same
meta-learner trained on the real labels. :func:`cluster_purity` (how much of each cluster is one
character) needs labels and is for the lecture's eyes only.

Symbols -> names: f = the embedding encoder, P = ``partitions``, k = ``clusters``, N, K, Q = the
meta-learner settings' ways, shots and queries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from metaedu.algorithms import maml, protonet
from metaedu.algorithms.metric import train_on_episodes
from metaedu.data.base import ClassImageSet, to_float
from metaedu.nn.unsupervised import ContrastiveEncoder, ConvAutoencoder, embed_images
from metaedu.runtime import check_settings, seeded
from metaedu.tasks.episodes import Episodes
from metaedu.tasks.partitions import PartitionTasks
from metaedu.training import History, train

#: Step 1's models by ``CactusSettings.embedding``: each trains on unlabelled images, and its ``encoder`` is f
EMBEDDING_MODELS = {"contrastive": ContrastiveEncoder, "autoencoder": ConvAutoencoder}
EMBEDDINGS = tuple(EMBEDDING_MODELS)


def _protonet_quick() -> protonet.ProtoNetSettings:
    return dataclasses.replace(protonet.ProtoNetSettings.quick(), train_way=20, train_query=4, steps=80)


def _maml_quick() -> maml.GlyphSettings:
    return dataclasses.replace(maml.GlyphSettings.quick(), n_query=4, steps=60, first_order=True)


@dataclass
class CactusSettings:
    """Steps 1 and 2 of CACTUs, and the settings of the two meta-learners of step 3."""

    embedding: str = "contrastive"  # step 1: "contrastive" (two augmented views) or "autoencoder"
    embed_hidden: int = 64  # Conv4 filters of the embedding network (its output is the embedding)
    embed_head: int = 128  # projection head (contrastive) or code size (autoencoder)
    embed_steps: int = 5000  # Adam steps of embedding learning
    embed_batch: int = 256  # images per step
    embed_lr: float = 1e-3  # Adam learning rate
    temperature: float = 0.2  # tau of the contrastive loss
    cluster_images: int = 0  # images embedded and clustered (0: the whole background split)
    partitions: int = 100  # P (the paper's Omniglot setting)
    clusters: int = 500  # k (the paper's Omniglot setting)
    protonet: protonet.ProtoNetSettings = field(default_factory=protonet.ProtoNetSettings.full)  # step 3, ProtoNets
    maml: maml.GlyphSettings = field(default_factory=maml.GlyphSettings.full)  # step 3, MAML
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "CactusSettings":
        """A laptop CPU: a narrow contrastive Conv4 for a few seconds, 8 partitions of 3,000 images, short meta-training."""
        return cls(embed_hidden=32, embed_head=64, embed_steps=50, embed_batch=96, embed_lr=3e-3, cluster_images=3000,
                   partitions=8, clusters=150, protonet=_protonet_quick(), maml=_maml_quick())

    @classmethod
    def full(cls) -> "CactusSettings":
        """P = 100 partitions of k = 500 clusters (the paper's Omniglot setting); the meta-learners' full presets."""
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("embed_hidden", "embed_head", "embed_steps", "embed_batch", "embed_lr",
                                       "temperature", "partitions", "clusters"),
                       non_negative=("cluster_images",), choices={"embedding": EMBEDDINGS})


# ----------------------------------------------------------------------------- step 1: the embedding


def train_embedding(settings: CactusSettings, images: torch.Tensor, device="cpu", seed: int = 0,
                    progress: bool = True, max_seconds: float | None = None) -> tuple[nn.Module, History]:
    """Learn f from unlabelled ``images`` ``[N, 1, 28, 28]``; returns (the embedding network, its history).

    ``max_seconds`` stops early (a time budget); the history says how many steps were done.
    """
    device = torch.device(device)
    with seeded(seed):
        make = EMBEDDING_MODELS[settings.embedding]
        model = make(settings.embed_hidden, settings.embed_head, images.shape[1], images.shape[-1]).to(device)
    images = images.to(device)
    g = torch.Generator().manual_seed(seed)
    adam = torch.optim.Adam(model.parameters(), lr=settings.embed_lr)

    def step(i: int) -> dict:
        batch = to_float(images[torch.randint(len(images), (settings.embed_batch,), generator=g).to(device)])
        loss = model.loss(batch, g, settings.temperature)
        adam.zero_grad()
        loss.backward()
        adam.step()
        return {"loss": loss.detach()}

    history = train(step, settings.embed_steps, state={"model": model, "opt": adam, "generator": g},
                    progress=progress, desc=f"{settings.embedding} embedding", max_seconds=max_seconds)
    return model.encoder, history


def embed(encoder: nn.Module, images: torch.Tensor, device="cpu") -> torch.Tensor:
    """z = f(x) for every image, ``[N, D]`` on the CPU."""
    return embed_images(encoder.to(device), to_float(images.to(device))).cpu()


# ----------------------------------------------------------------------------- step 2a: the partitions


def scalings(partitions: int, dims: int, seed: int = 0) -> torch.Tensor:
    """The weights of each partition's embedding ``[P, D]``: ones for the first, uniform in [0, 1] after."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(partitions, dims, generator=g, dtype=torch.float64)
    weights[0] = 1.0
    return weights


def rescaled(z: torch.Tensor, partitions: int, seed: int = 0) -> torch.Tensor:
    """The embeddings each partition clusters, ``[P, N, D]`` in float64 (z itself first)."""
    return z.detach().double()[None] * scalings(partitions, z.shape[1], seed)[:, None, :]


def _kmeans_labels(data: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    return KMeans(clusters, n_init=1, random_state=seed).fit(data).labels_


def cluster_partitions(z: torch.Tensor, partitions: int, clusters: int, seed: int = 0,
                       rescale: bool = True, n_jobs: int = 1) -> torch.Tensor:
    """P k-means partitions of the embeddings ``z`` ``[N, D]``: cluster ids ``[P, N]``.

    Partition p clusters ``z * scalings(P, D)[p]`` (``rescale=False``: ``z`` every time, differing only
    in the k-means seed) with scikit-learn's k-means (k-means++ initialisation, one start, seed + p).
    The partitions are independent: ``n_jobs`` processes make them side by side (joblib; -1: one per
    core), with the same result as one after the other.
    """
    if clusters > len(z):
        raise ValueError(f"cannot make {clusters} clusters of {len(z)} embeddings; use clusters <= {len(z)}")
    data = z.detach().double().numpy()
    weights = scalings(partitions, z.shape[1], seed).numpy() if rescale else np.ones((partitions, z.shape[1]))
    if n_jobs == 1:
        out = [_kmeans_labels(data * weights[p], clusters, seed + p) for p in range(partitions)]
    else:
        from joblib import Parallel, delayed

        out = Parallel(n_jobs=n_jobs)(delayed(_kmeans_labels)(data * weights[p], clusters, seed + p)
                                      for p in range(partitions))
    return torch.from_numpy(np.stack(out)).long()


def cluster_purity(assignment: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For each cluster id, the fraction of its members that share its commonest true label (NaN if empty)."""
    k, n_labels = int(assignment.max()) + 1, int(labels.max()) + 1
    table = torch.zeros(k, n_labels)
    table.index_put_((assignment.long(), labels.long()), torch.ones(len(labels)), accumulate=True)
    sizes = table.sum(1)
    return torch.where(sizes > 0, table.max(1).values / sizes.clamp(min=1), torch.full_like(sizes, float("nan")))


# ----------------------------------------------------------------------------- step 3: meta-learning


def tasks_for(images: torch.Tensor, assignments: torch.Tensor, n_way: int, k_shot: int, n_query: int,
              device="cpu", seed: int = 0) -> PartitionTasks:
    """Step 2b: the constructed N-way K-shot tasks of the partitions."""
    return PartitionTasks(images, assignments, n_way, k_shot, n_query, device=device, seed=seed)


def episode_indices(assignment: torch.Tensor, n_way: int, k_shot: int, n_query: int,
                    generator: torch.Generator) -> torch.Tensor:
    """One constructed episode of one partition as drawing indices ``[n_way, k_shot + n_query]`` (rows: clusters)."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    placeholder = torch.zeros(len(assignment), 1, 1, 1, dtype=torch.uint8)  # only the indices are wanted
    return PartitionTasks(placeholder, assignment[None], n_way, k_shot, n_query, seed=seed).sample_indices(1)[2][0]


def labelled_subset(images: torch.Tensor, labels: torch.Tensor, min_count: int,
                    name: str = "labelled drawings") -> ClassImageSet:
    """The same drawings with their true labels (the oracle's data): classes with at least ``min_count`` drawings."""
    counts = torch.bincount(labels)
    classes = torch.nonzero(counts >= min_count).flatten()
    if len(classes) == 0:
        raise ValueError(f"no class has {min_count} drawings among the {len(labels)} given")
    remap = torch.full((len(counts),), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    keep = remap[labels] >= 0
    return ClassImageSet(images[keep], remap[labels[keep]], [f"class {int(c)}" for c in classes], name=name)


def train_protonet(settings: protonet.ProtoNetSettings, tasks, device="cpu", seed: int = 0,
                   progress: bool = True, max_seconds: float | None = None) -> tuple[protonet.ProtoNet, History]:
    """A Prototypical Network trained on ``tasks`` (constructed, or a labelled ``EpisodeSampler``)."""
    with seeded(seed):
        model = protonet.ProtoNet(settings, tasks.images.shape[1], tasks.images.shape[-1])
    history = train_on_episodes(model, settings, None, protonet.episode_loss, device, seed, None, progress,
                                "CACTUs-ProtoNets", lr_halve_every=settings.lr_halve_every, sampler=tasks,
                                max_seconds=max_seconds)
    return model, history


def train_maml(settings: maml.GlyphSettings, tasks, device="cpu", seed: int = 0,
               progress: bool = True, max_seconds: float | None = None) -> tuple[maml.MAML, History]:
    """MAML (Conv4, batch statistics) meta-trained on ``tasks``."""
    with seeded(seed):
        learner = maml.glyph_learner(settings, tasks.images.shape[1], tasks.images.shape[-1], device=device)
    history = maml.meta_train(learner, tasks, settings, checkpoint=False, progress=progress, desc="CACTUs-MAML",
                              max_seconds=max_seconds)
    return learner, history


# ----------------------------------------------------------------------------- baselines on the embedding


def _embed_episode(encoder: nn.Module, episodes: Episodes) -> tuple[torch.Tensor, torch.Tensor]:
    t = episodes.tasks
    zs = embed_images(encoder, episodes.x_support.flatten(0, 1)).view(t, episodes.x_support.shape[1], -1)
    zq = embed_images(encoder, episodes.x_query.flatten(0, 1)).view(t, episodes.x_query.shape[1], -1)
    return zs, zq


@torch.no_grad()
def knn_predict(encoder: nn.Module, episodes: Episodes) -> torch.Tensor:
    """Nearest support example by cosine similarity in the embedding: query labels ``[tasks, n_query]``."""
    zs, zq = (nn.functional.normalize(z, dim=-1) for z in _embed_episode(encoder, episodes))
    nearest = (zq @ zs.transpose(1, 2)).argmax(-1)  # [tasks, n_query]
    return torch.gather(episodes.y_support, 1, nearest)


def linear_probe_predict(encoder: nn.Module, episodes: Episodes, steps: int = 100, lr: float = 0.1,
                         weight_decay: float = 1e-3) -> torch.Tensor:
    """Logistic regression fitted to each episode's support set (all episodes at once): query logits."""
    with torch.no_grad():
        zs, zq = (nn.functional.normalize(z, dim=-1) for z in _embed_episode(encoder, episodes))
    t, d, n = zs.shape[0], zs.shape[-1], episodes.n_way
    w = torch.zeros(t, d, n, device=zs.device, requires_grad=True)
    b = torch.zeros(t, 1, n, device=zs.device, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad():  # also inside an evaluation's no_grad block
        for _ in range(steps):
            logits = zs @ w + b
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), episodes.y_support.flatten()) * t
            loss = loss + weight_decay * w.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (zq @ w + b).detach()
