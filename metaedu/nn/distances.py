"""What the metric-learning methods share: distances between embeddings and embedded image sets.

Siamese networks (Koch et al. 2015), Matching Networks (Vinyals et al. 2016) and
Prototypical Networks (Snell et al. 2017) all embed images with a network and
compare embeddings with a fixed function. The comparisons live here, batched
over a leading task dimension:

* ``squared_euclidean(a, b)[t, i, j] = ||a[t, i] - b[t, j]||^2``
* ``cosine_similarity(a, b)[t, i, j] = a[t, i] . b[t, j] / (||a[t, i]|| ||b[t, j]||)``

Because the embedding of one image does not depend on the episode it appears
in (batch norm in evaluation mode), a whole test split can be embedded once
(:func:`embed_set`) and test episodes drawn from the embeddings with the usual
:class:`~metaedu.tasks.episodes.EpisodeSampler`: hundreds of test episodes
then cost only the cheap comparison, not the CNN.
"""

from __future__ import annotations

import torch
from torch import nn

from metaedu.data.base import ClassImageSet, to_float

#: Added under square roots and divisions so that zero vectors give finite values.
EPS = 1e-8


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 3 or b.dim() != 3:
        raise ValueError(f"expected [tasks, n, dim] tensors, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(
            f"task counts and embedding sizes must agree, got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[tasks, n, D]``, ``[tasks, m, D]`` -> ``[tasks, n, m]`` squared Euclidean distances."""
    _check_pair(a, b)
    diff = a[:, :, None, :] - b[:, None, :, :]  # [tasks, n, m, D]
    return diff.pow(2).sum(-1)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[tasks, n, D]``, ``[tasks, m, D]`` -> ``[tasks, n, m]`` cosines of the angles between rows."""
    _check_pair(a, b)
    a_unit = a / a.norm(dim=-1, keepdim=True).clamp_min(EPS)
    b_unit = b / b.norm(dim=-1, keepdim=True).clamp_min(EPS)
    return a_unit @ b_unit.transpose(1, 2)


def one_hot_labels(y: torch.Tensor, n_way: int) -> torch.Tensor:
    """``[tasks, n]`` integer labels -> ``[tasks, n, n_way]`` float one-hot rows, with a range check."""
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_way):
        raise ValueError(f"labels must lie in 0..{n_way - 1}, got values from {int(y.min())} to {int(y.max())}")
    return nn.functional.one_hot(y, n_way).float()


def encode(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Embed a batch of episodes' images: ``[tasks, n, C, H, W]`` -> ``[tasks, n, D]`` (one CNN call)."""
    if x.dim() != 5:
        raise ValueError(f"expected images of shape [tasks, n, C, H, W], got {tuple(x.shape)}")
    tasks, n = x.shape[:2]
    z = encoder(x.reshape(tasks * n, *x.shape[2:]))  # [tasks * n, D]
    return z.reshape(tasks, n, -1)


class EmbeddedSet(ClassImageSet):
    """A class-indexed set whose "images" are embeddings ``[N, D, 1, 1]`` made by one encoder.

    An :class:`~metaedu.tasks.episodes.EpisodeSampler` draws episodes from it as
    from images; ``encoder`` remembers which network made the embeddings, so
    that a model never scores another model's features by mistake.
    """

    encoder: nn.Module | None = None


@torch.no_grad()
def embed_set(encoder, data: ClassImageSet, device: str | torch.device = "cpu", batch: int = 1000) -> EmbeddedSet:
    """Embed every image of ``data`` once with ``encoder`` (a module, run in evaluation mode, or any
    function ``[n, C, H, W] -> [n, D]``); keep labels and groups."""
    if isinstance(data, EmbeddedSet):
        raise ValueError(f"{data.name} is already embedded; pass the image set")
    module = isinstance(encoder, nn.Module)
    was_training = encoder.training if module else False
    if module:
        encoder.eval()
    chunks = []
    for start in range(0, len(data.targets), batch):
        x = to_float(data.images[start : start + batch]).to(device)
        chunks.append(encoder(x))  # [batch, D]
    if module:
        encoder.train(was_training)
    z = torch.cat(chunks)  # [N, D]
    out = EmbeddedSet(
        images=z[:, :, None, None],
        targets=data.targets,
        class_names=list(data.class_names),
        groups=list(data.groups),
        name=f"{data.name} (embedded)",
    )
    out.encoder = encoder
    return out


def features_of(encoder: nn.Module, x: torch.Tensor, source: ClassImageSet | None = None) -> torch.Tensor:
    """Embeddings ``[tasks, n, D]`` of an episode's images, or of episodes drawn from an :class:`EmbeddedSet`.

    ``source`` is the set the episodes came from; when it is an :class:`EmbeddedSet`
    the "images" ``[tasks, n, D, 1, 1]`` already are the embeddings.
    """
    if isinstance(source, EmbeddedSet):
        if source.encoder is not encoder:
            raise ValueError(f"{source.name} was embedded by a different encoder than this model's")
        return x.flatten(2)
    return encode(encoder, x)


def evaluate_metric_model(
    model: nn.Module,
    data: ClassImageSet,
    n_way: int,
    k_shot: int,
    n_query: int = 5,
    n_episodes: int = 600,
    device: str | torch.device = "cpu",
    seed: int = 0,
    batch: int = 50,
):
    """Accuracy (%) with its 95% interval of a metric model over fresh test episodes of ``data``.

    ``model`` has an ``encoder`` and ``logits(z_support, y_support, z_query, n_way)``
    (every model of the metric-learning lecture does). ``data`` is an image set or,
    much faster for many episodes, the :class:`EmbeddedSet` that :func:`embed_set`
    made from it with ``model.encoder``. The model is scored in evaluation mode.
    """
    from metaedu.evaluation import episode_accuracy
    from metaedu.tasks.episodes import EpisodeSampler

    sampler = EpisodeSampler(data, n_way, k_shot, n_query, device=device, seed=seed)
    was_training = model.training
    model.eval()

    def predict(eps):
        z_support = features_of(model.encoder, eps.x_support, data)  # [tasks, n_way * k_shot, D]
        z_query = features_of(model.encoder, eps.x_query, data)  # [tasks, n_way * n_query, D]
        return model.logits(z_support, eps.y_support, z_query, n_way)  # [tasks, n_way * n_query, n_way]

    try:
        return episode_accuracy(predict, sampler, n_episodes=n_episodes, batch=batch)
    finally:
        model.train(was_training)


@torch.no_grad()
def predict_eval_mode(model: nn.Module, episodes) -> torch.Tensor:
    """``model(episodes)`` in evaluation mode (batch norm on running statistics), the mode restored after."""
    was = model.training
    model.eval()
    out = model(episodes)
    model.train(was)
    return out
