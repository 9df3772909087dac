"""The few-shot GNN's graph pieces: node features, the learned adjacency, the graph convolution, and the
two special cases of the slides (Siamese and Prototypical Networks as GNNs). See :mod:`metaedu.algorithms.gnn`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- the graph


def label_vectors(y: torch.Tensor, n_way: int) -> torch.Tensor:
    """h(l): ``[tasks, n]`` labels (-1: unknown) -> ``[tasks, n, K]`` one-hot rows, uniform 1/K where unknown."""
    if y.numel() and (int(y.min()) < -1 or int(y.max()) >= n_way):
        raise ValueError(f"labels must lie in 0..{n_way - 1}, or be -1 for an unlabelled node; "
                         f"got values from {int(y.min())} to {int(y.max())}")
    onehot = F.one_hot(y.clamp_min(0), n_way).float()
    return torch.where((y >= 0)[..., None], onehot, torch.full_like(onehot, 1.0 / n_way))


def node_features(z: torch.Tensor, y: torch.Tensor, n_way: int) -> torch.Tensor:
    """x^(0) = (phi(x), h(l)): embeddings ``[tasks, n, D]`` and labels ``[tasks, n]`` -> ``[tasks, n, D + K]``."""
    return torch.cat([z, label_vectors(y, n_way).to(z.dtype)], -1)


def masked_softmax(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis among the ``valid`` entries; a row with none gives zeros (not NaN)."""
    return torch.softmax(scores.masked_fill(~valid, -1e9), -1) * valid


def receives_from(n_nodes: int, n_senders: int, device=None) -> torch.Tensor:
    """``[n_nodes, n_senders]``: node i hears sender j when j != i."""
    return ~torch.eye(n_nodes, n_senders, dtype=torch.bool, device=device)


def propagate(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(A x)_i = sum_j A_ij x_j over the senders: ``[tasks, n, S]``, ``[tasks, n, F]`` -> ``[tasks, n, F]``."""
    return adjacency @ x[:, : adjacency.shape[-1]]


class EdgeFunction(nn.Module):
    """A~_ij = softmax_j MLP(|x_i - x_j|): ``x`` ``[tasks, n, F]`` -> ``[tasks, n, S]`` (the first S nodes send)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def scores(self, x: torch.Tensor, n_senders: int) -> torch.Tensor:
        """MLP(|x_i - x_j|) before the softmax, ``[tasks, n, S]``."""
        diff = (x[:, :, None, :] - x[:, None, :n_senders, :]).abs()  # [tasks, n, S, F]
        return self.mlp(diff).squeeze(-1)

    def forward(self, x: torch.Tensor, n_senders: int | None = None) -> torch.Tensor:
        s = x.shape[1] if n_senders is None else n_senders
        return masked_softmax(self.scores(x, s), receives_from(x.shape[1], s, x.device))


class GraphConv(nn.Module):
    """Gc(x) = rho(x theta_I + (A x) theta_A + b): ``[tasks, n, F]`` and ``A`` ``[tasks, n, S]`` -> ``[tasks, n, out]``."""

    def __init__(self, in_dim: int, out_dim: int, activation: bool = True) -> None:
        super().__init__()
        self.theta = nn.Linear(2 * in_dim, out_dim)  # [theta_I; theta_A] stacked, one bias
        self.activation = activation

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        out = self.theta(torch.cat([x, propagate(adjacency, x)], -1))  # the operators I and A~
        return F.leaky_relu(out, 0.2) if self.activation else out


# ----------------------------------------------------------------------------- the special cases


def siamese_adjacency(z_query: torch.Tensor, z_support: torch.Tensor, similarity=None) -> torch.Tensor:
    """A~ = softmax_j(-phi(x_i, x_j)) of each query over the support images, ``[tasks, Q, S]``.

    phi = ||phi(x_i) - phi(x_j)|| by default; ``similarity(z_query, z_support)`` replaces -phi (e.g. a
    Siamese network's learned ``pair_logits``).
    """
    scores = -torch.cdist(z_query, z_support) if similarity is None else similarity(z_query, z_support)
    return torch.softmax(scores, -1)


def siamese_as_gnn(z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor, n_way: int,
                   similarity=None) -> torch.Tensor:
    """One propagation of the label vectors with the Siamese adjacency: Y^_* = sum_j A~_*j h(l_j), ``[tasks, Q, K]``.

    Its arg-max is the label of the most similar support image whenever each class has one shot.
    """
    x0 = node_features(z_support, y_support, n_way)  # [tasks, S, D + K]
    adjacency = siamese_adjacency(z_query, z_support, similarity)  # [tasks, Q, S]
    return propagate(adjacency, x0)[..., z_support.shape[-1]:]  # <x_j, u>: u reads the label slot


def prototype_adjacency(y_support: torch.Tensor, n_way: int) -> torch.Tensor:
    """A~^(0)_ij = 1 / q if l_i = l_j else 0 among the support images, ``[tasks, S, S]`` (q: shots of the class)."""
    same = (y_support[:, :, None] == y_support[:, None, :]).float()  # [tasks, S, S]
    return same / same.sum(-1, keepdim=True)


def prototypical_as_gnn(z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor,
                        n_way: int) -> torch.Tensor:
    """A Prototypical Network written as two graph layers, ``[tasks, Q, K]`` class probabilities.

    Layer 1: x^(1) = A~^(0) x^(0) turns every support node into its class's (prototype, label); the
    query keeps its own features (the identity operator). Layer 2: A~^(1)_*j = softmax_j(-||x_*^(1) -
    x_j^(1)||^2) over the support nodes, and Y^_* = sum_j A~^(1)_*j <x_j^(1), u>.
    """
    d = z_support.shape[-1]
    x1 = propagate(prototype_adjacency(y_support, n_way), node_features(z_support, y_support, n_way))
    adjacency = torch.softmax(-torch.cdist(z_query, x1[..., :d]).pow(2), -1)  # [tasks, Q, S]
    return propagate(adjacency, x1)[..., d:]
