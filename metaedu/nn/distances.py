"""What the metric-learning methods share: distances between embeddings.

Siamese networks (Koch et al. 2015), Matching Networks (Vinyals et al. 2016) and
Prototypical Networks (Snell et al. 2017) all embed images with a network and
compare embeddings with a fixed function. The comparisons live here, batched
over a leading task dimension:

* ``squared_euclidean(a, b)[t, i, j] = ||a[t, i] - b[t, j]||^2``
* ``cosine_similarity(a, b)[t, i, j] = a[t, i] . b[t, j] / (||a[t, i]|| ||b[t, j]||)``

and :func:`nearest_neighbour`, the one 1-NN rule of the package (on pixels, on features,
over the earlier steps of a MANN sequence).

Embedding a whole image set once is :func:`metaedu.data.embedded.embed_set`;
scoring a metric model over many episodes is
:func:`metaedu.evaluation.evaluate_metric_model`.
"""

from __future__ import annotations

import torch
from torch import nn

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


def nearest_neighbour(z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor,
                      metric: str = "euclidean", allowed: torch.Tensor | None = None) -> torch.Tensor:
    """1-nearest neighbour: each query takes the label of its closest support item.

    Shapes: ``z_support [tasks, S, D]``, ``z_query [tasks, Q, D]``, ``y_support [tasks, S]`` (or
    ``[tasks, S, L]`` for labels of L characters) -> ``[tasks, Q]`` (or ``[tasks, Q, L]``).
    ``metric``: ``"euclidean"`` or ``"cosine"``. ``allowed`` (bool, ``[Q, S]`` or ``[tasks, Q, S]``):
    the support items each query may take (e.g. only earlier steps of a sequence). Ties go to the
    lowest support index.
    """
    if metric == "euclidean":
        dist = torch.cdist(z_query, z_support)  # [tasks, Q, S]
    elif metric == "cosine":
        dist = -nn.functional.normalize(z_query, dim=-1) @ nn.functional.normalize(z_support, dim=-1).transpose(1, 2)
    else:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    if allowed is not None:
        dist = dist.masked_fill(~allowed, float("inf"))
    nearest = dist.argmin(-1)  # [tasks, Q]
    if y_support.dim() == 3:
        nearest = nearest.unsqueeze(-1).expand(-1, -1, y_support.shape[-1])
    return torch.gather(y_support, 1, nearest)
