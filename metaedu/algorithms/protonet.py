"""Prototypical Networks (Snell, Swersky & Zemel 2017), few-shot and zero-shot.

The paper, in order:

1. An embedding f_phi maps an image to a point in R^M (here :class:`~metaedu.nn.backbones.Conv4`,
   M = ``hidden`` for 28 x 28 glyphs).
2. Each class k of an episode gets a prototype, the mean of its embedded support examples,
   c_k = 1/|S_k| sum_{(x_i, y_i) in S_k} f_phi(x_i)            (:func:`prototypes`).
   (The slides' algorithm box writes 1/N_C; the mean is over the N_S shots.)
3. A query x gets p_phi(y = k | x) = softmax_k(-d(f_phi(x), c_k)) with d the squared
   Euclidean distance (Snell's choice) or a cosine distance    (:func:`prototype_logits`).
4. The episode loss is the mean over the N_C * N_Q queries of
   d(f_phi(x), c_y) + log sum_k' exp(-d(f_phi(x), c_k')),
   i.e. the cross-entropy of step 3                             (:func:`episode_loss`).

With the squared Euclidean distance the classifier is linear in the embedding:
-||z - c_k||^2 = 2 c_k . z - ||c_k||^2 - ||z||^2, and the last term is the same for
every class, so the softmax equals that of a linear layer with W_k = 2 c_k and
b_k = -||c_k||^2 (:func:`as_linear_layer`).

**Zero-shot** (Snell's section 2.6): a class comes with metadata v_k instead of
images, and its prototype is an embedding of the metadata, c_k = g_theta(v_k).
Images and metadata are mapped to one space; queries are classified exactly as
in step 3 (:class:`ZeroShotProtoNet`). As Snell et al. do with fixed image
features on CUB, our zero-shot model keeps an image encoder fixed (a trained
Prototypical Network's) and learns the two maps into the shared space.

Symbols -> names: f_phi = ``ProtoNet.encoder``, c_k = ``prototypes(...)``, d =
``settings.distance``, N_C = ``train_way``, N_S = ``train_shot``, N_Q = ``train_query``,
g_theta = ``ZeroShotProtoNet.meta_map``, v_k = rows of ``load_glyphs().descriptors(side)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from metaedu.algorithms.metric import MetricModel, evaluate, predict, train_on_episodes  # noqa: F401 (the API)
from metaedu.checkpoints import resolve
from metaedu.data.base import ClassImageSet
from metaedu.data.embedded import EmbeddedSet, embed_set
from metaedu.evaluation import Score, episode_accuracy
from metaedu.nn.backbones import Conv4
from metaedu.nn.distances import cosine_similarity, encode, one_hot_labels, squared_euclidean
from metaedu.runtime import check_settings, evaluation_mode, seeded
from metaedu.tasks.episodes import EpisodeSampler, check_rotations
from metaedu.training import History, train

DISTANCES = ("euclidean", "cosine")


@dataclass
class ProtoNetSettings:
    """Hyper-parameters of a Prototypical Network (few-shot)."""

    distance: str = "euclidean"  # d: "euclidean" (squared, Snell's choice) or "cosine"
    cosine_scale: float = 10.0  # with d = "cosine": logits = cosine_scale * cos (a bounded cosine needs a scale to be sharp)
    hidden: int = 64  # Conv4 filters per block = embedding size M on 28 x 28 images
    train_way: int = 60  # N_C: classes per training episode (Snell train with more ways than they test)
    train_shot: int = 1  # N_S: support examples per class in training episodes
    train_query: int = 5  # N_Q: query examples per class in training episodes
    tasks: int = 1  # training episodes per meta-batch (their losses are averaged)
    steps: int = 20000  # meta-batches of training
    lr: float = 1e-3  # Adam learning rate
    lr_halve_every: int = 2000  # halve the learning rate every this many steps (Snell: 2000 episodes)
    rotations: tuple[int, ...] = (0, 90, 180, 270)  # rotated characters as new training classes (Snell, Vinyals)
    eval_episodes: int = 1000  # test episodes per reported accuracy
    eval_query: int = 5  # query examples per class in test episodes
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "ProtoNetSettings":
        """A laptop CPU: narrow Conv4, short training on wide episodes."""
        return cls(hidden=32, train_way=40, train_query=4, steps=100, lr=3e-3, lr_halve_every=40,
                   rotations=(0,), eval_episodes=300, eval_query=5)

    @classmethod
    def full(cls) -> "ProtoNetSettings":
        """Snell et al.'s Omniglot setting: 60-way training episodes, 5 queries, rotations, a GPU."""
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("cosine_scale", "hidden", "train_way", "train_shot", "train_query", "tasks",
                                       "steps", "lr", "lr_halve_every", "eval_episodes", "eval_query"),
                       choices={"distance": DISTANCES})
        check_rotations(self.rotations)


# ----------------------------------------------------------------------------- the method


def prototypes(z_support: torch.Tensor, y_support: torch.Tensor, n_way: int) -> torch.Tensor:
    """c_k: mean embedding of each class's support examples, ``[tasks, n_way, D]``.

    ``z_support`` is ``[tasks, n_support, D]`` and ``y_support`` ``[tasks, n_support]``; the
    support set may be in any order, and every class needs at least one example.
    """
    onehot = one_hot_labels(y_support, n_way)  # [tasks, n_support, n_way]
    counts = onehot.sum(1)  # [tasks, n_way]
    if bool((counts == 0).any()):
        raise ValueError(f"every one of the {n_way} classes needs a support example to make a prototype")
    sums = onehot.transpose(1, 2) @ z_support  # [tasks, n_way, D]
    return sums / counts[..., None]


def prototype_logits(z_query: torch.Tensor, protos: torch.Tensor, distance: str = "euclidean", cosine_scale: float = 1.0) -> torch.Tensor:
    """-d(f(x), c_k) for every query and class: ``[tasks, n_query, D]``, ``[tasks, n_way, D]`` -> ``[tasks, n_query, n_way]``."""
    if distance == "euclidean":
        return -squared_euclidean(z_query, protos)
    if distance == "cosine":
        # d = cosine_scale * (1 - cos); the constant drops out of the softmax
        return cosine_scale * cosine_similarity(z_query, protos)
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def episode_loss(logits: torch.Tensor, y_query: torch.Tensor) -> torch.Tensor:
    """J: mean over queries of d(f(x), c_y) + log sum_k exp(-d(f(x), c_k)), i.e. cross-entropy of the logits."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_query.reshape(-1))


def as_linear_layer(protos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear layer that a Euclidean prototype classifier is: W = 2 c_k, b = -||c_k||^2.

    ``protos`` ``[tasks, n_way, D]`` -> ``W`` ``[tasks, n_way, D]``, ``b`` ``[tasks, n_way]``; the logits
    ``z @ W^T + b`` differ from ``-||z - c_k||^2`` by ``||z||^2``, the same for every class.
    """
    return 2 * protos, -protos.pow(2).sum(-1)


class ProtoNet(MetricModel):
    """f_phi and the prototype classifier; ``forward(episodes)`` gives the query logits ``[tasks, n_query_total, n_way]``."""

    def __init__(self, settings: ProtoNetSettings, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.settings = settings
        self.encoder = Conv4(in_channels, settings.hidden, image_size=image_size)

    def logits(self, z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor, n_way: int) -> torch.Tensor:
        protos = prototypes(z_support, y_support, n_way)  # [tasks, n_way, D]
        return prototype_logits(z_query, protos, self.settings.distance, self.settings.cosine_scale)


# ----------------------------------------------------------------------------- training and testing


def train_protonet(
    settings: ProtoNetSettings,
    data: ClassImageSet,
    device: str | torch.device = "cpu",
    seed: int = 0,
    checkpoint: str | Path | bool | None = None,
    progress: bool = True,
    model: ProtoNet | None = None,
    max_seconds: float | None = None,
) -> tuple[ProtoNet, History]:
    """Meta-train on episodes of ``data`` (the background split); returns the model and its history.

    ``checkpoint``: see :func:`metaedu.checkpoints.resolve` (``None``: as ``settings.checkpoint`` says).
    """
    checkpoint = resolve(checkpoint, "protonet", settings, data, seed, model)
    if model is None:
        with seeded(seed):  # the initial weights depend on the seed only
            model = ProtoNet(settings, data.image_shape[0], data.image_shape[-1])
    history = train_on_episodes(model, settings, data, episode_loss, device, seed, checkpoint, progress, "ProtoNet",
                                lr_halve_every=settings.lr_halve_every, max_seconds=max_seconds)
    return model, history


# evaluate(model, data, n_way, k_shot, ...) and predict(model, episodes) are the metric-learning trio's
# shared ones (metaedu.algorithms.metric), imported above.


# ----------------------------------------------------------------------------- zero-shot


@dataclass
class ZeroShotSettings:
    """Hyper-parameters of the zero-shot Prototypical Network (metadata prototypes)."""

    embed_dim: int = 64  # size of the shared space of images and metadata
    meta_hidden: int = 128  # hidden units of the metadata MLP g_theta
    train_way: int = 40  # classes per training episode
    train_query: int = 5  # query images per class in training episodes
    tasks: int = 4  # training episodes per meta-batch
    steps: int = 3000  # meta-batches of training
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 1e-4  # Adam weight decay on both maps (the metadata of test classes is new)
    eval_episodes: int = 1000  # test episodes per reported accuracy
    eval_query: int = 5  # query images per class in test episodes
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "ZeroShotSettings":
        return cls(steps=300, eval_episodes=300)

    @classmethod
    def full(cls) -> "ZeroShotSettings":
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("embed_dim", "meta_hidden", "train_way", "train_query", "tasks", "steps", "lr",
                                       "eval_episodes", "eval_query"), non_negative=("weight_decay",))


class ZeroShotProtoNet(nn.Module):
    """Prototypes from class metadata: c_k = g_theta(v_k) (unit length, as in Snell et al.), queries f(x).

    ``image_encoder`` is kept fixed (its parameters are not trained here); ``image_map``
    and ``meta_map`` are learned. ``forward(x_query, v)`` with ``x_query`` ``[tasks, n, C, H, W]``
    and ``v`` ``[tasks, n_way, V]`` gives logits ``[tasks, n, n_way]``.
    """

    def __init__(self, settings: ZeroShotSettings, image_encoder: nn.Module, image_dim: int, meta_dim: int,
                 meta_mean: torch.Tensor | None = None, meta_std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.encoder = image_encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.image_map = nn.Linear(image_dim, settings.embed_dim)
        self.meta_map = nn.Sequential(nn.Linear(meta_dim, settings.meta_hidden), nn.ReLU(),
                                      nn.Linear(settings.meta_hidden, settings.embed_dim))
        # metadata is standardised with the training classes' statistics; an entry that never varies
        # among them (e.g. the one-hot of an alphabet seen only in testing) carries nothing learnt: scale 0
        mean = meta_mean if meta_mean is not None else torch.zeros(meta_dim)
        std = meta_std if meta_std is not None else torch.ones(meta_dim)
        self.register_buffer("meta_mean", mean.clone())
        self.register_buffer("meta_scale", torch.where(std > 1e-6, 1.0 / std.clamp_min(1e-6), torch.zeros_like(std)))

    def class_prototypes(self, v: torch.Tensor) -> torch.Tensor:
        """``[tasks, n_way, V]`` metadata -> ``[tasks, n_way, M]`` unit-length prototypes."""
        c = self.meta_map((v - self.meta_mean) * self.meta_scale)
        return c / c.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def query_embedding(self, features: torch.Tensor) -> torch.Tensor:
        """``[tasks, n, D]`` fixed image features -> ``[tasks, n, M]``."""
        return self.image_map(features)

    def logits_from_features(self, features: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return -squared_euclidean(self.query_embedding(features), self.class_prototypes(v))

    def forward(self, x_query: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), evaluation_mode(self.encoder):  # the fixed encoder, on its running statistics
            features = encode(self.encoder, x_query)  # [tasks, n, D]
        return self.logits_from_features(features, v)


def _class_metadata(metadata: torch.Tensor, classes: torch.Tensor, device) -> torch.Tensor:
    """Rows of ``metadata`` ``[n_classes, V]`` for an episode batch's classes ``[tasks, n_way]`` -> ``[tasks, n_way, V]``."""
    return metadata[classes.cpu()].to(device)


def _check_metadata(metadata: torch.Tensor, data: ClassImageSet) -> None:
    if metadata.dim() != 2 or metadata.shape[0] != data.n_classes:
        raise ValueError(
            f"metadata must be [n_classes, V] with one row per class of {data.name} ({data.n_classes}), "
            f"got shape {tuple(metadata.shape)}"
        )


def train_zero_shot(
    settings: ZeroShotSettings,
    image_encoder: nn.Module,
    data: ClassImageSet,
    metadata: torch.Tensor,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | Path | bool | None = None,
) -> tuple[ZeroShotProtoNet, History]:
    """Learn the metadata and image maps on episodes of ``data`` whose classes come with ``metadata`` rows.

    The fixed image encoder embeds ``data`` once; training episodes are drawn from those embeddings.
    ``checkpoint``: see :func:`metaedu.checkpoints.resolve`.
    """
    device = torch.device(device)
    _check_metadata(metadata, data)
    checkpoint = resolve(checkpoint, "protonet_zero_shot", settings, image_encoder, data, metadata, seed)
    embedded = embed_set(image_encoder, data, device)
    image_dim = embedded.images.shape[1]
    with seeded(seed):  # the initial weights depend on the seed only
        model = ZeroShotProtoNet(settings, image_encoder, image_dim, metadata.shape[1],
                                 metadata.mean(0), metadata.std(0))
    model = model.to(device)
    # zero-shot episodes have no support set; the sampler's one support image per class is not used
    sampler = EpisodeSampler(embedded, settings.train_way, 1, settings.train_query, device=device, seed=seed)
    params = list(model.image_map.parameters()) + list(model.meta_map.parameters())
    opt = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)

    def step(i: int) -> dict:
        eps = sampler.sample(settings.tasks)
        v = _class_metadata(metadata, eps.classes, device)  # [tasks, n_way, V]
        logits = model.logits_from_features(eps.x_query.flatten(2), v)  # [tasks, n_way * n_query, n_way]
        loss = episode_loss(logits, eps.y_query)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "accuracy": (logits.argmax(-1) == eps.y_query).float().mean()}

    history = train(step, settings.steps, state={"maps": model, "opt": opt, "sampler": sampler.generator},
                    checkpoint=checkpoint, progress=progress, desc="zero-shot ProtoNet")
    return model, history


@torch.no_grad()
def evaluate_zero_shot(model: ZeroShotProtoNet, data: ClassImageSet, metadata: torch.Tensor, n_way: int,
                       n_query: int | None = None, n_episodes: int | None = None,
                       device: str | torch.device = "cpu", seed: int = 0) -> Score:
    """Zero-shot accuracy (%) with its 95% interval: prototypes from ``metadata`` only, no support images."""
    _check_metadata(metadata, data)
    s = model.settings
    embedded = data if isinstance(data, EmbeddedSet) else embed_set(model.encoder, data, device)
    if embedded.encoder is not model.encoder:
        raise ValueError(f"{embedded.name} was embedded by a different encoder than this model's")
    sampler = EpisodeSampler(embedded, n_way, 1, n_query or s.eval_query, device=device, seed=seed)
    with evaluation_mode(model):
        return episode_accuracy(
            lambda eps: model.logits_from_features(eps.x_query.flatten(2),
                                                   _class_metadata(metadata, eps.classes, device)),
            sampler, n_episodes=n_episodes or s.eval_episodes,
        )
